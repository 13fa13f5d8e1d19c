"""Deactivating a user closes their sockets at once, on every server process."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import User


@receiver(post_save, sender=User)
def close_sockets_of_deactivated_user(sender, instance: User, created: bool, **kwargs) -> None:
    if created or instance.is_active:
        return
    from chat.broadcast import user_disconnect_on_commit

    user_disconnect_on_commit(user_id=instance.pk, code=4403)

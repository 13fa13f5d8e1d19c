"""Limits that staff change (the admin's forms, the shell) reach the users' sockets as
`usage:update`: a user's plan saved or removed, a plan's limit or a character override
edited. (usage_plan_grant's bulk write says so itself.)"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from usage.models import CharacterLimit, PlanLimit, UserPlan


@receiver(post_save, sender=UserPlan)
@receiver(post_delete, sender=UserPlan)
def user_plan_changed(sender, instance: UserPlan, **kwargs) -> None:
    from usage.services import usage_changed_on_commit

    usage_changed_on_commit(user_ids=[instance.user_id], now=timezone.now())


@receiver(post_save, sender=PlanLimit)
@receiver(post_delete, sender=PlanLimit)
def plan_limit_changed(sender, instance: PlanLimit, **kwargs) -> None:
    from usage.services import usage_limits_changed_on_commit

    usage_limits_changed_on_commit(plan_id=instance.plan_id)


@receiver(post_save, sender=CharacterLimit)
@receiver(post_delete, sender=CharacterLimit)
def character_limit_changed(sender, instance: CharacterLimit, **kwargs) -> None:
    from usage.services import usage_limits_changed_on_commit

    usage_limits_changed_on_commit(plan_id=instance.plan_id, character_id=instance.character_id)

"""Limits that staff change (the admin's forms, the shell) reach the users' sockets as
`usage:update`: a user's plan saved or removed, a plan's limit or a character override
edited. (usage_plan_grant's bulk write says so itself.) A plan, limit or override
saved or deleted also moves the plan book's version, in the same transaction, so that
every process reads the book again (`usage.selectors.plan_book`). A bulk `update()`
sends no signal: call `plan_book_changed()` after one."""

import secrets

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from usage.models import CharacterLimit, Plan, PlanBookVersion, PlanLimit, UserPlan


def plan_book_changed() -> None:
    # Created when missing (a flushed table): without the row no process keeps a book.
    PlanBookVersion.objects.update_or_create(
        pk=PlanBookVersion.ROW, defaults={"version": secrets.randbits(63)}
    )


# Connected before the receivers below (defined first): their usage:update frames read
# the plan book, which must be the changed one.
@receiver(post_save, sender=Plan)
@receiver(post_delete, sender=Plan)
@receiver(post_save, sender=PlanLimit)
@receiver(post_delete, sender=PlanLimit)
@receiver(post_save, sender=CharacterLimit)
@receiver(post_delete, sender=CharacterLimit)
def plan_book_edited(sender, **kwargs) -> None:
    plan_book_changed()


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

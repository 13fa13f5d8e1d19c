"""Feedback on character replies: one +1 or -1 per user and reply."""

from __future__ import annotations

from chat.models import Feedback, Membership, Message
from config.errors import ApplicationError


def message_feedback_set(*, user, message_id: int, value: int) -> Feedback:
    """Set (or change) the caller's feedback on a character reply. A non-member gets
    `not_found`, as for everything else in a conversation they are not in."""
    if isinstance(value, bool) or value not in (1, -1):
        raise ApplicationError("bad_request", "Feedback must be 1 or -1.")
    message = (
        Message.objects.filter(
            pk=message_id,
            deleted_at__isnull=True,
            conversation_id__in=Membership.objects.filter(user=user).values("conversation_id"),
        )
        .only("id", "role")
        .first()
    )
    if message is None:
        raise ApplicationError("not_found", "No such message.")
    if message.role != Message.Role.ASSISTANT:
        raise ApplicationError("bad_request", "Feedback is only for character replies.")
    # Race-safe: the unique (message, user) constraint turns a concurrent create into
    # an update.
    feedback, _ = Feedback.objects.update_or_create(
        message=message, user=user, defaults={"value": value}
    )
    return feedback

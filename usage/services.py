"""Metering: a user's message takes one unit of their quota with each character it
speaks to, in the transaction that stores it.

- One statement takes a unit only if one is left (`_TAKE_UNIT`, an upsert whose update
  is guarded by `used < limit`), so N concurrent sends against R units accept exactly
  min(N, R): PostgreSQL re-checks the guard on the latest row version after a
  concurrent writer commits. A send it refuses raises `QuotaExceeded`, and the whole
  transaction (message, seq, other charges) rolls back.
- `chat.services.message_post` charges after its INSERT: a retried `client_id` fails
  that INSERT first and is answered with the stored message, so it is never charged
  twice, not even when the quota has run out since.
- Signals: `usage:update` to the user's sockets after each charge (on commit); in a
  character conversation, a system message when a charge reaches 80 % (same
  transaction) and, once per period, one with an upgrade prompt when a send is
  refused (its own transaction, after the refused one rolled back).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from characters.models import Character
from chat import replies
from chat.broadcast import message_created_on_commit, user_frame_on_commit
from chat.events import UsageOut, UsageUpdate
from chat.models import Conversation, Message
from chat.rendering import render_markdown
from config.errors import ApplicationError
from usage import selectors
from usage.models import Kind, Period, Plan, UsageCounter, UserPlan
from usage.selectors import Quota

# What a message of each kind costs; other kinds (system) cost nothing.
KIND_OF_MESSAGE = {
    Message.Kind.TEXT: Kind.TEXT,
    Message.Kind.AUDIO: Kind.AUDIO,
    Message.Kind.IMAGE: Kind.MEDIA,
    Message.Kind.VIDEO: Kind.MEDIA,
    Message.Kind.FILE: Kind.MEDIA,
}

_NOUN = {Kind.TEXT: "text messages", Kind.AUDIO: "audio messages", Kind.MEDIA: "media messages"}
_WHEN = {Period.DAY: "today", Period.MONTH: "this month"}
_NEXT = {Period.DAY: "tomorrow", Period.MONTH: "next month"}

_COUNTER = UsageCounter._meta.db_table
_KEY = "user_id, character_id, kind, period, period_start"
_TAKE_UNIT = f"""
    INSERT INTO {_COUNTER} AS counter ({_KEY}, used, updated_at)
    VALUES (%s, %s, %s, %s, %s, 1, %s)
    ON CONFLICT ({_KEY}) DO UPDATE
    SET used = counter.used + 1, updated_at = excluded.updated_at
    {{guard}}
    RETURNING used
"""
_TAKE_LIMITED = _TAKE_UNIT.format(guard="WHERE counter.used < %s")
_TAKE_UNLIMITED = _TAKE_UNIT.format(guard="")
# Marks the period's counter as told it is exhausted: one row back the first time only.
_MARK_EXHAUSTED = f"""
    INSERT INTO {_COUNTER} AS counter ({_KEY}, used, exhausted_notified_at, updated_at)
    VALUES (%s, %s, %s, %s, %s, 0, %s, %s)
    ON CONFLICT ({_KEY}) DO UPDATE
    SET exhausted_notified_at = excluded.exhausted_notified_at
    WHERE counter.exhausted_notified_at IS NULL
    RETURNING used
"""


class QuotaExceeded(ApplicationError):
    """A send refused for want of quota. `conversation_id` is set when the send came
    from a conversation whose user may be told in it (a character conversation)."""

    def __init__(self, *, quota: Quota, used: int) -> None:
        self.quota = quota
        self.usage = quota.usage(used)
        self.conversation_id: int | None = None
        super().__init__(
            "quota_exceeded",
            _exhausted_text(quota, markdown=False),
            details={"usage": self.usage.model_dump(mode="json")},
        )


def upgrade_url() -> str:
    return reverse("upgrade")


def _exhausted_text(quota: Quota, *, markdown: bool) -> str:
    noun = _NOUN[quota.kind]
    upgrade = (
        f"[upgrade your plan]({upgrade_url()})"
        if markdown
        else f"upgrade your plan ({upgrade_url()})"
    )
    if quota.limit == 0:
        return f"Your plan includes no {noun} with {quota.character_name}: {upgrade} for some."
    when = f"for {_WHEN[quota.period]}" if quota.period == Period.DAY else _WHEN[quota.period]
    return (
        f"You have used all {quota.limit} {noun} with {quota.character_name} {when}: "
        f"more {_NEXT[quota.period]}, or {upgrade} now."
    )


def _warning_text(quota: Quota, used: int) -> str:
    left = max((quota.limit or 0) - used, 0)
    return f"{left} of {quota.limit} {_NOUN[quota.kind]} left {_WHEN[quota.period]}."


# --- Charging


def _take_unit(quota: Quota, *, now: datetime) -> int | None:
    """The counter after taking one unit, or None when none is left."""
    if quota.limit == 0:
        return None
    key = [quota.user_id, quota.character_id, quota.kind, quota.period, quota.period_start]
    with connection.cursor() as cursor:
        if quota.limit is None:
            cursor.execute(_TAKE_UNLIMITED, [*key, now])
        else:
            cursor.execute(_TAKE_LIMITED, [*key, now, quota.limit])
        row = cursor.fetchone()
    return row[0] if row else None


def _used_now(quota: Quota) -> int:
    return (
        UsageCounter.objects.filter(
            user_id=quota.user_id,
            character_id=quota.character_id,
            kind=quota.kind,
            period=quota.period,
            period_start=quota.period_start,
        )
        .values_list("used", flat=True)
        .first()
        or 0
    )


def usage_charge(
    *,
    user: User,
    characters: list[Character],
    kind: str,
    now: datetime | None = None,
    book: selectors.PlanBook | None = None,
) -> list[tuple[Quota, int]]:
    """Take one unit of `kind` with each character, all or none (call it inside the
    caller's transaction; a refusal raises `QuotaExceeded` and must roll it back).
    Returns (quota, used after the charge) per character; `usage:update` follows on
    commit."""
    if kind not in selectors.KINDS:
        raise ApplicationError("bad_request", f"Unknown usage kind {kind!r}.")
    now = now or timezone.now()
    # Fixed order: two sends charging the same characters lock their counters alike.
    characters = sorted(characters, key=lambda c: c.pk)
    charges = []
    quotas = selectors.quotas_of(
        users=[user], characters=characters, kinds=[kind], now=now, book=book
    )
    for quota in quotas:
        used = _take_unit(quota, now=now)
        if used is None:
            raise QuotaExceeded(quota=quota, used=_used_now(quota))
        charges.append((quota, used))
    for quota, used in charges:
        user_frame_on_commit(user_id=user.pk, frame=UsageUpdate(**quota.usage(used).model_dump()))
    return charges


def usage_charge_message(
    *, message: Message, conversation_kind: str, character_id: int | None
) -> list[tuple[Quota, int]]:
    """Charge a user's new message, inside the transaction that stores it: in a
    character conversation to its character, in a group to each character it speaks to
    (@mention or reply). Character replies and system messages cost nothing."""
    kind = KIND_OF_MESSAGE.get(message.kind)
    if not settings.PARLEY_USAGE_METERING or message.role != Message.Role.USER or kind is None:
        return []
    ids = replies.characters_spoken_to(
        conversation_id=message.conversation_id,
        kind=conversation_kind,
        character_id=character_id,
        text=message.text,
        reply_to_id=message.reply_to_id,
    )
    if not ids:
        return []
    # The plan book's version comes with the characters: on the path of every message,
    # the limits then cost no query while staff have not changed them.
    characters = list(
        Character.objects.filter(pk__in=ids)
        .only("slug", "name")
        .annotate(plan_book_version=selectors.plan_book_version_expression())
    )
    book = selectors.plan_book(version=characters[0].plan_book_version) if characters else None
    private = conversation_kind == Conversation.Kind.CHARACTER
    try:
        charges = usage_charge(
            user=message.sender_user, characters=characters, kind=kind, book=book
        )
    except QuotaExceeded as refused:
        if private:
            refused.conversation_id = message.conversation_id
        raise
    if private:
        # Told in the conversation only where nobody else reads it: in a group the
        # user's usage:update frames carry the warning instead.
        for quota, used in charges:
            if selectors.crosses_warning(used=used, limit=quota.limit):
                _notice_create(
                    conversation_id=message.conversation_id,
                    user_id=quota.user_id,
                    text=_warning_text(quota, used),
                    usage=quota.usage(used),
                    level="warning",
                )
    return charges


def usage_refusal_record(*, refused: QuotaExceeded) -> Message | None:
    """After a refused send rolled back: the upgrade prompt, once per period, in its
    own transaction. None when there is nothing to say (told already, or a group)."""
    if refused.conversation_id is None:
        return None
    from chat.services import next_seq  # chat.services imports this module

    quota = refused.quota
    now = timezone.now()
    key = [quota.user_id, quota.character_id, quota.kind, quota.period, quota.period_start]
    with transaction.atomic():
        # The conversation's row lock first, as in message_post, so the two cannot
        # deadlock on the counter; a seq taken in vain rolls back with the rest.
        seq = next_seq(conversation_id=refused.conversation_id, user_id=None, now=now)
        with connection.cursor() as cursor:
            cursor.execute(_MARK_EXHAUSTED, [*key, now, now])
            row = cursor.fetchone()
        if seq is None or row is None:
            transaction.set_rollback(True)
            return None
        usage = quota.usage(row[0])
        message = _notice_create(
            conversation_id=refused.conversation_id,
            user_id=quota.user_id,
            text=_exhausted_text(quota, markdown=True),
            usage=usage,
            level="exhausted",
            seq=seq,
            extra={"upgrade_url": upgrade_url()},
        )
        user_frame_on_commit(user_id=quota.user_id, frame=UsageUpdate(**usage.model_dump()))
    return message


def _notice_create(
    *,
    conversation_id: int,
    user_id: int,
    text: str,
    usage: UsageOut,
    level: str,
    seq: int | None = None,
    extra: dict | None = None,
) -> Message:
    """A system message for one user about their usage (inside a transaction that
    holds the conversation's row lock, so its seq is the next one)."""
    from chat.services import next_seq  # chat.services imports this module

    if seq is None:
        seq = next_seq(conversation_id=conversation_id, user_id=None, now=timezone.now())
    message = Message.objects.create(
        conversation_id=conversation_id,
        seq=seq,
        role=Message.Role.SYSTEM,
        kind=Message.Kind.SYSTEM,
        text=text,
        html=render_markdown(text),
        metadata={
            "usage": usage.model_dump(mode="json"),
            "level": level,
            "for_user": user_id,
            **(extra or {}),
        },
    )
    message_created_on_commit(message)
    return message


# --- Staff actions (the admin)


def _recent_counters(now: datetime):
    # A current period started at most a month ago (a day either way for time zones).
    return UsageCounter.objects.filter(period_start__gte=(now - timedelta(days=32)).date())


def usage_changed_on_commit(
    *, user_ids: list[int], now: datetime, character_id: int | None = None
) -> None:
    """Tell each user's sockets their current usage with the characters they have
    counters with (or with one character): a few queries in all, not per user."""
    counters = _recent_counters(now).filter(user_id__in=user_ids)
    if character_id is not None:
        counters = counters.filter(character_id=character_id)
    pairs = set(counters.values_list("user_id", "character_id"))
    if not pairs:
        return
    users = list(User.objects.filter(pk__in={u for u, _ in pairs}))
    characters = list(Character.objects.filter(pk__in={c for _, c in pairs}))
    quotas = [
        q
        for q in selectors.quotas_of(users=users, characters=characters, now=now)
        if (q.user_id, q.character_id) in pairs
    ]
    for quota, used in selectors.used_of(quotas).items():
        user_frame_on_commit(
            user_id=quota.user_id, frame=UsageUpdate(**quota.usage(used).model_dump())
        )


def usage_limits_changed_on_commit(*, plan_id: int, character_id: int | None = None) -> None:
    """Staff changed a plan's limit (or a character override): `usage:update` to the
    users on that plan who used it lately (with that character)."""
    now = timezone.now()
    counters = _recent_counters(now)
    if character_id is not None:
        counters = counters.filter(character_id=character_id)
    user_ids = set(counters.values_list("user_id", flat=True).distinct())
    plans = selectors.plans_of(user_ids=user_ids, now=now)
    on_plan = [uid for uid, plan in plans.items() if plan is not None and plan.pk == plan_id]
    if on_plan:
        usage_changed_on_commit(user_ids=on_plan, now=now, character_id=character_id)


def usage_plan_grant(*, user_ids: list[int], plan: Plan, expires_at: datetime | None) -> int:
    """Give users a plan until `expires_at` (None: for good); the number of users."""
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise ApplicationError("bad_request", "The plan must run until a time in the future.")
    with transaction.atomic():
        UserPlan.objects.bulk_create(
            [UserPlan(user_id=uid, plan=plan, expires_at=expires_at) for uid in user_ids],
            update_conflicts=True,
            unique_fields=["user"],
            update_fields=["plan", "expires_at", "granted_at"],
        )
        usage_changed_on_commit(user_ids=user_ids, now=now)
    return len(user_ids)


def usage_counters_reset(*, counter_ids: list[int]) -> int:
    """Give back every unit of these counters (and the once-per-period prompt)."""
    now = timezone.now()
    with transaction.atomic():
        # Locked in the order charges lock counters (by character): no deadlock.
        counters = list(
            UsageCounter.objects.select_for_update()
            .filter(pk__in=counter_ids)
            .order_by("user_id", "character_id", "kind", "period", "period_start")
            .values_list("pk", "user_id")
        )
        UsageCounter.objects.filter(pk__in=[pk for pk, _ in counters]).update(
            used=0, exhausted_notified_at=None, updated_at=now
        )
        usage_changed_on_commit(user_ids=sorted({uid for _, uid in counters}), now=now)
    return len(counters)

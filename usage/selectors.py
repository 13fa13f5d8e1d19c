"""Reads of plans, limits and usage, shared by metering, the websocket, REST, the
upgrade page and the admin.

The rule that decides a limit, in one place (`_limit_of`): a character override for
the user's plan, else the plan's limit for the kind, else unlimited. A user's plan is
their own until it expires, else the default plan; with no plan at all (none marked
default), everything is unlimited.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, Subquery
from django.utils import timezone

from accounts.models import User
from accounts.timezones import zone_of
from characters.models import Character
from chat.events import ConversationOut, UsageOut
from config.errors import ApplicationError
from usage.models import (
    CharacterLimit,
    Kind,
    Period,
    Plan,
    PlanBookVersion,
    PlanLimit,
    UsageCounter,
    UserPlan,
)
from usage.periods import Window, window_of

KINDS: tuple[str, ...] = tuple(Kind.values)
WARNING_PERCENT = 80


@dataclass(frozen=True)
class Limit:
    period: str
    limit: int | None  # None: unlimited


UNLIMITED = Limit(period=Period.DAY, limit=None)


@dataclass(frozen=True)
class Quota:
    """One user's quota with one character for one kind, in the current period."""

    user_id: int
    character_id: int
    character_slug: str
    character_name: str
    kind: str
    limit: int | None
    window: Window

    @property
    def period(self) -> str:
        return self.window.period

    @property
    def period_start(self) -> date:
        return self.window.start

    def usage(self, used: int) -> UsageOut:
        remaining = None if self.limit is None else max(self.limit - used, 0)
        return UsageOut(
            character=self.character_slug,
            kind=self.kind,
            used=used,
            limit=self.limit,
            remaining=remaining,
            period=self.period,
            resets_at=self.window.resets_at,
            level=level_of(used=used, limit=self.limit),
        )


def level_of(*, used: int, limit: int | None) -> str:
    if limit is None:
        return "ok"
    if used >= limit:
        return "exhausted"
    if used * 100 >= limit * WARNING_PERCENT:
        return "warning"
    return "ok"


def crosses_warning(*, used: int, limit: int | None) -> bool:
    """True for the one charge (per period) that brings usage to 80 % or more."""
    if limit is None or used < 1:
        return False
    threshold = limit * WARNING_PERCENT
    return used * 100 >= threshold > (used - 1) * 100


# --- Plans


def _active_grants(now: datetime) -> Q:
    return Q(expires_at__isnull=True) | Q(expires_at__gt=now)


def plans_of(
    *, user_ids: Iterable[int], now: datetime, book: PlanBook | None = None
) -> dict[int, Plan | None]:
    """Each user's current plan: one query however many users, and the plan book's
    version when some hold no plan of their own (none with `book`)."""
    user_ids = list(user_ids)
    grants = {
        grant.user_id: grant.plan
        for grant in UserPlan.objects.filter(
            _active_grants(now), user_id__in=user_ids
        ).select_related("plan")
    }
    default = None
    if len(grants) < len(set(user_ids)):
        default = (book or plan_book()).default
    return {user_id: grants.get(user_id, default) for user_id in user_ids}


@dataclass(frozen=True)
class PlanHeld:
    plan: Plan | None
    expires_at: datetime | None  # of the user's own plan; None for the default one


def plan_held(*, user_id: int, now: datetime) -> PlanHeld:
    grant = (
        UserPlan.objects.filter(_active_grants(now), user_id=user_id).select_related("plan").first()
    )
    if grant is not None:
        return PlanHeld(plan=grant.plan, expires_at=grant.expires_at)
    return PlanHeld(plan=Plan.objects.filter(is_default=True).first(), expires_at=None)


@dataclass(frozen=True)
class PlanRow:
    plan: Plan
    limits: list[tuple[str, Limit]]  # (kind, limit) for every kind, in KINDS order


def plan_table() -> list[PlanRow]:
    """Every plan with its limit for each kind, in display order (the upgrade page):
    two queries."""
    rows = []
    for plan in Plan.objects.prefetch_related("limits").order_by("ordering", "name"):
        limits = {row.kind: Limit(period=row.period, limit=row.limit) for row in plan.limits.all()}
        rows.append(PlanRow(plan=plan, limits=[(k, limits.get(k, UNLIMITED)) for k in KINDS]))
    return rows


# --- Limits and quotas


@dataclass(frozen=True)
class PlanBook:
    """What staff set for every plan: the default plan, each plan's limits and the
    character overrides. Read on every metered message and changed rarely, so each
    process keeps the last one it read, with the version it was read at."""

    version: int | None  # PlanBookVersion's; None: no version row, never kept
    default: Plan | None
    base: dict[tuple[int, str], Limit]  # (plan, kind)
    overrides: dict[tuple[int, int, str], Limit]  # (plan, character, kind)


_book: PlanBook | None = None
_UNREAD: Any = object()  # plan_book's `version` not passed: read it


def _version_row():
    return PlanBookVersion.objects.filter(pk=PlanBookVersion.ROW).values_list("version", flat=True)


def plan_book_version_expression() -> Subquery:
    """The plan book's version as an annotation: a caller reading rows anyway gets it
    without a round trip of its own (see `usage.services.usage_charge_message`)."""
    return Subquery(_version_row()[:1])


def plan_book(*, version: int | None = _UNREAD) -> PlanBook:
    """The current plan book: the one this process read last when its version is still
    the database's (one small query for the version, none when the caller passes it;
    None: there is no version row), else read again (three queries). Inside a
    transaction that changed limits the version is that transaction's own, so it reads
    its own changes, and a rollback leaves them behind with the version they were read
    at."""
    global _book
    if version is _UNREAD:
        version = _version_row().first()
    book = _book
    if book is not None and version is not None and book.version == version:
        return book
    book = PlanBook(
        version=version,
        default=Plan.objects.filter(is_default=True).first(),
        base={
            (row.plan_id, row.kind): Limit(period=row.period, limit=row.limit)
            for row in PlanLimit.objects.all()
        },
        overrides={
            (row.plan_id, row.character_id, row.kind): Limit(period=row.period, limit=row.limit)
            for row in CharacterLimit.objects.all()
        },
    )
    if version is not None:
        _book = book
    return book


def _limit_of(
    *,
    plan: Plan | None,
    character_id: int,
    kind: str,
    book: PlanBook,
) -> Limit:
    if plan is None:
        return UNLIMITED
    return (
        book.overrides.get((plan.pk, character_id, kind))
        or book.base.get((plan.pk, kind))
        or UNLIMITED
    )


def quotas_of(
    *,
    users: list[User],
    characters: list[Character],
    kinds: Iterable[str] = KINDS,
    now: datetime,
    book: PlanBook | None = None,
) -> list[Quota]:
    """Every (user, character, kind) quota, in that order: two queries (the users'
    plans, the plan book's version), one with `book`."""
    kinds = list(kinds)
    book = book or plan_book()
    plans = plans_of(user_ids=[u.pk for u in users], now=now, book=book)
    quotas = []
    for user in users:
        zone = zone_of(user.time_zone)
        for character in characters:
            for kind in kinds:
                limit = _limit_of(
                    plan=plans[user.pk],
                    character_id=character.pk,
                    kind=kind,
                    book=book,
                )
                quotas.append(
                    Quota(
                        user_id=user.pk,
                        character_id=character.pk,
                        character_slug=character.slug,
                        character_name=character.name,
                        kind=kind,
                        limit=limit.limit,
                        window=window_of(period=limit.period, zone=zone, now=now),
                    )
                )
    return quotas


def used_of(quotas: list[Quota]) -> dict[Quota, int]:
    """What each quota has used in its current period: one query."""
    if not quotas:
        return {}
    rows = UsageCounter.objects.filter(
        user_id__in={q.user_id for q in quotas},
        character_id__in={q.character_id for q in quotas},
        period_start__in={q.period_start for q in quotas},
    ).values_list("user_id", "character_id", "kind", "period", "period_start", "used")
    used = {tuple(row[:5]): row[5] for row in rows}
    return {
        q: used.get((q.user_id, q.character_id, q.kind, q.period, q.period_start), 0)
        for q in quotas
    }


def usage_list(*, user: User, characters: list[Character], now: datetime) -> list[UsageOut]:
    """The user's usage objects with these characters, every kind."""
    quotas = quotas_of(users=[user], characters=characters, now=now)
    used = used_of(quotas)
    return [q.usage(used[q]) for q in quotas]


def usage_for_slugs(*, user: User, slugs: list[str], now: datetime) -> list[UsageOut]:
    """`usage_list` for characters named by slug (a conversation's), in that order."""
    if not slugs:
        return []
    found = {c.slug: c for c in Character.objects.filter(slug__in=slugs).only("slug", "name")}
    return usage_list(user=user, characters=[found[s] for s in slugs if s in found], now=now)


def usage_of_user(*, user: User, now: datetime) -> list[UsageOut]:
    """The current period's usage of every character the user has a counter with
    (the admin's view of a user)."""
    # A current period started at most a month ago (a day either way for time zones).
    recent = (now - timedelta(days=32)).date()
    ids = (
        UsageCounter.objects.filter(user=user, period_start__gte=recent)
        .values_list("character_id", flat=True)
        .distinct()
    )
    characters = list(Character.objects.filter(pk__in=ids).order_by("name"))
    return usage_list(user=user, characters=characters, now=now)


def usage_for_conversation(*, user: User, conversation: ConversationOut) -> list[UsageOut]:
    """`conversation:joined.usage`: the user's usage with the conversation's character
    (a group: with each of its characters); empty when metering is off."""
    if not settings.PARLEY_USAGE_METERING:
        return []
    slugs = [conversation.character] if conversation.character else conversation.characters
    return usage_for_slugs(user=user, slugs=slugs, now=timezone.now())


def usage_for_character(*, user: User, slug: str) -> list[UsageOut]:
    """`GET /api/usage/`: the user's usage with a public character, every kind (empty
    when metering is off); `not_found` for any other slug."""
    character = Character.objects.filter(slug=slug, is_public=True).only("slug", "name").first()
    if character is None:
        raise ApplicationError("not_found", f"No character {slug!r}.")
    if not settings.PARLEY_USAGE_METERING:
        return []
    return usage_list(user=user, characters=[character], now=timezone.now())

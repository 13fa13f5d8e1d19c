"""Usage quotas (issue 5): plans, limits per kind and period, metering inside the
message transaction, warnings and upgrade prompts, the REST endpoint, the upgrade
page and the admin. Concurrency is in tests/test_usage_concurrency.py."""

from __future__ import annotations

import importlib
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from channels.db import database_sync_to_async
from django.apps import apps as django_apps
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from characters.models import Character
from chat import services
from chat.models import Conversation, Message
from config.errors import ApplicationError
from tests.conftest import WS_TIMEOUT, ws_session
from usage import selectors as usage_selectors
from usage import services as usage_services
from usage.models import (
    CharacterLimit,
    Plan,
    PlanBookVersion,
    PlanLimit,
    UsageCounter,
    UserPlan,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usage]

SEED = importlib.import_module("usage.migrations.0002_free_and_premium_plans")
QUIET_S = 0.5


@pytest.fixture(autouse=True)
def _no_send_rate_limit(settings):
    """The flood guard (chat/ratelimit.py) is not what these tests count."""
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "send": ""}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


@pytest.fixture
def plans(db) -> dict[str, Plan]:
    """The plans the data migration creates (transactional tests empty the tables)."""
    SEED.create_plans(django_apps, None)
    return {plan.slug: plan for plan in Plan.objects.all()}


@pytest.fixture
def alice(make_user):
    return make_user("alice", display_name="Alice")


@pytest.fixture
def other_character(db):
    return Character.objects.create(slug="other", name="Other", persona="Someone else.")


def open_conversation(user: User, slug: str = "tester") -> int:
    conversation, _ = services.conversation_open_with_character(user=user, slug=slug)
    return conversation.pk


def send(user: User, conversation_id: int, client_id: str, text: str = "hello") -> Message:
    return services.message_post(
        user=user, conversation_id=conversation_id, client_id=client_id, text=text
    ).message


def send_many(user: User, conversation_id: int, count: int, prefix: str = "m") -> list:
    """Each send's message, or the ApplicationError that refused it."""
    outcomes = []
    for i in range(count):
        try:
            outcomes.append(send(user, conversation_id, f"{prefix}-{i}"))
        except ApplicationError as error:
            outcomes.append(error)
    return outcomes


def refused(outcomes: list) -> list[ApplicationError]:
    return [o for o in outcomes if isinstance(o, ApplicationError)]


def used(user: User, character: Character, kind: str = "text") -> int:
    return sum(
        UsageCounter.objects.filter(user=user, character=character, kind=kind).values_list(
            "used", flat=True
        )
    )


def system_messages(conversation_id: int) -> list[Message]:
    return list(
        Message.objects.filter(conversation_id=conversation_id, role="system").order_by("seq")
    )


def user_messages(conversation_id: int) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation_id, role="user"))


def assert_gap_free(conversation_id: int) -> None:
    seqs = list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert Conversation.objects.get(pk=conversation_id).last_seq == len(seqs)


def override(character: Character, plan: Plan, limit: int | None, **fields) -> CharacterLimit:
    return CharacterLimit.objects.create(
        character=character, plan=plan, kind=fields.pop("kind", "text"), limit=limit, **fields
    )


def usage_of(user: User, character: Character, kind: str = "text"):
    [usage] = [
        u
        for u in usage_selectors.usage_list(
            user=user, characters=[character], now=datetime.now(UTC)
        )
        if u.kind == kind
    ]
    return usage


# --- The plans the migration creates


@pytest.mark.django_db(transaction=False)
def test_the_migration_creates_free_as_default_and_premium():
    limits = {
        (row.plan.slug, row.kind): (row.period, row.limit)
        for row in PlanLimit.objects.select_related("plan")
    }
    assert limits == {
        ("free", "text"): ("day", 30),
        ("free", "audio"): ("day", 5),
        ("free", "media"): ("day", 5),
        ("premium", "text"): ("day", 1000),
        ("premium", "audio"): ("day", 100),
        ("premium", "media"): ("day", 100),
    }
    assert list(Plan.objects.filter(is_default=True).values_list("slug", flat=True)) == ["free"]


# --- Metering on the free plan


def test_free_plan_accepts_30_text_messages_a_day_then_refuses(plans, alice, character):
    conversation = open_conversation(alice)
    outcomes = send_many(alice, conversation, 33)
    errors = refused(outcomes)
    assert len(outcomes) - len(errors) == 30
    assert [e.code for e in errors] == ["quota_exceeded"] * 3
    assert all(isinstance(o, Message) for o in outcomes[:30]), outcomes[:30]
    assert used(alice, character) == 30
    assert len(user_messages(conversation)) == 30
    # The refused sends stored nothing and took no seq.
    assert not Message.objects.filter(client_id__in=["m-30", "m-31", "m-32"]).exists()
    assert_gap_free(conversation)
    usage = errors[0].details["usage"]
    assert (usage["used"], usage["limit"], usage["remaining"], usage["level"]) == (
        30,
        30,
        0,
        "exhausted",
    )


def test_a_warning_system_message_at_80_percent_once(plans, alice, character):
    conversation = open_conversation(alice)
    send_many(alice, conversation, 23)
    assert system_messages(conversation) == []
    send_many(alice, conversation, 1, prefix="24th")
    [warning] = system_messages(conversation)
    assert warning.text == "6 of 30 text messages left today."
    assert (warning.kind, warning.sender_user_id, warning.sender_character_id) == (
        "system",
        None,
        None,
    )
    assert warning.seq == 26  # greeting 1, messages 2..25, then the warning
    assert warning.metadata["level"] == "warning"
    assert warning.metadata["for_user"] == alice.pk
    assert warning.metadata["usage"]["used"] == 24
    assert warning.metadata["usage"]["level"] == "warning"
    send_many(alice, conversation, 6, prefix="rest")
    assert [m.text for m in system_messages(conversation)] == [warning.text]
    assert_gap_free(conversation)


def test_the_upgrade_prompt_is_stored_once_per_period(plans, alice, character):
    conversation = open_conversation(alice)
    override(character, plans["free"], 2)
    send_many(alice, conversation, 2)
    before = Conversation.objects.get(pk=conversation).last_seq
    outcomes = send_many(alice, conversation, 3, prefix="over")
    assert [e.code for e in refused(outcomes)] == ["quota_exceeded"] * 3
    prompts = [m for m in system_messages(conversation) if m.metadata["level"] == "exhausted"]
    assert len(prompts) == 1, [m.text for m in system_messages(conversation)]
    [prompt] = prompts
    assert prompt.seq == before + 1
    assert prompt.metadata["upgrade_url"] == "/upgrade/"
    assert prompt.metadata["for_user"] == alice.pk
    assert prompt.metadata["usage"]["level"] == "exhausted"
    assert '<a href="/upgrade/"' in prompt.html
    assert "You have used all 2 text messages with Tester for today" in prompt.text
    assert_gap_free(conversation)


def test_system_messages_and_replies_are_not_charged(plans, alice, character):
    conversation = open_conversation(alice)  # the greeting is a character message
    assert used(alice, character) == 0
    send(alice, conversation, "one")
    assert used(alice, character) == 1
    with transaction.atomic():
        for role, kind in (("system", "system"), ("assistant", "text")):
            message = Message(
                conversation_id=conversation,
                seq=999,
                sender_user=alice,
                role=role,
                kind=kind,
                text="x",
            )
            charges = usage_services.usage_charge_message(
                message=message, conversation_kind="character", character_id=character.pk
            )
            assert charges == []
    assert used(alice, character) == 1


# --- Retries


def test_a_retry_is_never_charged_twice(plans, alice, character):
    conversation = open_conversation(alice)
    first = services.message_post(
        user=alice, conversation_id=conversation, client_id="same", text="hi"
    )
    last_seq = Conversation.objects.get(pk=conversation).last_seq
    again = services.message_post(
        user=alice, conversation_id=conversation, client_id="same", text="hi"
    )
    assert (first.created, again.created) == (True, False)
    assert again.message.pk == first.message.pk
    assert used(alice, character) == 1
    # The retry's transaction rolled back whole: no seq taken either.
    assert Conversation.objects.get(pk=conversation).last_seq == last_seq
    assert_gap_free(conversation)


def test_a_retry_after_the_quota_ran_out_gets_its_message_not_an_error(plans, alice, character):
    conversation = open_conversation(alice)
    override(character, plans["free"], 2)
    first = send(alice, conversation, "a")
    send(alice, conversation, "b")
    with pytest.raises(ApplicationError) as exc:
        send(alice, conversation, "c")
    assert exc.value.code == "quota_exceeded"
    retry = services.message_post(
        user=alice, conversation_id=conversation, client_id="a", text="hello"
    )
    assert (retry.created, retry.message.pk) == (False, first.pk)
    assert used(alice, character) == 2


# --- Kinds, overrides, plans


def test_kinds_are_counted_apart(plans, alice, character):
    def charge(kind: str) -> str:
        try:
            with transaction.atomic():
                usage_services.usage_charge(user=alice, characters=[character], kind=kind)
        except usage_services.QuotaExceeded:
            return "refused"
        return "ok"

    assert [charge("audio") for _ in range(6)] == ["ok"] * 5 + ["refused"]
    assert [charge("media") for _ in range(6)] == ["ok"] * 5 + ["refused"]
    assert charge("text") == "ok"
    assert (used(alice, character, "audio"), used(alice, character, "media")) == (5, 5)
    assert used(alice, character, "text") == 1


@pytest.mark.parametrize(
    ("message_kind", "usage_kind"),
    [
        ("text", "text"),
        ("audio", "audio"),
        ("image", "media"),
        ("video", "media"),
        ("file", "media"),
    ],
)
def test_each_message_kind_is_charged_to_its_usage_kind(
    plans, alice, character, message_kind, usage_kind
):
    conversation = open_conversation(alice)
    message = Message(
        conversation_id=conversation, sender_user=alice, role="user", kind=message_kind, text=""
    )
    with transaction.atomic():
        [(quota, after)] = usage_services.usage_charge_message(
            message=message, conversation_kind="character", character_id=character.pk
        )
    assert (quota.kind, after) == (usage_kind, 1)
    assert used(alice, character, usage_kind) == 1


def test_a_character_override_replaces_the_plan_limit(plans, alice, character, other_character):
    override(character, plans["free"], 3)
    mine = open_conversation(alice)
    theirs = open_conversation(alice, "other")
    assert len(refused(send_many(alice, mine, 5))) == 2
    assert refused(send_many(alice, theirs, 5)) == []
    assert (used(alice, character), used(alice, other_character)) == (3, 5)
    assert usage_of(alice, character).limit == 3
    assert usage_of(alice, other_character).limit == 30


def test_an_override_of_another_plan_does_not_apply(plans, alice, character):
    override(character, plans["premium"], 1)
    conversation = open_conversation(alice)
    assert refused(send_many(alice, conversation, 3)) == []
    assert usage_of(alice, character).limit == 30


def test_premium_allows_more(plans, alice, character):
    UserPlan.objects.create(user=alice, plan=plans["premium"])
    conversation = open_conversation(alice)
    assert refused(send_many(alice, conversation, 35)) == []
    usage = usage_of(alice, character)
    assert (usage.used, usage.limit, usage.remaining, usage.level) == (35, 1000, 965, "ok")
    assert system_messages(conversation) == []


def test_a_null_limit_is_unlimited_and_still_counted(plans, alice, character):
    unlimited = Plan.objects.create(slug="unlimited", name="Unlimited")
    PlanLimit.objects.create(plan=unlimited, kind="text", limit=None)
    UserPlan.objects.create(user=alice, plan=unlimited)
    conversation = open_conversation(alice)
    assert refused(send_many(alice, conversation, 40)) == []
    usage = usage_of(alice, character)
    assert (usage.used, usage.limit, usage.remaining, usage.level) == (40, None, None, "ok")
    assert system_messages(conversation) == []


def test_an_unlimited_override_lifts_the_plan_limit(plans, alice, character):
    override(character, plans["free"], None)
    conversation = open_conversation(alice)
    assert refused(send_many(alice, conversation, 31)) == []
    assert usage_of(alice, character).limit is None


def test_a_zero_limit_refuses_every_message_with_one_prompt(plans, alice, character):
    override(character, plans["free"], 0)
    conversation = open_conversation(alice)
    outcomes = send_many(alice, conversation, 3)
    assert [e.code for e in refused(outcomes)] == ["quota_exceeded"] * 3
    [prompt] = system_messages(conversation)
    assert prompt.text.startswith("Your plan includes no text messages with Tester: ")
    assert user_messages(conversation) == []


def test_without_any_plan_nothing_is_limited(alice, character):
    conversation = open_conversation(alice)
    assert refused(send_many(alice, conversation, 35)) == []
    assert usage_of(alice, character).limit is None
    assert used(alice, character) == 35


def test_an_expired_plan_falls_back_to_the_default(plans, alice, character):
    now = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
    with time_machine.travel(now, tick=False):
        UserPlan.objects.create(
            user=alice, plan=plans["premium"], expires_at=now + timedelta(hours=1)
        )
        conversation = open_conversation(alice)
        assert refused(send_many(alice, conversation, 31)) == []
        assert usage_of(alice, character).limit == 1000
    with time_machine.travel(now + timedelta(hours=2), tick=False):
        usage = usage_of(alice, character)
        # Units used today still count on the default plan.
        assert (usage.used, usage.limit, usage.level) == (31, 30, "exhausted")
        assert refused(send_many(alice, conversation, 1, prefix="later"))[0].code == (
            "quota_exceeded"
        )


# --- Periods


def test_a_day_resets_at_midnight_utc(plans, alice, character):
    override(character, plans["free"], 2)
    with time_machine.travel(datetime(2031, 3, 10, 23, 59, 30, tzinfo=UTC), tick=False):
        conversation = open_conversation(alice)
        assert len(refused(send_many(alice, conversation, 3))) == 1
        usage = usage_of(alice, character)
        assert usage.resets_at == datetime(2031, 3, 11, tzinfo=UTC)
    with time_machine.travel(datetime(2031, 3, 11, 0, 0, 1, tzinfo=UTC), tick=False):
        assert usage_of(alice, character).used == 0
        outcomes = send_many(alice, conversation, 3, prefix="next-day")
        assert len(refused(outcomes)) == 1
    # A new period, a new prompt: one per day.
    prompts = [m for m in system_messages(conversation) if m.metadata["level"] == "exhausted"]
    assert len(prompts) == 2
    assert_gap_free(conversation)


def test_a_day_resets_at_midnight_in_the_users_time_zone(plans, make_user, character):
    override(character, plans["free"], 2)
    zone = ZoneInfo("America/New_York")  # UTC-5 in March before the DST change
    eve = make_user("eve", time_zone="America/New_York")
    bob = make_user("bob")  # UTC
    late = datetime(2031, 3, 5, 23, 59, tzinfo=zone)  # 04:59 UTC on the 6th
    with time_machine.travel(late, tick=False):
        eves = open_conversation(eve)
        bobs = open_conversation(bob)
        assert len(refused(send_many(eve, eves, 3))) == 1
        assert len(refused(send_many(bob, bobs, 3))) == 1
        resets_at = usage_of(eve, character).resets_at
        assert resets_at == datetime(2031, 3, 6, tzinfo=zone)
        assert resets_at.isoformat() == "2031-03-06T00:00:00-05:00"
    with time_machine.travel(late + timedelta(minutes=2), tick=False):
        # Past midnight in New York (05:01 UTC): Eve starts afresh, Bob does not.
        assert refused(send_many(eve, eves, 1, prefix="new-day")) == []
        assert len(refused(send_many(bob, bobs, 1, prefix="same-day"))) == 1
    counters = UsageCounter.objects.filter(user=eve).order_by("period_start")
    assert [(c.period_start.isoformat(), c.used) for c in counters] == [
        ("2031-03-05", 2),
        ("2031-03-06", 1),
    ]


def test_a_monthly_limit_resets_on_the_first_of_the_month(plans, make_user, character):
    override(character, plans["free"], 2, period="month")
    zone = ZoneInfo("Asia/Tokyo")
    kenji = make_user("kenji", time_zone="Asia/Tokyo")
    with time_machine.travel(datetime(2031, 1, 31, 23, 0, tzinfo=zone), tick=False):
        conversation = open_conversation(kenji)
        send_many(kenji, conversation, 1)
    with time_machine.travel(datetime(2031, 1, 31, 23, 59, tzinfo=zone), tick=False):
        assert len(refused(send_many(kenji, conversation, 2, prefix="b"))) == 1
        usage = usage_of(kenji, character)
        assert (usage.period, usage.resets_at) == ("month", datetime(2031, 2, 1, tzinfo=zone))
        assert system_messages(conversation)[0].text == "0 of 2 text messages left this month."
    with time_machine.travel(datetime(2031, 2, 1, 0, 1, tzinfo=zone), tick=False):
        assert refused(send_many(kenji, conversation, 2, prefix="c")) == []


# --- Groups


def make_group_with(creator: User, *characters: Character) -> int:
    return services.conversation_create_group(
        creator=creator,
        title="Team",
        member_usernames=[],
        character_slugs=[c.slug for c in characters],
    ).pk


def test_in_a_group_each_character_spoken_to_is_charged(plans, alice, character, other_character):
    group = make_group_with(alice, character, other_character)
    send(alice, group, "plain", "nobody in particular")
    assert (used(alice, character), used(alice, other_character)) == (0, 0)
    send(alice, group, "one", "@tester what do you think?")
    send(alice, group, "both", "@tester and @other: hello")
    assert (used(alice, character), used(alice, other_character)) == (2, 1)


def test_in_a_group_a_refusal_refuses_the_whole_message(plans, alice, character, other_character):
    override(character, plans["free"], 1)
    group = make_group_with(alice, character, other_character)
    send(alice, group, "one", "@tester hi")
    with pytest.raises(ApplicationError) as exc:
        send(alice, group, "two", "@other and @tester, hi")
    assert exc.value.code == "quota_exceeded"
    assert exc.value.details["usage"]["character"] == "tester"
    # All or nothing: the other character's unit was given back with the rest.
    assert (used(alice, character), used(alice, other_character)) == (1, 0)
    assert send(alice, group, "three", "@other hi").seq > 0
    # No usage notices in a group: the other members would read them.
    assert system_messages(group) == []
    assert_gap_free(group)


# --- Cost


def test_metering_costs_a_fixed_number_of_queries(plans, alice, character, settings):
    conversation = open_conversation(alice)
    send(alice, conversation, "warm-up")

    def queries(client_id: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            send(alice, conversation, client_id)
        return len(ctx.captured_queries)

    metered = queries("a")
    settings.PARLEY_USAGE_METERING = False
    plain = queries("b")
    # The characters (with the plan book's version), the user's plan, the upsert: the
    # default plan, the limits and the overrides come from the plan book it read once.
    assert metered - plain == 3
    settings.PARLEY_USAGE_METERING = True
    UserPlan.objects.create(user=alice, plan=plans["premium"])
    assert queries("c") - plain == 3


def _plan_book_reads(queries: CaptureQueriesContext) -> int:
    return sum(
        1
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and 'FROM "usage_planlimit"' in q["sql"]
    )


def test_the_plan_book_is_read_again_only_after_staff_change_it(plans, alice, character):
    conversation = open_conversation(alice)
    send(alice, conversation, "warm-up")
    with CaptureQueriesContext(connection) as unchanged:
        send(alice, conversation, "a")
    assert _plan_book_reads(unchanged) == 0
    free_text = PlanLimit.objects.get(plan=plans["free"], kind="text")
    with CaptureQueriesContext(connection) as changed:
        free_text.limit = 3
        free_text.save()
        send(alice, conversation, "b")  # the third: the last one the new limit allows
        with pytest.raises(ApplicationError) as exc:
            send(alice, conversation, "c")
    assert exc.value.details["usage"]["limit"] == 3
    assert _plan_book_reads(changed) == 1  # once for the change, not once per charge
    override(character, plans["free"], 5)  # an override counts as a change too
    assert send(alice, conversation, "d").seq > 0


def test_a_rolled_back_change_is_not_kept_in_the_plan_book(plans, alice, character):
    conversation = open_conversation(alice)
    send(alice, conversation, "warm-up")
    with pytest.raises(RuntimeError), transaction.atomic():
        free_text = PlanLimit.objects.get(plan=plans["free"], kind="text")
        free_text.limit = 1
        free_text.save()
        with pytest.raises(ApplicationError):
            send(alice, conversation, "inside")  # the transaction sees its own limit
        raise RuntimeError("rolled back")
    # Another change, committed: its version must not be mistaken for the rolled-back
    # one's (a counter would give both the same number, and this process would keep
    # the limit of 1 it read inside the rolled-back transaction).
    free_audio = PlanLimit.objects.get(plan=plans["free"], kind="audio")
    free_audio.limit = 6
    free_audio.save()
    assert send(alice, conversation, "after").seq > 0
    assert usage_of(alice, character).limit == 30


def test_a_change_committed_by_another_connection_applies_to_the_next_charge(
    plans, alice, character
):
    conversation = open_conversation(alice)
    send(alice, conversation, "warm-up")  # this process keeps the book: limit 30

    def staff_elsewhere() -> None:  # a thread has its own connection: another process
        try:
            free_text = PlanLimit.objects.get(plan=plans["free"], kind="text")
            free_text.limit = 1
            free_text.save()
        finally:
            connection.close()

    worker = threading.Thread(target=staff_elsewhere)
    worker.start()
    worker.join()
    with pytest.raises(ApplicationError) as exc:
        send(alice, conversation, "after")
    assert exc.value.code == "quota_exceeded"
    assert exc.value.details["usage"]["limit"] == 1


def test_without_the_version_row_the_plan_book_is_never_kept(plans, alice, character):
    conversation = open_conversation(alice)
    PlanBookVersion.objects.all().delete()
    send(alice, conversation, "a")
    with CaptureQueriesContext(connection) as queries:
        send(alice, conversation, "b")
    assert _plan_book_reads(queries) == 1


# --- Websocket signals


async def join(ws, **fields) -> dict:
    await ws.send_json_to({"type": "conversation:join", **fields})
    frame = await ws.receive_json_from(WS_TIMEOUT)
    assert frame["type"] == "conversation:joined", frame
    return frame


async def send_frame(ws, conversation_id: int, client_id: str, text: str = "hi") -> None:
    await ws.send_json_to(
        {
            "type": "message:send",
            "conversation": conversation_id,
            "client_id": client_id,
            "text": text,
        }
    )


async def frames(ws, count: int) -> dict[str, list[dict]]:
    """The next `count` frames, by type (their order across types is not specified)."""
    by_type: dict[str, list[dict]] = {}
    for _ in range(count):
        frame = await ws.receive_json_from(WS_TIMEOUT)
        by_type.setdefault(frame["type"], []).append(frame)
    return by_type


async def test_joined_carries_the_usage_of_the_conversations_character(plans, alice, character):
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, character="tester")
    by_kind = {u["kind"]: u for u in joined["usage"]}
    assert set(by_kind) == {"text", "audio", "media"}
    text = by_kind["text"]
    assert {k: text[k] for k in ("character", "used", "limit", "remaining", "period", "level")} == {
        "character": "tester",
        "used": 0,
        "limit": 30,
        "remaining": 30,
        "period": "day",
        "level": "ok",
    }
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    assert text["resets_at"] == f"{tomorrow.isoformat()}T00:00:00Z"
    assert by_kind["audio"]["limit"] == by_kind["media"]["limit"] == 5


async def test_joined_carries_no_usage_when_metering_is_off(plans, alice, character, settings):
    settings.PARLEY_USAGE_METERING = False
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, character="tester")
    assert joined["usage"] == []


async def test_every_send_is_followed_by_usage_update_on_every_socket_of_the_user(
    plans, alice, character
):
    async with ws_session(alice) as (ws, _), ws_session(alice) as (other_device, _):
        conversation = (await join(ws, character="tester"))["conversation"]["id"]
        await send_frame(ws, conversation, "c1")
        got = await frames(ws, 3)
        assert set(got) == {"message:status", "message:receive", "usage:update"}, got
        [update] = got["usage:update"]
        assert (update["character"], update["kind"], update["used"], update["level"]) == (
            "tester",
            "text",
            1,
            "ok",
        )
        assert update["remaining"] == 29
        # The user's other device has not joined the conversation, but hears its usage.
        assert await other_device.receive_json_from(WS_TIMEOUT) == update


async def test_warning_then_exhausted_then_refused_over_the_websocket(plans, alice, character):
    await database_sync_to_async(override)(character, plans["free"], 5)
    async with ws_session(alice) as (ws, _):
        conversation = (await join(ws, character="tester"))["conversation"]["id"]
        for i in range(3):
            await send_frame(ws, conversation, f"ok-{i}")
            got = await frames(ws, 3)
            assert got["usage:update"][0]["level"] == "ok"

        await send_frame(ws, conversation, "fourth")  # 4 of 5: 80 %
        got = await frames(ws, 4)
        assert got["usage:update"][0]["level"] == "warning"
        received = [f["message"] for f in got["message:receive"]]
        assert [m["role"] for m in received] == ["user", "system"]
        notice = received[1]
        assert notice["text"] == "1 of 5 text messages left today."
        assert notice["sender"]["type"] == "system"
        assert notice["kind"] == "system"
        assert notice["metadata"]["level"] == "warning"
        assert notice["metadata"]["for_user"] == alice.pk
        assert notice["seq"] == received[0]["seq"] + 1

        await send_frame(ws, conversation, "fifth")
        got = await frames(ws, 3)
        assert got["usage:update"][0]["level"] == "exhausted"
        assert got["usage:update"][0]["remaining"] == 0

        await send_frame(ws, conversation, "sixth")
        got = await frames(ws, 4)
        [status] = got["message:status"]
        assert status["status"] == "failed"
        assert status["error"]["code"] == "quota_exceeded"
        assert (status["message_id"], status["seq"], status["client_id"]) == (None, None, "sixth")
        [error] = got["error"]
        assert (error["code"], error["ref"], error["client_id"]) == (
            "quota_exceeded",
            "message:send",
            "sixth",
        )
        [prompt] = [f["message"] for f in got["message:receive"]]
        assert prompt["role"] == "system"
        assert prompt["metadata"]["level"] == "exhausted"
        assert prompt["metadata"]["upgrade_url"] == "/upgrade/"
        assert got["usage:update"][0]["level"] == "exhausted"

        # Refused again: the failure, but no second prompt and no usage:update.
        await send_frame(ws, conversation, "seventh")
        got = await frames(ws, 2)
        assert set(got) == {"message:status", "error"}, got
        assert got["message:status"][0]["error"]["code"] == "quota_exceeded"
        assert await ws.receive_nothing(timeout=QUIET_S)


async def test_a_staff_reset_sends_usage_update(plans, alice, character):
    conversation = await database_sync_to_async(open_conversation)(alice)
    await database_sync_to_async(send_many)(alice, conversation, 3)
    async with ws_session(alice) as (ws, _):
        ids = await database_sync_to_async(
            lambda: list(UsageCounter.objects.filter(user=alice).values_list("pk", flat=True))
        )()
        await database_sync_to_async(usage_services.usage_counters_reset)(counter_ids=ids)
        update = await ws.receive_json_from(WS_TIMEOUT)
    assert (update["type"], update["used"], update["limit"]) == ("usage:update", 0, 30)


async def test_a_new_plan_sends_usage_update(plans, alice, character):
    conversation = await database_sync_to_async(open_conversation)(alice)
    await database_sync_to_async(send_many)(alice, conversation, 3)
    async with ws_session(alice) as (ws, _):
        await database_sync_to_async(usage_services.usage_plan_grant)(
            user_ids=[alice.pk], plan=plans["premium"], expires_at=None
        )
        update = await ws.receive_json_from(WS_TIMEOUT)
    assert (update["type"], update["used"], update["limit"]) == ("usage:update", 3, 1000)


async def test_a_changed_limit_sends_usage_update(plans, alice, character):
    conversation = await database_sync_to_async(open_conversation)(alice)
    await database_sync_to_async(send_many)(alice, conversation, 3)
    async with ws_session(alice) as (ws, _):
        await database_sync_to_async(override)(character, plans["free"], 10)
        got = await frames(ws, 3)  # the character's three kinds
        assert [(u["kind"], u["used"], u["limit"]) for u in got["usage:update"]] == [
            ("text", 3, 10),
            ("audio", 0, 5),
            ("media", 0, 5),
        ]

        def raise_audio() -> None:
            limit = PlanLimit.objects.get(plan=plans["free"], kind="audio")
            limit.limit = 7
            limit.save()  # as the admin's inline does

        await database_sync_to_async(raise_audio)()
        got = await frames(ws, 3)
        assert [u["limit"] for u in got["usage:update"]] == [10, 7, 5]
        # A plan nobody here is on: nothing to tell.
        await database_sync_to_async(override)(character, plans["premium"], 2)
        assert await ws.receive_nothing(timeout=QUIET_S)


async def test_joined_a_group_carries_the_usage_of_each_of_its_characters(
    plans, alice, character, other_character
):
    group = await database_sync_to_async(make_group_with)(alice, character, other_character)
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, conversation=group)
    assert sorted((u["character"], u["kind"]) for u in joined["usage"]) == sorted(
        (slug, kind) for slug in ("tester", "other") for kind in ("text", "audio", "media")
    )


# --- REST


USAGE = "/api/usage/"


def test_rest_usage_lists_every_kind(plans, alice, character, api_client_for):
    conversation = open_conversation(alice)
    send_many(alice, conversation, 2)
    response = api_client_for(alice).get(USAGE, {"character": "tester"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [(u["kind"], u["used"], u["limit"]) for u in body] == [
        ("text", 2, 30),
        ("audio", 0, 5),
        ("media", 0, 5),
    ]
    assert body[0]["level"] == "ok" and body[0]["remaining"] == 28


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({}, 400, "bad_request"),
        ({"character": ""}, 400, "bad_request"),
        ({"character": "not a slug!"}, 400, "bad_request"),
        ({"character": "x" * 65}, 400, "bad_request"),
        ({"character": "nobody"}, 404, "not_found"),
    ],
)
def test_rest_usage_bad_input(plans, alice, character, api_client_for, query, status, code):
    response = api_client_for(alice).get(USAGE, query)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert UsageCounter.objects.count() == 0


def test_rest_usage_of_a_draft_character_is_not_found(plans, alice, api_client_for):
    Character.objects.create(slug="draft", name="Draft", persona="x", is_public=False)
    response = api_client_for(alice).get(USAGE, {"character": "draft"})
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_rest_usage_needs_credentials(plans, character, api_client_for):
    response = api_client_for().get(USAGE, {"character": "tester"})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_rest_send_over_quota_is_429_with_the_usage(plans, alice, character, api_client_for):
    override(character, plans["free"], 1)
    conversation = open_conversation(alice)
    api = api_client_for(alice)
    url = f"/api/conversations/{conversation}/messages/"
    assert api.post(url, {"client_id": "a", "text": "hi"}, format="json").status_code == 201
    response = api.post(url, {"client_id": "b", "text": "hi"}, format="json")
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["code"] == "quota_exceeded"
    assert (body["usage"]["used"], body["usage"]["limit"]) == (1, 1)
    # The retry of the accepted one still answers 200 with it.
    again = api.post(url, {"client_id": "a", "text": "hi"}, format="json")
    assert again.status_code == 200


def test_me_shows_the_plan_and_time_zone(plans, alice, api_client_for):
    body = api_client_for(alice).get("/api/me/").json()
    assert body["time_zone"] == "UTC"
    assert body["plan"] == {
        "slug": "free",
        "name": "Free",
        "expires_at": None,
        "upgrade_url": "/upgrade/",
    }
    until = datetime(2040, 1, 1, tzinfo=UTC)
    UserPlan.objects.create(user=alice, plan=plans["premium"], expires_at=until)
    plan = api_client_for(alice).get("/api/me/").json()["plan"]
    assert (plan["slug"], plan["expires_at"]) == ("premium", "2040-01-01T00:00:00Z")


def test_me_plan_is_null_without_plans(alice, api_client_for):
    assert api_client_for(alice).get("/api/me/").json()["plan"] is None


def test_me_time_zone_can_be_changed(alice, api_client_for):
    api = api_client_for(alice)
    response = api.patch("/api/me/", {"time_zone": "Europe/Paris"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["time_zone"] == "Europe/Paris"
    alice.refresh_from_db()
    assert alice.time_zone == "Europe/Paris"


@pytest.mark.parametrize("value", ["Mars/Olympus", "", "../etc/passwd", "localtime", 5, None])
def test_me_time_zone_refuses_unknown_zones(alice, api_client_for, value):
    response = api_client_for(alice).patch("/api/me/", {"time_zone": value}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "bad_request"
    assert "time_zone" in body["fields"]
    alice.refresh_from_db()
    assert alice.time_zone == "UTC"


# --- The upgrade page


def test_the_upgrade_page_explains_the_plans(plans, alice):
    Plan.objects.filter(slug="premium").update(description="Talk all day long.")
    anonymous = Client().get("/upgrade/")
    assert anonymous.status_code == 200
    page = anonymous.content.decode()
    assert "Free" in page and "Premium" in page and "Talk all day long." in page
    assert "30 a day" in page and "1000 a day" in page
    client = Client()
    client.force_login(alice)
    mine = client.get("/upgrade/").content.decode()
    assert 'id="current-plan"' in mine and "You are on <strong>Free</strong>" in mine
    assert "Your plan" in mine


def test_the_upgrade_page_shows_unlimited_kinds(plans):
    PlanLimit.objects.filter(plan__slug="premium", kind="text").update(limit=None)
    page = Client().get("/upgrade/").content.decode()
    assert "Unlimited" in page


# --- Admin


@pytest.fixture
def staff(make_user) -> Client:
    admin = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return client


def test_admin_pages_render(plans, staff, alice, character):
    conversation = open_conversation(alice)
    send_many(alice, conversation, 2)
    override(character, plans["free"], 10)
    UserPlan.objects.create(user=alice, plan=plans["premium"])
    counter = UsageCounter.objects.get(user=alice)
    for url in (
        "/admin/usage/plan/",
        "/admin/usage/plan/add/",
        f"/admin/usage/plan/{plans['free'].pk}/change/",
        "/admin/usage/characterlimit/",
        "/admin/usage/userplan/",
        "/admin/usage/usagecounter/",
        f"/admin/usage/usagecounter/?character__id__exact={character.pk}&kind__exact=text",
        f"/admin/usage/usagecounter/{counter.pk}/change/",
        f"/admin/accounts/user/{alice.pk}/change/",
    ):
        response = staff.get(url)
        assert response.status_code == 200, (url, response.status_code)
    listing = staff.get("/admin/usage/plan/").content.decode()
    assert "text: 30/day, audio: 5/day, media: 5/day" in listing
    new_plan = staff.get("/admin/usage/plan/add/").content.decode()
    assert "limits-2-kind" in new_plan  # a row for each kind


def test_admin_users_usage_by_character_and_kind(plans, staff, alice, character, other_character):
    send_many(alice, open_conversation(alice), 3)
    send_many(alice, open_conversation(alice, "other"), 1)
    response = staff.get(f"/admin/usage/usagecounter/user/{alice.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<td>tester</td><td>text</td><td>3</td><td>30</td>" in page
    assert "<td>other</td><td>text</td><td>1</td><td>30</td>" in page
    assert "<td>tester</td><td>audio</td><td>0</td><td>5</td>" in page
    assert staff.get("/admin/usage/usagecounter/user/999999/").status_code == 404


def test_admin_user_usage_page_needs_staff(plans, alice):
    client = Client()
    client.force_login(alice)
    response = client.get(f"/admin/usage/usagecounter/user/{alice.pk}/")
    assert response.status_code == 302  # to the admin login


def test_admin_reset_counters_action(plans, staff, alice, character):
    conversation = open_conversation(alice)
    override(character, plans["free"], 2)
    send_many(alice, conversation, 3)
    counter = UsageCounter.objects.get(user=alice, kind="text")
    assert counter.exhausted_notified_at is not None
    response = staff.post(
        "/admin/usage/usagecounter/",
        {"action": "reset_counters", "_selected_action": [counter.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 counter(s) reset." in response.content.decode()
    counter.refresh_from_db()
    assert (counter.used, counter.exhausted_notified_at) == (0, None)
    assert refused(send_many(alice, conversation, 2, prefix="again")) == []


def test_admin_grant_plan_action_with_a_date(plans, staff, alice, make_user):
    bob = make_user("bob")
    selected = {"action": "grant_plan", "_selected_action": [alice.pk, bob.pk]}
    form = staff.post("/admin/accounts/user/", selected)
    assert form.status_code == 200
    assert 'id="grant-plan-form"' in form.content.decode()
    assert not UserPlan.objects.exists()

    past = {
        **selected,
        "apply": "Grant",
        "plan": plans["premium"].pk,
        "expires_at": "2001-01-01T00:00",
    }
    refused_form = staff.post("/admin/accounts/user/", past)
    assert refused_form.status_code == 200
    assert "future" in refused_form.content.decode()
    assert not UserPlan.objects.exists()

    until = (datetime.now(UTC) + timedelta(days=30)).replace(second=0, microsecond=0)
    done = staff.post(
        "/admin/accounts/user/",
        {**past, "expires_at": until.strftime("%Y-%m-%dT%H:%M")},
        follow=True,
    )
    assert done.status_code == 200
    assert "Premium granted to 2 user(s)." in done.content.decode()
    grants = {g.user_id: g for g in UserPlan.objects.all()}
    assert set(grants) == {alice.pk, bob.pk}
    assert {g.plan.slug for g in grants.values()} == {"premium"}
    assert {g.expires_at for g in grants.values()} == {until}
    assert usage_selectors.plan_held(user_id=bob.pk, now=datetime.now(UTC)).plan.slug == "premium"


def test_admin_grant_plan_from_the_user_plan_list(plans, staff, alice):
    grant = UserPlan.objects.create(user=alice, plan=plans["premium"])
    response = staff.post(
        "/admin/usage/userplan/",
        {
            "action": "grant_again",
            "_selected_action": [grant.pk],
            "apply": "Grant",
            "plan": plans["free"].pk,
            "expires_at": "",
        },
        follow=True,
    )
    assert response.status_code == 200
    grant.refresh_from_db()
    assert (grant.plan.slug, grant.expires_at) == ("free", None)


def test_admin_refuses_a_second_default_plan(plans, staff):
    response = staff.post(
        "/admin/usage/plan/add/",
        {
            "slug": "gold",
            "name": "Gold",
            "is_default": "on",
            "ordering": "5",
            "limits-TOTAL_FORMS": "0",
            "limits-INITIAL_FORMS": "0",
            "character_limits-TOTAL_FORMS": "0",
            "character_limits-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert not Plan.objects.filter(slug="gold").exists()
    assert "default" in response.content.decode().lower()


def test_time_zone_is_validated_in_the_admin(staff, alice):
    page = staff.get(f"/admin/accounts/user/{alice.pk}/change/")
    assert page.status_code == 200
    alice.time_zone = "Nowhere/Special"
    with pytest.raises(Exception, match="IANA"):
        alice.full_clean()

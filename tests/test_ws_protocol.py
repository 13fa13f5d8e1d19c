"""The websocket protocol (contract sections 1-5): frames in and out, joining and
resuming, sending, isolation between conversations, bad input, and what reaches
the database and the channel layer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.broadcast import conversation_group
from chat.models import Conversation, Message
from tests.conftest import WS_TIMEOUT, ws_session

pytestmark = pytest.mark.django_db(transaction=True)

QUIET_S = 0.5  # how long "nothing arrives" is watched for; broadcasts take milliseconds


# --- Helpers


@pytest.fixture
async def alice(make_user):
    return await database_sync_to_async(make_user)("alice", display_name="Alice")


@pytest.fixture
async def bob(make_user):
    return await database_sync_to_async(make_user)("bob")


@pytest.fixture
async def mallory(make_user):
    return await database_sync_to_async(make_user)("mallory")


@database_sync_to_async
def make_group(creator, *members) -> int:
    usernames = [m.username for m in members]
    return services.conversation_create_group(
        creator=creator, title="Team", member_usernames=usernames
    ).pk


@database_sync_to_async
def post(user, conversation_id: int, *texts: str) -> list[Message]:
    """Messages posted through the service, as another device of `user` would."""
    return [
        services.message_post(
            user=user, conversation_id=conversation_id, client_id=f"srv-{i}-{text}", text=text
        ).message
        for i, text in enumerate(texts)
    ]


@database_sync_to_async
def stored(conversation_id: int | None = None) -> list[tuple[int, str]]:
    qs = Message.objects.order_by("conversation_id", "seq")
    if conversation_id is not None:
        qs = qs.filter(conversation_id=conversation_id)
    return list(qs.values_list("seq", "text"))


async def join(ws, **fields) -> dict:
    await ws.send_json_to({"type": "conversation:join", **fields})
    frame = await ws.receive_json_from(WS_TIMEOUT)
    assert frame["type"] == "conversation:joined", frame
    return frame


async def send(ws, conversation_id: int, client_id: str, text: str, **fields) -> None:
    await ws.send_json_to(
        {
            "type": "message:send",
            "conversation": conversation_id,
            "client_id": client_id,
            "text": text,
            **fields,
        }
    )


async def receive(ws, frame_type: str) -> dict:
    frame = await ws.receive_json_from(WS_TIMEOUT)
    assert frame["type"] == frame_type, frame
    return frame


async def receive_status_and_message(ws) -> tuple[dict, dict]:
    """The sender's socket gets both; which comes first is not specified."""
    frames = [await ws.receive_json_from(WS_TIMEOUT) for _ in range(2)]
    by_type = {frame["type"]: frame for frame in frames}
    assert set(by_type) == {"message:status", "message:receive"}, frames
    return by_type["message:status"], by_type["message:receive"]


async def frames_until_pong(ws) -> list[dict]:
    """Ping, then everything the socket gets up to the pong (excluded): proves the
    socket is still open and that nothing else was queued before the answer."""
    await ws.send_json_to({"type": "ping", "t": "probe"})
    frames = []
    while True:
        frame = await ws.receive_json_from(WS_TIMEOUT)
        if frame == {"type": "pong", "t": "probe"}:
            return frames
        frames.append(frame)


async def quiet(ws) -> bool:
    return await ws.receive_nothing(timeout=QUIET_S)


@asynccontextmanager
async def published(conversation_id: int) -> AsyncIterator[Callable[[], Awaitable[list[dict]]]]:
    """Listen on the channel layer itself, below the sockets' own de-duplication:
    yields `drain()`, which returns every event published to the conversation
    (it waits until nothing arrives for QUIET_S; call it once, at the end)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = conversation_group(conversation_id)
    await layer.group_add(group, channel)

    async def drain() -> list[dict]:
        events = []
        while True:
            try:
                events.append(await asyncio.wait_for(layer.receive(channel), QUIET_S))
            except TimeoutError:
                return events

    try:
        yield drain
    finally:
        await layer.group_discard(group, channel)


async def character_conversation(ws) -> int:
    return (await join(ws, character="tester"))["conversation"]["id"]


# --- ping


@pytest.mark.parametrize("t", [1234567890123, "abc", None, {"nested": [1, "two", 3.5, True]}])
async def test_ping_is_answered_with_pong_echoing_t(alice, t):
    async with ws_session(alice) as (ws, _):
        await ws.send_json_to({"type": "ping", "t": t})
        assert await ws.receive_json_from(WS_TIMEOUT) == {"type": "pong", "t": t}


# --- conversation:join


async def test_join_by_character_creates_the_conversation_with_the_greeting(alice, character):
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, character="tester")
    conversation = joined["conversation"]
    assert conversation["kind"] == "character"
    assert conversation["character"] == "tester"
    assert conversation["members"] == [
        {"id": alice.pk, "username": "alice", "display_name": "Alice"}
    ]
    assert (joined["last_seq"], joined["read_seq"], joined["gap"]) == (1, 0, False)
    [greeting] = joined["messages"]
    assert greeting["seq"] == 1
    assert greeting["text"] == "Hello, tester here."
    assert greeting["role"] == "assistant"
    assert greeting["sender"]["type"] == "character"
    assert greeting["sender"]["id"] == character.pk
    assert greeting["sender"]["name"] == "Tester"


async def test_join_by_character_twice_gives_the_same_conversation(alice, character):
    async with ws_session(alice) as (first, _), ws_session(alice) as (second, _):
        one = await join(first, character="tester")
        two = await join(second, character="tester")
    assert one["conversation"]["id"] == two["conversation"]["id"]
    assert [m["seq"] for m in two["messages"]] == [1]
    assert await stored() == [(1, "Hello, tester here.")]


async def test_join_by_id(alice, character):
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, conversation=conversation_id)
    assert joined["conversation"]["id"] == conversation_id
    assert [m["seq"] for m in joined["messages"]] == [1]


async def test_join_of_an_unknown_character_is_not_found(alice, character):
    async with ws_session(alice) as (ws, _):
        await ws.send_json_to({"type": "conversation:join", "character": "nobody"})
        error = await receive(ws, "error")
        assert (error["code"], error["ref"]) == ("not_found", "conversation:join")
    assert await stored() == []


async def test_join_without_since_gives_the_latest_page_ascending(alice, character, settings):
    settings.PARLEY_JOIN_PAGE = 3
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        await post(alice, conversation_id, "two", "three", "four", "five", "six")
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, conversation=conversation_id)
    assert [(m["seq"], m["text"]) for m in joined["messages"]] == [
        (4, "four"),
        (5, "five"),
        (6, "six"),
    ]
    assert (joined["last_seq"], joined["gap"]) == (6, False)


async def test_join_with_since_gives_exactly_the_messages_after_it(alice, character, settings):
    settings.PARLEY_JOIN_PAGE = 1
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        await post(alice, conversation_id, "two", "three", "four", "five")
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, conversation=conversation_id, since=2)
        assert [m["seq"] for m in joined["messages"]] == [3, 4, 5]
        assert (joined["last_seq"], joined["gap"]) == (5, False)
        await ws.send_json_to({"type": "conversation:leave", "conversation": conversation_id})
        await receive(ws, "conversation:left")
        up_to_date = await join(ws, conversation=conversation_id, since=5)
        assert (up_to_date["messages"], up_to_date["gap"]) == ([], False)


async def test_join_with_since_flags_a_gap_beyond_the_resume_limit(alice, character, settings):
    settings.PARLEY_RESUME_LIMIT = 3
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        await post(alice, conversation_id, "two", "three", "four", "five")
    async with ws_session(alice) as (ws, _):
        joined = await join(ws, conversation=conversation_id, since=1)
        assert [m["seq"] for m in joined["messages"]] == [2, 3, 4]
        assert joined["gap"] is True
        await ws.send_json_to({"type": "conversation:leave", "conversation": conversation_id})
        await receive(ws, "conversation:left")
        exactly_the_limit = await join(ws, conversation=conversation_id, since=2)
        assert [m["seq"] for m in exactly_the_limit["messages"]] == [3, 4, 5]
        assert exactly_the_limit["gap"] is False


# --- conversation:leave


async def test_leave_stops_delivery(alice, bob):
    conversation_id = await make_group(alice, bob)
    async with ws_session(alice) as (leaver, _), ws_session(alice) as (witness, _):
        await join(leaver, conversation=conversation_id)
        await join(witness, conversation=conversation_id)
        await leaver.send_json_to({"type": "conversation:leave", "conversation": conversation_id})
        left = await receive(leaver, "conversation:left")
        assert left == {"type": "conversation:left", "conversation": conversation_id}
        await post(bob, conversation_id, "after the leave")
        assert (await receive(witness, "message:receive"))["message"]["text"] == "after the leave"
        assert await quiet(leaver)


# --- message:send


async def test_send_gets_a_status_and_every_joined_socket_the_message(alice, bob):
    conversation_id = await make_group(alice, bob)
    async with (
        ws_session(alice) as (sender, _),
        ws_session(alice) as (senders_other_device, _),
        ws_session(bob) as (bob_phone, _),
        ws_session(bob) as (bob_laptop, _),
    ):
        for ws in (sender, senders_other_device, bob_phone, bob_laptop):
            await join(ws, conversation=conversation_id)
        await send(sender, conversation_id, "c-1", "hello **team**")
        status, received = await receive_status_and_message(sender)
        others = [
            await receive(ws, "message:receive")
            for ws in (senders_other_device, bob_phone, bob_laptop)
        ]
        for ws in (sender, senders_other_device, bob_phone, bob_laptop):
            assert await quiet(ws)
    [(seq, text)] = await stored(conversation_id)
    assert (seq, text) == (1, "hello **team**")
    assert status == {
        "type": "message:status",
        "conversation": conversation_id,
        "client_id": "c-1",
        "message_id": received["message"]["id"],
        "seq": 1,
        "status": "sent",
        "error": None,
        "duplicate": False,
    }
    message = received["message"]
    assert message["conversation"] == conversation_id
    assert (message["seq"], message["client_id"], message["text"]) == (1, "c-1", "hello **team**")
    assert (message["role"], message["kind"], message["status"]) == ("user", "text", "complete")
    assert message["sender"] == {"type": "user", "id": alice.pk, "name": "Alice", "avatar": None}
    assert all(other == received for other in others)


async def test_seqs_follow_each_other(alice, character):
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        seqs = []
        for n in range(3):
            await send(ws, conversation_id, f"c-{n}", f"message {n}")
            status, received = await receive_status_and_message(ws)
            assert received["message"]["seq"] == status["seq"]
            seqs.append(status["seq"])
    assert seqs == [2, 3, 4]


@pytest.mark.parametrize(
    ("text", "present", "absent"),
    [
        ("**bold** and _it_", ["<strong>bold</strong>", "<em>it</em>"], []),
        ("hi <script>alert(1)</script> there", ["hi"], ["<script", "alert(1)"]),
        ("[click](javascript:alert(1))", ["click"], ["javascript:", "href"]),
        ("<img src=x onerror=alert(1)>", [], ["<img", "onerror"]),
        (
            '<a href="https://example.com" onclick="x()">ok</a>',
            ['href="https://example.com"'],
            ["onclick"],
        ),
    ],
    ids=["markdown", "script", "javascript-link", "img-onerror", "onclick"],
)
async def test_html_is_sanitized_markdown(alice, character, text, present, absent):
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        await send(ws, conversation_id, "c-1", text)
        _, received = await receive_status_and_message(ws)
    message = received["message"]
    assert message["text"] == text
    for fragment in present:
        assert fragment in message["html"]
    for fragment in absent:
        assert fragment not in message["html"]


async def test_retry_with_the_same_client_id_stores_and_broadcasts_once(alice, bob):
    conversation_id = await make_group(alice, bob)
    async with (
        ws_session(alice) as (sender, _),
        ws_session(bob) as (receiver, _),
        published(conversation_id) as drain_published,
    ):
        await join(sender, conversation=conversation_id)
        await join(receiver, conversation=conversation_id)
        await send(sender, conversation_id, "retry-me", "once only")
        first, _ = await receive_status_and_message(sender)
        await receive(receiver, "message:receive")
        await send(sender, conversation_id, "retry-me", "once only")
        second = await receive(sender, "message:status")
        assert await quiet(sender)
        assert await quiet(receiver)
        assert [event["seq"] for event in await drain_published()] == [1]
    assert second["status"] == "sent"
    assert (second["message_id"], second["seq"]) == (first["message_id"], first["seq"])
    assert await stored(conversation_id) == [(1, "once only")]


async def test_same_client_id_in_another_conversation_is_a_new_message(alice, bob, character):
    group_id = await make_group(alice, bob)
    async with ws_session(alice) as (ws, _):
        character_id = await character_conversation(ws)
        await join(ws, conversation=group_id)
        await send(ws, group_id, "same", "in the group")
        in_group, _ = await receive_status_and_message(ws)
        await send(ws, character_id, "same", "with the character")
        with_character, _ = await receive_status_and_message(ws)
    assert in_group["message_id"] != with_character["message_id"]
    assert (in_group["seq"], with_character["seq"]) == (1, 2)


@pytest.mark.parametrize(
    "text",
    [
        "family 👨‍👩‍👧‍👦 and clef 𝄞 and 🏳️‍🌈",
        "\u200fשלום\u200f mixed with العربية \u202bembedded\u202c",  # noqa: RUF001
        "zero\u200dwidth\u200cjoiners\ufeff and e\u0301 combining",
    ],
    ids=["emoji", "rtl", "zero-width"],
)
async def test_unicode_round_trips_exactly(alice, character, text):
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        await send(ws, conversation_id, "c-1", text)
        _, received = await receive_status_and_message(ws)
    async with ws_session(alice) as (ws, _):
        rejoined = await join(ws, conversation=conversation_id, since=1)
    assert received["message"]["text"].encode() == text.encode()
    assert rejoined["messages"][0]["text"].encode() == text.encode()
    assert await stored(conversation_id) == [(1, "Hello, tester here."), (2, text)]


# --- Isolation


async def test_non_member_cannot_join(alice, bob, mallory):
    conversation_id = await make_group(alice, bob)
    async with ws_session(mallory) as (ws, _):
        await ws.send_json_to({"type": "conversation:join", "conversation": conversation_id})
        error = await receive(ws, "error")
        assert await quiet(ws)
    assert error == {
        "type": "error",
        "code": "not_found",
        "message": "No such conversation.",
        "ref": "conversation:join",
        "client_id": None,
    }


async def test_non_member_cannot_send(alice, bob, mallory):
    conversation_id = await make_group(alice, bob)
    async with ws_session(mallory) as (intruder, _), ws_session(alice) as (member, _):
        await join(member, conversation=conversation_id)
        await send(intruder, conversation_id, "evil-1", "let me in")
        frames = await frames_until_pong(intruder)
        assert await quiet(member)
    status, error = frames
    assert status == {
        "type": "message:status",
        "conversation": conversation_id,
        "client_id": "evil-1",
        "message_id": None,
        "seq": None,
        "status": "failed",
        "error": {"code": "not_found", "message": "No such conversation."},
        "duplicate": False,
    }
    assert (error["type"], error["code"], error["ref"]) == ("error", "not_found", "message:send")
    assert await stored() == []


async def test_non_member_receives_nothing_of_the_conversation(alice, bob, mallory):
    conversation_id = await make_group(alice, bob)
    async with ws_session(mallory) as (intruder, _), ws_session(bob) as (member, _):
        await intruder.send_json_to({"type": "conversation:join", "conversation": conversation_id})
        await receive(intruder, "error")
        await join(member, conversation=conversation_id)
        await post(alice, conversation_id, "members only")
        assert (await receive(member, "message:receive"))["message"]["text"] == "members only"
        assert await quiet(intruder)


# --- Bad input: an error frame, the socket stays open, nothing stored


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_FRAMES = {
    "malformed-json": ('{"type": "ping", ', "bad_request"),
    "json-array": ('[{"type": "ping"}]', "bad_request"),
    "json-number": ("42", "bad_request"),
    "json-string": ('"ping"', "bad_request"),
    "json-null": ("null", "bad_request"),
    "binary": (b'{"type": "ping", "t": 1}', "bad_request"),
    "nested-100000-deep": (nested(100_000), "too_large"),
    "nested-20000-deep": (nested(20_000), "bad_request"),
    "nested-object-in-frame": ('{"type": "ping", "t": ' + nested(5_000) + "}", "bad_request"),
    "unknown-type": ('{"type": "no:such"}', "unknown_type"),
    "missing-type": ('{"conversation": 1}', "bad_request"),
    "type-not-a-string": ('{"type": 5}', "bad_request"),
    "lone-surrogate-type": ('{"type": "\\ud800"}', "unknown_type"),
    "ping-t-lone-surrogate": ('{"type": "ping", "t": "\\udfff"}', "bad_request"),
    "ping-t-nested-300-deep": ('{"type": "ping", "t": ' + nested(300) + "}", "bad_request"),
    "join-without-target": ('{"type": "conversation:join"}', "bad_request"),
    "join-conversation-as-string": (
        '{"type": "conversation:join", "conversation": "5"}',
        "bad_request",
    ),
    "join-negative-since": (
        '{"type": "conversation:join", "character": "tester", "since": -1}',
        "bad_request",
    ),
    "leave-without-conversation": ('{"type": "conversation:leave"}', "bad_request"),
    "frame-over-64-kib": (json.dumps({"type": "ping", "t": "x" * 65_536}), "too_large"),
    "frame-over-64-kib-in-utf8-only": (
        json.dumps({"type": "ping", "t": "😀" * 17_000}, ensure_ascii=False),
        "too_large",
    ),
}


async def send_raw(ws, frame: str | bytes) -> None:
    if isinstance(frame, bytes):
        await ws.send_to(bytes_data=frame)
    else:
        await ws.send_input({"type": "websocket.receive", "text": frame})


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_bad_frame_gets_an_error_and_the_socket_stays_open(alice, character, frame, code):
    async with ws_session(alice) as (ws, _):
        await character_conversation(ws)
        await send_raw(ws, frame)
        [error] = await frames_until_pong(ws)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    assert await stored() == [(1, "Hello, tester here.")]


async def test_an_oversized_send_still_gets_its_message_status(alice, character):
    async with ws_session(alice) as (ws, _):
        cid = await character_conversation(ws)
        frame = {"type": "message:send", "conversation": cid, "client_id": "c-big"}
        await send_raw(ws, json.dumps({**frame, "text": "x" * 70_000}))
        status, error = await frames_until_pong(ws)
    assert status == {
        "type": "message:status",
        "conversation": cid,
        "client_id": "c-big",
        "message_id": None,
        "seq": None,
        "status": "failed",
        "duplicate": False,
        "error": {"code": "too_large", "message": "Frames are limited to 65536 bytes."},
    }
    assert (error["type"], error["code"], error["client_id"]) == ("error", "too_large", "c-big")
    assert await stored() == [(1, "Hello, tester here.")]


async def test_an_oversized_frame_naming_the_send_type_in_a_string_gets_only_an_error(
    alice, character
):
    async with ws_session(alice) as (ws, _):
        await character_conversation(ws)
        await send_raw(ws, json.dumps({"type": "ping", "t": '"message:send"' + "x" * 70_000}))
        [error] = await frames_until_pong(ws)
    assert (error["type"], error["code"]) == ("error", "too_large")


async def test_empty_text_frame_gets_bad_request(alice):
    async with ws_session(alice) as (ws, _):
        await ws.send_input({"type": "websocket.receive", "text": ""})
        [error] = await frames_until_pong(ws)
    assert (error["type"], error["code"]) == ("error", "bad_request")


async def test_unknown_type_error_names_the_type(alice):
    async with ws_session(alice) as (ws, _):
        await ws.send_json_to({"type": "no:such", "client_id": "c-9"})
        [error] = await frames_until_pong(ws)
    assert error == {
        "type": "error",
        "code": "unknown_type",
        "message": "Unknown frame type 'no:such'.",
        "ref": "no:such",
        "client_id": "c-9",
    }


async def test_deep_nesting_is_refused_also_under_a_larger_frame_limit(alice, settings):
    settings.PARLEY_MAX_FRAME_BYTES = 1024 * 1024
    async with ws_session(alice) as (ws, _):
        await send_raw(ws, nested(100_000))
        [error] = await frames_until_pong(ws)
    assert (error["type"], error["code"]) == ("error", "bad_request")


LONG_TEXT = "x" * 4001
BAD_SENDS = {
    "conversation-as-string": ({"conversation": "{cid}"}, "bad_request"),
    "conversation-as-bool": ({"conversation": True}, "bad_request"),
    "conversation-zero": ({"conversation": 0}, "bad_request"),
    "conversation-too-big": ({"conversation": 2**64}, "bad_request"),
    "client-id-as-number": ({"client_id": 7}, "bad_request"),
    "text-as-list": ({"text": ["hi"]}, "bad_request"),
    "missing-conversation": ({"conversation": None}, "bad_request"),
    "missing-client-id": ({"client_id": None}, "bad_request"),
    "empty-client-id": ({"client_id": ""}, "bad_request"),
    "client-id-65-chars": ({"client_id": "c" * 65}, "bad_request"),
    "client-id-unprintable": ({"client_id": "c\n1"}, "bad_request"),
    "missing-text": ({"text": None}, "bad_request"),
    "blank-text": ({"text": " \n\t "}, "bad_request"),
    "text-over-4000-chars": ({"text": LONG_TEXT}, "bad_request"),
    "nul-in-text": ({"text": "before\x00after"}, "bad_request"),
    "unknown-kind": ({"kind": "hologram"}, "bad_request"),
    "attachment-not-supported": ({"kind": "image", "attachment": 1}, "bad_request"),
    "reply-to-unknown-message": ({"reply_to": 999_999}, "bad_request"),
}


def send_frame(conversation_id: int, **changes) -> dict:
    frame = {
        "type": "message:send",
        "conversation": conversation_id,
        "client_id": "c-1",
        "text": "hello",
    }
    for key, value in changes.items():
        if value is None:
            del frame[key]
        else:
            frame[key] = str(conversation_id) if value == "{cid}" else value
    return frame


async def assert_send_failed(ws, frame: str, code: str) -> None:
    """Exactly one failed message:status and one error, the socket still open."""
    await send_raw(ws, frame)
    frames = await frames_until_pong(ws)
    statuses = [f for f in frames if f["type"] == "message:status"]
    errors = [f for f in frames if f["type"] == "error"]
    assert len(statuses) == 1 and len(errors) == 1 and len(frames) == 2, frames
    [status], [error] = statuses, errors
    assert status["status"] == "failed"
    assert (status["message_id"], status["seq"]) == (None, None)
    assert status["error"]["code"] == code
    assert status["error"]["message"]
    assert (error["code"], error["ref"]) == (code, "message:send")


@pytest.mark.parametrize(("changes", "code"), BAD_SENDS.values(), ids=BAD_SENDS.keys())
async def test_bad_send_fails_with_one_status_and_stores_nothing(alice, character, changes, code):
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        await assert_send_failed(ws, json.dumps(send_frame(conversation_id, **changes)), code)
    assert await stored() == [(1, "Hello, tester here.")]


@pytest.mark.parametrize(
    "field", ["text", "client_id"], ids=["lone-surrogate-text", "lone-surrogate-client-id"]
)
async def test_send_with_a_lone_surrogate_fails_with_one_status(alice, character, field):
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        frame = json.dumps(send_frame(conversation_id, **{field: "PLACEHOLDER"}))
        await assert_send_failed(ws, frame.replace("PLACEHOLDER", "a\\ud800b"), "bad_request")
    assert await stored() == [(1, "Hello, tester here.")]


async def test_failed_status_echoes_the_client_id_and_conversation(alice, character):
    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        await ws.send_json_to(send_frame(conversation_id, client_id="c-42", text="\x00"))
        status, error = await frames_until_pong(ws)
    assert (status["conversation"], status["client_id"]) == (conversation_id, "c-42")
    assert error["client_id"] == "c-42"


# --- Transactions and the channel layer


async def test_a_rolled_back_post_broadcasts_nothing(alice, character):
    @database_sync_to_async
    def post_then_roll_back(conversation_id: int) -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.message_post(
                user=alice, conversation_id=conversation_id, client_id="c-1", text="doomed"
            )
            raise RuntimeError("roll back")

    async with ws_session(alice) as (ws, _):
        conversation_id = await character_conversation(ws)
        async with published(conversation_id) as drain_published:
            await post_then_roll_back(conversation_id)
            assert await quiet(ws)
            assert await drain_published() == []
        assert await stored() == [(1, "Hello, tester here.")]
        await post(alice, conversation_id, "kept")
        received = await receive(ws, "message:receive")
    assert (received["message"]["seq"], received["message"]["text"]) == (2, "kept")


# --- Query counts (no sockets: plain transactional test cases)


def _statements(queries: CaptureQueriesContext) -> list[str]:
    """What reached the database, minus the savepoints of the test's own transaction."""
    return [
        q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]


@pytest.mark.django_db
def test_a_group_message_is_one_statement(make_user):
    user, other = make_user(), make_user()
    group = services.conversation_create_group(
        creator=user, title="g", member_usernames=[other.username]
    )
    with CaptureQueriesContext(connection) as queries:
        result = services.message_post(
            user=user, conversation_id=group.pk, client_id="c-1", text="hello"
        )
    # The seq, the membership check and the INSERT in one statement (no transaction of
    # its own outside the test's).
    (statement,) = _statements(queries)
    assert statement.lstrip().startswith("WITH conv AS")
    stored = Message.objects.get(pk=result.message.pk)
    assert (stored.seq, stored.text, stored.created_at) == (1, "hello", result.message.created_at)
    assert Conversation.objects.get(pk=group.pk).last_seq == 1


@pytest.mark.django_db
def test_message_post_takes_a_fixed_small_number_of_queries(make_user, character):
    user = make_user()
    conversation, _ = services.conversation_open_with_character(user=user, slug="tester")
    with CaptureQueriesContext(connection) as queries:
        services.message_post(
            user=user, conversation_id=conversation.pk, client_id="c-1", text="hello"
        )
    # The one-statement write finds no group; then the same statement in a transaction
    # (where the usage charge and the reply would join it when they are on).
    statements = _statements(queries)
    assert len(statements) == 2, statements
    assert all(s.lstrip().startswith("WITH conv AS") for s in statements)


@pytest.mark.django_db
def test_later_messages_of_a_character_conversation_skip_the_group_statement(make_user, character):
    user = make_user()
    conversation, _ = services.conversation_open_with_character(user=user, slug="tester")
    services.message_post(user=user, conversation_id=conversation.pk, client_id="c-1", text="hi")
    with CaptureQueriesContext(connection) as queries:
        result = services.message_post(
            user=user, conversation_id=conversation.pk, client_id="c-2", text="again"
        )
    # The process knows this conversation is not a group: straight to the transaction.
    (statement,) = _statements(queries)
    assert statement.lstrip().startswith("WITH conv AS")
    assert Message.objects.get(pk=result.message.pk).seq == result.message.seq


@pytest.mark.django_db
def test_a_retry_inside_a_callers_transaction_leaves_it_usable(make_user):
    user, other = make_user(), make_user()
    group = services.conversation_create_group(
        creator=user, title="g", member_usernames=[other.username]
    )
    first = services.message_post(user=user, conversation_id=group.pk, client_id="same", text="a")
    again = services.message_post(user=user, conversation_id=group.pk, client_id="same", text="b")
    assert (again.created, again.message.pk) == (False, first.message.pk)
    # The transaction around this test still works, and the seq the retry took is gone.
    third = services.message_post(user=user, conversation_id=group.pk, client_id="new", text="c")
    assert third.message.seq == 2


@pytest.mark.django_db
def test_conversation_join_does_not_grow_with_the_messages(make_user, character):
    user, other = make_user(), make_user()
    small = services.conversation_create_group(
        creator=user, title="small", member_usernames=[other.username]
    )
    big = services.conversation_create_group(
        creator=user, title="big", member_usernames=[other.username]
    )
    for n in range(2):
        services.message_post(user=user, conversation_id=small.pk, client_id=f"s{n}", text="x")
    for n in range(60):
        sender = user if n % 2 else other
        services.message_post(user=sender, conversation_id=big.pk, client_id=f"b{n}", text="x")

    def join_queries(conversation_id: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            joined = services.conversation_join(user=user, conversation_id=conversation_id)
        assert joined.messages
        return len(queries)

    # membership (with unread count), members, the conversations' characters, last message,
    # the page
    assert join_queries(small.pk) == join_queries(big.pk) == 5

"""Character replies end to end: real sockets on the real Redis layer, the real
`anthropic` client talking to a local fake of the Messages API (or the offline
responder), PostgreSQL underneath."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async

from chat import tasks
from chat.models import Conversation, ConversationCharacter, Generation, Membership, Message
from tests.conftest import ws_session
from tests.fake_anthropic import drop, ok, overload_mid_stream, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.replies]

REPLY = "Ahoy there! " + "The sea is wide and the wind is kind today. " * 6


@pytest.fixture
def alice(make_user):
    return make_user("alice", display_name="Alice")


async def receive_until(ws, done, *, seconds: float = 10.0) -> list[dict]:
    """Frames until (and including) the first one for which `done(frame)` is true."""
    frames = []
    async with asyncio.timeout(seconds):
        while True:
            frame = await ws.receive_json_from(timeout=seconds)
            frames.append(frame)
            if done(frame):
                return frames


def reply_ended(frame: dict) -> bool:
    return (
        frame["type"] == "message:update"
        and frame["message"]["role"] == "assistant"
        and frame["message"]["status"] != "streaming"
    )


def stitch(text: str, frames: list[dict], message_id: int) -> str:
    """What a client builds from a snapshot text and the deltas after it."""
    for frame in frames:
        if frame["type"] == "message:stream" and frame["message_id"] == message_id:
            assert frame["offset"] <= len(text), "a delta past the end: text was lost"
            text = text[: frame["offset"]] + frame["delta"]
    return text


async def join_character(ws, slug: str = "tester") -> dict:
    await ws.send_json_to({"type": "conversation:join", "character": slug})
    joined = await ws.receive_json_from(timeout=5)
    assert joined["type"] == "conversation:joined", joined
    return joined


async def send(ws, conversation: int, text: str) -> str:
    client_id = uuid.uuid4().hex
    await ws.send_json_to(
        {"type": "message:send", "conversation": conversation, "client_id": client_id, "text": text}
    )
    return client_id


@pytest.fixture
async def settle():
    """Let background replies finish before the database is flushed."""
    yield
    await tasks.drain(10)


async def test_a_reply_streams_on_the_wire_in_order(alice, character, fake_anthropic, settle):
    fake_anthropic.script(ok(REPLY, chunk_size=5, delay_s=0.002, cache_read_tokens=7))
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "Tell me about the sea")
        frames = await receive_until(ws, reply_ended)

    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["message:status", "message:receive"]
    reply = next(f["message"] for f in frames[2:] if f["type"] == "message:receive")
    assert (reply["seq"], reply["status"], reply["role"]) == (3, "streaming", "assistant")
    assert reply["sender"] == {
        "type": "character",
        "id": character.pk,
        "name": "Tester",
        "avatar": None,
    }
    # The character reads the message and types before the first delta.
    first_delta = kinds.index("message:stream")
    receipt = next(f for f in frames if f["type"] == "receipt:update")
    assert receipt["user"] == {"id": character.pk, "name": "Tester", "type": "character"}
    assert receipt["read_seq"] == 2
    typing = [f for f in frames if f["type"] == "typing:indicator"]
    assert typing[0]["is_typing"] is True
    assert frames.index(typing[0]) < first_delta
    # Deltas concatenate, at their offsets, to the final text.
    final = frames[-1]["message"]
    assert final["status"] == "complete"
    assert final["text"] == REPLY
    assert stitch("", frames, reply["id"]) == REPLY
    assert "<p>" in final["html"]
    # Accounting on the reply and in the table the admin totals.
    generation = await database_sync_to_async(Generation.objects.get)(message_id=reply["id"])
    assert generation.status == "complete"
    assert generation.output_tokens > 0 and generation.input_tokens > 0
    assert generation.cache_read_tokens == 7
    assert generation.time_to_first_token_ms is not None
    assert generation.total_ms >= generation.time_to_first_token_ms
    assert final["metadata"]["usage"]["cache_read_tokens"] == 7
    assert final["metadata"]["context"]["trimmed"] is False
    # The persona went as a cached system prompt, the messages as turns.
    request = fake_anthropic.requests[-1].body
    assert request["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "You test things." in str(request["system"])
    last = request["messages"][-1]
    assert last["role"] == "user"
    assert [block["text"] for block in last["content"]] == ["Tell me about the sea"]


async def test_deltas_are_coalesced(alice, character, fake_anthropic, settle):
    # 300 one-character deltas as fast as the fake can send them.
    text = "x" * 300
    fake_anthropic.script(ok(text, chunk_size=1, delay_s=0.001))
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "Go")
        frames = await receive_until(ws, reply_ended)
    deltas = [f for f in frames if f["type"] == "message:stream"]
    assert "".join(d["delta"] for d in deltas) == text
    # ~0.3 s of tokens at one frame per 50 ms: far fewer frames than tokens.
    assert len(deltas) <= 30, len(deltas)


async def test_reply_survives_disconnect_and_resume_finds_it(
    alice, character, fake_anthropic, settle
):
    fake_anthropic.script(ok(REPLY, chunk_size=5, delay_s=0.01))
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "Tell me a long story")
        await receive_until(ws, lambda f: f["type"] == "message:stream")
    # The socket is gone; the reply keeps going on the server.
    await tasks.drain(10)
    async with ws_session(alice) as (ws, _):
        await ws.send_json_to(
            {"type": "conversation:join", "conversation": conversation, "since": 2}
        )
        joined = await ws.receive_json_from(timeout=5)
    (reply,) = joined["messages"]
    assert (reply["seq"], reply["status"], reply["text"]) == (3, "complete", REPLY)


async def test_joining_mid_reply_gets_the_text_so_far_then_the_rest(
    alice, character, fake_anthropic, settle
):
    fake_anthropic.script(ok(REPLY, chunk_size=4, delay_s=0.01))
    async with ws_session(alice) as (first, _):
        conversation = (await join_character(first))["conversation"]["id"]
        await send(first, conversation, "Talk to me")
        await receive_until(first, lambda f: f["type"] == "message:stream")
        await asyncio.sleep(0.15)
        async with ws_session(alice) as (second, _):
            joined = await join_character(second)
            reply = joined["messages"][-1]
            assert reply["status"] == "streaming"
            assert 0 < len(reply["text"]) < len(REPLY)
            assert REPLY.startswith(reply["text"])
            frames = await receive_until(second, reply_ended)
    assert stitch(reply["text"], frames, reply["id"]) == REPLY
    assert frames[-1]["message"]["text"] == REPLY


async def test_stop_keeps_the_partial_text(alice, character, fake_anthropic, settle):
    fake_anthropic.script(ok(REPLY * 3, chunk_size=3, delay_s=0.01))
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "Ramble on")
        await receive_until(ws, lambda f: f["type"] == "message:stream")
        await ws.send_json_to({"type": "generation:stop", "conversation": conversation})
        frames = await receive_until(ws, reply_ended)
    final = frames[-1]["message"]
    assert final["status"] == "stopped"
    assert 0 < len(final["text"]) < len(REPLY * 3)
    assert (REPLY * 3).startswith(final["text"])
    stored = await database_sync_to_async(Message.objects.get)(pk=final["id"])
    assert (stored.status, stored.text) == ("stopped", final["text"])


async def test_stop_with_nothing_streaming_is_not_found(alice, character, settle):
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await ws.send_json_to({"type": "generation:stop", "conversation": conversation})
        error = await ws.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "not_found")


@pytest.mark.parametrize(
    ("behaviours", "code", "partial"),
    [
        ([status(529)] * 3, "overloaded", False),
        ([status(500)] * 3, "provider_error", False),
        ([drop(after_deltas=2, text=REPLY)], "connection_lost", True),
        ([overload_mid_stream(after_deltas=2, text=REPLY)], "overloaded", True),
    ],
)
async def test_a_failed_reply_keeps_its_text_and_the_user_can_send_again(
    alice, character, fake_anthropic, settle, behaviours, code, partial
):
    fake_anthropic.script(*behaviours, ok("Back on course."))
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "Hello?")
        failed = (await receive_until(ws, reply_ended))[-1]["message"]
        assert failed["status"] == "failed"
        assert failed["metadata"]["error"]["code"] == code
        assert bool(failed["text"]) is partial
        # The socket is fine, and the next message gets an answer.
        await send(ws, conversation, "Try again")
        retried = (await receive_until(ws, reply_ended))[-1]["message"]
    assert (retried["status"], retried["text"]) == ("complete", "Back on course.")


async def test_messages_sent_during_a_reply_are_answered_together(
    alice, character, fake_anthropic, settle
):
    fake_anthropic.script(ok(REPLY, chunk_size=5, delay_s=0.01), ok("Both answered."))
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "First")
        await receive_until(ws, lambda f: f["type"] == "message:stream")
        await send(ws, conversation, "Second")
        await send(ws, conversation, "Third")
        await receive_until(ws, reply_ended)
        second = (await receive_until(ws, reply_ended))[-1]["message"]
    assert second["text"] == "Both answered."
    assert second["metadata"]["answers_through"] == second["seq"] - 1
    assert len(fake_anthropic.requests) == 2
    last_turn = fake_anthropic.requests[-1].body["messages"][-1]
    assert "Second" in str(last_turn) and "Third" in str(last_turn)
    replies = await database_sync_to_async(
        lambda: Message.objects.filter(role="assistant", status="complete").count()
    )()
    assert replies == 3  # the greeting and two replies


async def test_two_conversations_stream_at_once_without_mixing(
    make_user, character, fake_anthropic, settle
):
    fake_anthropic.script(
        ok("A" * 120, chunk_size=3, delay_s=0.005), ok("B" * 120, chunk_size=3, delay_s=0.005)
    )
    ann, ben = await database_sync_to_async(make_user)(), await database_sync_to_async(make_user)()
    async with ws_session(ann) as (ws_a, _), ws_session(ben) as (ws_b, _):
        conv_a = (await join_character(ws_a))["conversation"]["id"]
        conv_b = (await join_character(ws_b))["conversation"]["id"]
        await send(ws_a, conv_a, "one")
        await send(ws_b, conv_b, "two")
        frames_a, frames_b = await asyncio.gather(
            receive_until(ws_a, reply_ended), receive_until(ws_b, reply_ended)
        )
    for frames, conversation in ((frames_a, conv_a), (frames_b, conv_b)):
        assert {
            f.get("conversation", f.get("message", {}).get("conversation")) for f in frames
        } == {conversation}
        text = frames[-1]["message"]["text"]
        assert len(set(text)) == 1 and len(text) == 120


async def test_the_offline_responder_streams(alice, character, offline_provider, settle):
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "Who are you?")
        frames = await receive_until(ws, reply_ended)
    final = frames[-1]["message"]
    assert final["status"] == "complete" and final["text"]
    assert final["metadata"]["offline"] is True
    reply_id = final["id"]
    assert stitch("", frames, reply_id) == final["text"]
    assert sum(f["type"] == "message:stream" for f in frames) >= 1


async def test_a_group_character_answers_only_when_addressed(
    make_user, character, fake_anthropic, settle
):
    owner = await database_sync_to_async(make_user)()

    @database_sync_to_async
    def group_with_history() -> Conversation:
        from chat.services import (
            conversation_add_character,
            conversation_create_group,
            message_post,
        )

        group = conversation_create_group(creator=owner, title="Crew", member_usernames=[])
        message_post(
            user=owner,
            conversation_id=group.pk,
            client_id="before",
            text="A secret from before the character came",
        )
        conversation_add_character(user=owner, conversation_id=group.pk, slug="tester")
        return group

    group = await group_with_history()
    fake_anthropic.script(ok("At your service."))
    async with ws_session(owner) as (ws, _):
        await ws.send_json_to({"type": "conversation:join", "conversation": group.pk})
        joined = await ws.receive_json_from(timeout=5)
        assert joined["conversation"]["characters"] == ["tester"]
        await send(ws, group.pk, "Nobody in particular")
        await receive_until(ws, lambda f: f["type"] == "message:receive")
        assert await ws.receive_nothing(timeout=0.5)
        await send(ws, group.pk, "@tester what do you think?")
        frames = await receive_until(ws, reply_ended)
    assert frames[-1]["message"]["text"] == "At your service."
    (request,) = fake_anthropic.requests
    sent = str(request.body["messages"])
    assert "what do you think" in sent and "Nobody in particular" in sent
    assert "secret from before" not in sent  # it only remembers what it witnessed


async def test_context_trimming_is_reported(alice, character, fake_anthropic, settle):
    @database_sync_to_async
    def long_history() -> int:
        character.context_budget = 300
        character.save()
        conversation = Conversation.objects.create(
            kind="character", character=character, created_by=alice
        )
        Membership.objects.create(user=alice, conversation=conversation)
        for seq in range(1, 41):
            Message.objects.create(
                conversation=conversation,
                seq=seq,
                role="user",
                sender_user=alice,
                client_id=str(seq),
                text=f"Message number {seq} with some padding text.",
            )
        conversation.last_seq = 40
        conversation.save()
        return conversation.pk

    conversation = await long_history()
    fake_anthropic.script(ok("I forget the beginning."))
    async with ws_session(alice) as (ws, _):
        await ws.send_json_to({"type": "conversation:join", "conversation": conversation})
        await ws.receive_json_from(timeout=5)
        await send(ws, conversation, "Do you remember message one?")
        final = (await receive_until(ws, reply_ended))[-1]["message"]
    context = final["metadata"]["context"]
    assert context["trimmed"] is True
    assert context["messages_used"] < context["messages_total"]
    assert "Message number 1 " not in str(fake_anthropic.requests[-1].body["messages"])


def test_group_links_are_unique(db, make_user, character):
    owner = make_user()
    group = Conversation.objects.create(kind="group", title="g", created_by=owner)
    ConversationCharacter.objects.create(conversation=group, character=character)
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        ConversationCharacter.objects.create(conversation=group, character=character)


async def first_delta_of_a_reply(alice) -> tuple[dict, float, list[dict]]:
    """Send a message to the character: (the reply's first `message:stream`, seconds from
    the reply's `message:receive` to it, every frame from it to the reply's end)."""
    async with ws_session(alice) as (ws, _):
        conversation = (await join_character(ws))["conversation"]["id"]
        await send(ws, conversation, "Quick")
        await receive_until(
            ws, lambda f: f["type"] == "message:receive" and f["message"]["role"] == "assistant"
        )
        started = asyncio.get_running_loop().time()
        first = (await receive_until(ws, lambda f: f["type"] == "message:stream"))[-1]
        waited = asyncio.get_running_loop().time() - started
        return first, waited, [first, *await receive_until(ws, reply_ended)]


async def test_a_first_delta_that_arrives_during_a_stop_poll_is_not_held(
    alice, character, fake_anthropic, settle, settings, monkeypatch
):
    # The relay polls the stop flag every 0.2 s until the first delta; made slow here, the
    # poll is still running when the first token arrives (0.3 s), and the relay must then
    # send it at once, not after a coalescing window.
    from chat.livestate import LiveState

    settings.PARLEY_STREAM_FLUSH_MS = 1500
    fake_anthropic.script(ok("Ahoy! " * 20, chunk_size=6, latency_s=0.3, delay_s=0.1))
    real_aget = LiveState.aget

    async def slow_aget(self, key):
        await asyncio.sleep(0.25)
        return await real_aget(self, key)

    monkeypatch.setattr(LiveState, "aget", slow_aget)
    first, waited, _ = await first_delta_of_a_reply(alice)
    assert first["offset"] == 0 and first["delta"].startswith("Ahoy! ")
    assert waited < 1.0, waited  # held for the window, it would come after ~1.7 s


async def test_the_first_delta_is_not_held_for_the_coalescing_window(
    alice, character, fake_anthropic, settle, settings
):
    # A window far longer than the provider's first token: only later deltas wait for it.
    settings.PARLEY_STREAM_FLUSH_MS = 1500
    fake_anthropic.script(ok("Ahoy! " * 10, chunk_size=6, delay_s=0.05))
    first, waited, frames = await first_delta_of_a_reply(alice)
    assert (first["offset"], first["delta"]) == (0, "Ahoy! ")
    assert waited < 0.75, waited
    # The rest is still coalesced: 10 chunks over ~0.5 s, one window.
    deltas = [f for f in frames if f["type"] == "message:stream"]
    assert len(deltas) <= 3, [d["delta"] for d in deltas]
    assert stitch("", frames, first["message_id"]) == "Ahoy! " * 10

"""Starting a reply (`chat.replies.reply_start`): few statements, the same decisions
as a full read of the conversation, whatever the length of its history."""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import FieldError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import replies
from chat.livestate import live_state
from chat.models import Conversation, Message
from chat.services import conversation_open_with_character, message_post
from tests.fake_anthropic import ok

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chat_with(make_user, character, settings):
    """(user, conversation) with the character; replies are started by hand here."""
    settings.PARLEY_CHARACTER_REPLIES = False
    user = make_user(display_name="Alice")
    character.is_public = True
    character.save()
    conversation, _ = conversation_open_with_character(user=user, slug=character.slug)
    return user, conversation


def post(user, conversation, text: str) -> Message:
    return message_post(
        user=user, conversation_id=conversation.pk, client_id=uuid.uuid4().hex, text=text
    ).message


def start(conversation, character):
    return replies.reply_start(conversation_id=conversation.pk, character_id=character.pk)


def finish(job) -> None:
    replies.reply_finish(job=job, outcome=replies._Outcome(text="Noted."))


def statements(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]


def test_a_reply_starts_in_four_statements(chat_with, character):
    user, conversation = chat_with
    for n in range(5):
        post(user, conversation, f"Message {n}")
        if n < 4:
            finish(start(conversation, character))
    with CaptureQueriesContext(connection) as captured:
        job = start(conversation, character)
    assert job is not None
    # Lock the conversation (with its character), read the window, take the seq, insert.
    assert len(statements(captured.captured_queries)) == 4, statements(captured.captured_queries)
    assert job.request.turns[-1].text == "Message 4"
    assert job.answers_through == job.message.seq - 1
    finish(job)


def test_a_long_window_is_read_without_a_model_instance_per_message(
    chat_with, character, monkeypatch
):
    """The window is read under the conversation's lock and holds up to
    PARLEY_CONTEXT_MAX_MESSAGES messages: as plain records, not model instances (those
    cost twice the query's own time in a long conversation)."""
    user, conversation = chat_with
    for n in range(30):
        post(user, conversation, f"Message {n}")
        finish(start(conversation, character))
    post(user, conversation, "And now?")
    built = []
    init = Message.__init__

    def counted(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Message, "__init__", counted)
    job = start(conversation, character)
    monkeypatch.undo()
    assert job is not None
    assert built == [job.message]  # only the reply it stores
    # The same context as from model instances: the newest turns last, the character's
    # own replies as its turns, every stored message counted.
    assert [(t.role, t.text) for t in job.request.turns[-4:]] == [
        ("assistant", "Noted."),
        ("user", "Message 29"),
        ("assistant", "Noted."),
        ("user", "And now?"),
    ]
    stored = Message.objects.filter(conversation=conversation).exclude(pk=job.message.pk)
    assert job.context.messages_total == stored.count() >= 61
    assert job.answers_through == job.message.seq - 1
    finish(job)


def test_a_reply_start_leaves_its_window_to_reference_counting(chat_with, character):
    """Nothing of what a reply start reads ends up in a reference cycle: a window of
    hundreds of messages left for the garbage collector made the collections that
    paused the server (an exception caught inside the query builder keeps its frames,
    and their locals, alive until a collection)."""
    user, conversation = chat_with
    for n in range(5):
        post(user, conversation, f"Message {n}")
        finish(start(conversation, character))
    post(user, conversation, "And now?")
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        job = start(conversation, character)
        gc.collect()
        cyclic = [
            type(o).__name__
            for o in gc.garbage
            # (Redis handshakes that this old Redis refuses leave exceptions of their own:
            # redis-py's, on each new connection of a test's throwaway event loop.)
            if isinstance(o, (replies.WindowMessage, FieldError))
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert job is not None
    assert cyclic == []
    finish(job)


def test_a_streaming_reply_older_than_the_window_still_blocks_and_is_reaped_when_dead(
    chat_with, character, settings
):
    settings.PARLEY_CONTEXT_MAX_MESSAGES = 3
    user, conversation = chat_with
    post(user, conversation, "First")
    streaming = start(conversation, character).message
    for n in range(6):  # the streaming reply falls out of the window of 3
        post(user, conversation, f"Meanwhile {n}")
    assert start(conversation, character) is None  # its text is live: it streams

    live_state().delete(replies._partial_key(streaming.pk))
    Message.objects.filter(pk=streaming.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.PARLEY_REPLY_STALE_S + 5)
    )
    job = start(conversation, character)
    assert job is not None
    streaming.refresh_from_db()
    assert streaming.status == "failed"
    assert streaming.metadata["error"]["code"] == "interrupted"
    # It answers everything since the last reply that finished (the greeting).
    assert job.answers_through == job.message.seq - 1
    assert [t.role for t in job.request.turns] == ["user"]
    assert "Meanwhile 5" in job.request.turns[-1].text
    assert "First" not in job.request.turns[-1].text  # outside the window of 3
    finish(job)


def test_pending_messages_before_the_window_are_still_answered(chat_with, character, settings):
    settings.PARLEY_CONTEXT_MAX_MESSAGES = 2
    user, conversation = chat_with
    first = post(user, conversation, "Oldest unanswered")
    for n in range(4):
        post(user, conversation, f"Then {n}")
    job = start(conversation, character)
    assert job is not None
    assert job.answers_through == job.message.seq - 1
    assert job.context.messages_used == 2
    finish(job)
    # Answered: nothing more to do, though the reply's answer lies before the window.
    assert start(conversation, character) is None
    assert first.seq < job.message.seq - 2


def test_a_group_reply_to_an_old_character_message_is_seen_beyond_the_window(
    make_user, character, settings
):
    from chat.services import conversation_add_character, conversation_create_group

    settings.PARLEY_CHARACTER_REPLIES = False
    owner = make_user()
    group = conversation_create_group(creator=owner, title="Crew", member_usernames=[])
    conversation_add_character(user=owner, conversation_id=group.pk, slug=character.slug)
    post(owner, group, "@tester hello")
    job = start(group, character)
    finish(job)
    settings.PARLEY_CONTEXT_MAX_MESSAGES = 2
    for n in range(3):
        post(owner, group, f"chatter {n}")
    message_post(
        user=owner,
        conversation_id=group.pk,
        client_id=uuid.uuid4().hex,
        text="About what you said",
        reply_to_id=job.message.pk,
    )
    second = start(group, character)
    assert second is not None
    assert "About what you said" in second.request.turns[-1].text
    finish(second)
    assert Conversation.objects.get(pk=group.pk).last_seq == second.message.seq


@pytest.mark.parametrize("redis", [True, False])
def test_appended_text_is_rewritten_whole_when_its_key_expired(settings, redis):
    from chat.livestate import LiveState

    state = LiveState(settings.REDIS_URL if redis else "", f"test-{uuid.uuid4().hex}")

    async def run():
        state.set("k", "Hello", ttl=30)
        assert await state.aappend("k", ", world", total="Hello, world", ttl=30, flag="f") is None
        assert state.get_many(["k"]) == {"k": "Hello, world"}
        state.delete("k")  # expired
        state.set("f", "1", ttl=30)
        assert await state.aappend("k", "!", total="Hello, world!", ttl=30, flag="f") == "1"
        assert state.get_many(["k"]) == {"k": "Hello, world!"}
        state.delete("k", "f")

    asyncio.run(run())


@pytest.mark.replies
def test_the_reply_is_started_before_the_message_post_returns(
    make_user, character, offline_provider
):
    # Started on commit in the caller's thread, not queued as a task to start later:
    # by the time the sender has its answer, the reply is stored and announced.
    import time

    user = make_user()
    character.is_public = True
    character.save()
    conversation, _ = conversation_open_with_character(user=user, slug=character.slug)
    posted = post(user, conversation, "Hello there")
    reply = Message.objects.filter(conversation=conversation, seq=posted.seq + 1).first()
    assert reply is not None and reply.role == "assistant"
    assert reply.metadata["answers_through"] == posted.seq
    deadline = time.monotonic() + 10  # its stream runs in the background: let it end
    while reply.status == "streaming" and time.monotonic() < deadline:
        time.sleep(0.05)
        reply.refresh_from_db()
    assert reply.status == "complete"


def _wait_for_the_request(fake) -> bool:
    """Whether the provider got a request within 5 s (from a thread of reply_start)."""
    import time

    deadline = time.monotonic() + 5
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(fake.requests)


async def test_the_provider_is_asked_before_the_reply_is_stored(
    chat_with, character, fake_anthropic, monkeypatch
):
    # The reply's seq, insert, commit and broadcasts overlap the provider's latency.
    from chat import services
    from chat.tasks import bind_server_loop

    user, conversation = chat_with
    await asyncio.to_thread(post, user, conversation, "Hello")
    bind_server_loop()  # this test's loop plays the server's
    seen: list[bool] = []
    real_next_seq = services.next_seq

    def next_seq(**kwargs):  # the reply's seq is taken only once the provider has the request
        seen.append(_wait_for_the_request(fake_anthropic))
        return real_next_seq(**kwargs)

    monkeypatch.setattr(services, "next_seq", next_seq)
    job = await asyncio.to_thread(start, conversation, character)
    assert seen == [True]
    outcome = await replies._stream(job)
    assert (outcome.status, outcome.text) == ("complete", "Hello from the fake model.")
    await asyncio.to_thread(replies.reply_finish, job=job, outcome=outcome)


async def test_a_start_that_fails_after_asking_the_provider_cancels_the_request(
    chat_with, character, fake_anthropic, monkeypatch
):
    from django.db import DatabaseError

    from chat import services
    from chat.tasks import bind_server_loop

    user, conversation = chat_with
    await asyncio.to_thread(post, user, conversation, "Hello")
    bind_server_loop()
    fake_anthropic.script(ok("A long answer " * 50, delay_s=0.05))
    begun: list[replies.ProviderStream] = []
    real_begin = replies.ProviderStream.begin

    def begin(provider, request):
        begun.append(real_begin(provider, request))
        return begun[-1]

    def failing_next_seq(**kwargs):
        _wait_for_the_request(fake_anthropic)
        raise DatabaseError("the database went away")

    monkeypatch.setattr(replies.ProviderStream, "begin", staticmethod(begin))
    monkeypatch.setattr(services, "next_seq", failing_next_seq)
    with pytest.raises(DatabaseError):
        await asyncio.to_thread(start, conversation, character)
    (stream,) = begun
    assert stream.cancelled
    with pytest.raises(asyncio.CancelledError):
        await stream.task
    assert stream.outcome.text != "A long answer " * 50  # cut short, never relayed
    streaming = Message.objects.filter(conversation=conversation, status="streaming")
    assert not await asyncio.to_thread(streaming.exists)  # the start rolled back

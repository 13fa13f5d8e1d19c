"""Character replies: started after a user's message commits, streamed to every socket
of the conversation, stored as they go, and never tied to the socket that asked.

A reply is a Message with status `streaming` from the moment it starts (its seq
follows the messages it answers); a partial unique index makes it the lock that
allows one reply at a time per conversation on every server process. While it
streams, its text so far lives in the cache (Redis in production), so a socket that
joins on any process gets it in `conversation:joined`; deltas follow as
`message:stream` with their `offset` (in Unicode code points). When the reply ends,
the message is updated (`complete`, `stopped` or `failed`) and broadcast as
`message:update`; messages that arrived meanwhile are then answered together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from characters.context import ContextInfo, build_reply_request
from characters.llm import get_provider
from characters.llm.base import ProviderError, ReplyDone, ReplyRequest, TextDelta
from characters.models import Character
from chat import broadcast, selectors
from chat.db import db_sync_to_async
from chat.events import MessageStream, ReceiptUpdate, TypingIndicator, UserRef
from chat.livestate import live_state
from chat.models import Conversation, ConversationCharacter, Generation, Message
from chat.rendering import render_markdown
from chat.tasks import spawn, submit

logger = logging.getLogger(__name__)

_MENTION = re.compile(r"(?<![\w@])@([a-z0-9][a-z0-9_-]{0,63})", re.IGNORECASE)
_RETRY: Any = object()  # reply_run: no reply started yet, start one


def _partial_key(message_id: int) -> str:
    return f"reply:partial:{message_id}"


def _stop_key(message_id: int) -> str:
    return f"reply:stop:{message_id}"


def character_ref(character: Character) -> UserRef:
    return UserRef(id=character.pk, name=character.name, type="character")


# --- Who answers


def characters_addressed(
    *,
    conversation_id: int,
    kind: str,
    character_id: int | None,
    text: str,
    reply_to_id: int | None,
) -> list[int]:
    """The characters a user's message asks to answer: the character of a character
    conversation; in a group, those @mentioned or replied to."""
    if not settings.PARLEY_CHARACTER_REPLIES:
        return []
    return characters_spoken_to(
        conversation_id=conversation_id,
        kind=kind,
        character_id=character_id,
        text=text,
        reply_to_id=reply_to_id,
    )


def characters_spoken_to(
    *,
    conversation_id: int,
    kind: str,
    character_id: int | None,
    text: str,
    reply_to_id: int | None,
) -> list[int]:
    """`characters_addressed`, whether or not replies are on (usage quotas charge the
    characters a message speaks to)."""
    if kind == Conversation.Kind.CHARACTER:
        return [character_id] if character_id else []
    slugs = {m.lower() for m in _MENTION.findall(text)}
    replied_to = None
    if reply_to_id is not None:
        replied_to = (
            Message.objects.filter(pk=reply_to_id, role=Message.Role.ASSISTANT)
            .values_list("sender_character_id", flat=True)
            .first()
        )
    if not slugs and replied_to is None:
        return []
    links = ConversationCharacter.objects.filter(conversation_id=conversation_id)
    return [
        link.character_id
        for link in links.select_related("character")
        if link.character.slug in slugs or link.character_id == replied_to
    ]


def may_address_characters(*, text: str, reply_to_id: int | None) -> bool:
    """False when a group message certainly speaks to no character (no @mention, no
    reply): then `characters_spoken_to` is empty without asking the database."""
    return reply_to_id is not None or _MENTION.search(text) is not None


def replies_request_on_commit(*, conversation_id: int, character_ids: list[int]) -> None:
    for character_id in character_ids:
        transaction.on_commit(
            partial(_reply_request, conversation_id=conversation_id, character_id=character_id)
        )


def _reply_request(*, conversation_id: int, character_id: int) -> None:
    """On commit of the message a character answers: start the reply right here, in the
    thread (and on the connection) that stored the message, then stream it as a
    background task of the server. Started from that task instead, through the thread
    pool, the start queued behind every database call queued meanwhile (in a burst of
    sends, all of the burst). Nothing to start (another reply streams): that reply's
    task answers this message when it ends."""
    try:
        job = reply_start(conversation_id=conversation_id, character_id=character_id)
    except Exception:  # the message is stored: its sender must not see an error
        logger.exception("Starting a reply in conversation %s failed", conversation_id)
        job = _RETRY
    if job is not None:
        spawn(reply_run, conversation_id=conversation_id, character_id=character_id, job=job)


# --- Starting a reply (one short transaction)


@dataclass(frozen=True)
class ReplyJob:
    message: Message
    character: Character
    request: ReplyRequest
    context: ContextInfo
    answers_through: int
    user_id: int | None
    provider_stream: ProviderStream | None = None  # started by reply_start


def _witnessed_since(conversation: Conversation, character: Character) -> int:
    if conversation.kind == Conversation.Kind.CHARACTER:
        return 0
    link = ConversationCharacter.objects.filter(
        conversation=conversation, character=character
    ).first()
    return link.joined_seq if link else conversation.last_seq


class _UserName(NamedTuple):
    username: str
    display_name: str


class _CharacterName(NamedTuple):
    name: str


@dataclass(slots=True)
class WindowMessage:
    """A message as a reply's start reads it: what the context (`characters.context`,
    which reads `sender_user` / `sender_character` names) and the pending check need.
    Plain records, not model instances: a window holds up to
    PARLEY_CONTEXT_MAX_MESSAGES messages, read under the conversation's lock, and model
    instances cost twice the time of the query itself (7 ms for 400)."""

    pk: int
    seq: int
    role: str
    kind: str
    status: str
    text: str
    answers_through: int | None  # of a character's reply: the last seq it answered
    created_at: datetime
    deleted_at: datetime | None
    reply_to_id: int | None
    sender_user_id: int | None
    sender_character_id: int | None
    sender_user: _UserName | None
    sender_character: _CharacterName | None


# Spelled out: `values_list("metadata__answers_through")` resolves the key by first
# failing to find such a field, and the FieldError it raises and catches keeps the
# frames, and with them the window just read, in a reference cycle (garbage that only a
# collection frees: the long pauses of reply starts in long conversations).
_ANSWERS_THROUGH = KeyTransform("answers_through", "metadata")

# The record's own fields, in its order, then the senders' names.
_WINDOW_FIELDS = (
    "pk",
    "seq",
    "role",
    "kind",
    "status",
    "text",
    "answers_through",
    "created_at",
    "deleted_at",
    "reply_to_id",
    "sender_user_id",
    "sender_character_id",
    "sender_user__username",
    "sender_user__display_name",
    "sender_character__name",
)


def _window(conversation: Conversation, since: int) -> tuple[int, list[WindowMessage]]:
    """(first, messages): in one query, ascending, every message after seq `first` (the
    newest PARLEY_CONTEXT_MAX_MESSAGES the character witnessed; seqs are gap-free, so
    that is a seq range) and any reply still streaming, however old."""
    first = max(since, conversation.last_seq - settings.PARLEY_CONTEXT_MAX_MESSAGES)
    rows = (
        Message.objects.filter(
            Q(seq__gt=first) | Q(status=Message.Status.STREAMING), conversation=conversation
        )
        .order_by("seq")
        .annotate(answers_through=_ANSWERS_THROUGH)
        .values_list(*_WINDOW_FIELDS)
    )
    messages = []
    for *own, username, display_name, character_name in rows:
        message = WindowMessage(*own, sender_user=None, sender_character=None)
        if message.sender_user_id is not None:
            message.sender_user = _UserName(username, display_name)
        if message.sender_character_id is not None:
            message.sender_character = _CharacterName(character_name)
        messages.append(message)
    return first, messages


def _pending(
    conversation: Conversation,
    character: Character,
    since: int,
    first: int,
    window: list[WindowMessage],
) -> list[WindowMessage | Message]:
    """User messages addressed to the character that no reply of it has answered yet.
    Read from the window (every message after seq `first`); the database is asked only
    when the answer lies before it (a long group conversation)."""
    last = next(
        (
            (m.seq, m.answers_through)
            for m in reversed(window)
            if m.sender_character_id == character.pk and m.status != Message.Status.STREAMING
        ),
        None,
    )
    if last is None and first > since:
        last = (
            Message.objects.filter(conversation=conversation, sender_character=character)
            .exclude(status=Message.Status.STREAMING)
            .order_by("-seq")
            .annotate(answers_through=_ANSWERS_THROUGH)
            .values_list("seq", "answers_through")
            .first()
        )
    answered = max(since, (last[0] if last[1] is None else last[1]) if last else 0)
    if answered >= first:
        waiting = [
            m
            for m in window
            if m.seq > answered and m.role == Message.Role.USER and m.deleted_at is None
        ]
    else:
        waiting = list(
            Message.objects.filter(
                conversation=conversation,
                role=Message.Role.USER,
                seq__gt=answered,
                deleted_at__isnull=True,
            ).order_by("seq")
        )
    if conversation.kind == Conversation.Kind.CHARACTER:
        return waiting
    # In a group: those that @mention the character or reply to one of its messages.
    targets = {m.reply_to_id for m in waiting if m.reply_to_id}
    by_pk = {m.pk: m for m in window}
    replied = {
        pk for pk in targets if pk in by_pk and by_pk[pk].sender_character_id == character.pk
    }
    if older := [pk for pk in targets if pk not in by_pk]:
        replied |= set(
            Message.objects.filter(pk__in=older, sender_character=character).values_list(
                "pk", flat=True
            )
        )
    return [
        m
        for m in waiting
        if m.reply_to_id in replied
        or character.slug in {s.lower() for s in _MENTION.findall(m.text)}
    ]


def _reap_dead_reply(seen: WindowMessage | None) -> bool:
    """True if a reply is streaming. A reply whose process died (its partial text
    expired from the cache) is marked failed, so the conversation is not stuck."""
    if seen is None:
        return False
    grace = timezone.now() - timedelta(seconds=settings.PARLEY_REPLY_STALE_S)
    if live_state().get_many([_partial_key(seen.pk)]) or seen.created_at > grace:
        return True
    streaming = selectors.messages_qs().get(pk=seen.pk)
    streaming.status = Message.Status.FAILED
    streaming.metadata = {
        **streaming.metadata,
        "error": {"code": "interrupted", "message": "The reply was interrupted."},
    }
    streaming.save(update_fields=["status", "metadata"])
    broadcast.message_updated_on_commit(streaming)
    return False


def reply_start(*, conversation_id: int, character_id: int) -> ReplyJob | None:
    """Store the reply as a `streaming` message and announce it, or None when there is
    nothing to answer or another reply is streaming in this conversation.

    One transaction of four statements in a character conversation: lock the
    conversation (with its character), read the window of messages (context, what is
    pending, any reply streaming), take the seq, insert the reply."""
    from chat.services import character_message_create

    provider = get_provider()
    provider_stream: ProviderStream | None = None
    try:
        with transaction.atomic():
            conversation = (
                Conversation.objects.select_for_update(of=("self",))
                .select_related("character")
                .filter(pk=conversation_id)
                .first()
            )
            if conversation is None:
                return None
            if conversation.character_id == character_id:
                character = conversation.character
            else:
                character = Character.objects.filter(pk=character_id).first()
                if character is None:
                    return None
            since = _witnessed_since(conversation, character)
            first, window = _window(conversation, since)
            streaming = next((m for m in window if m.status == Message.Status.STREAMING), None)
            if _reap_dead_reply(streaming):
                return None
            pending = _pending(conversation, character, since, first, window)
            if not pending:
                return None
            history = [m for m in window if m.seq > since and m is not streaming]
            try:
                request, context = build_reply_request(
                    character=character,
                    messages=history[-settings.PARLEY_CONTEXT_MAX_MESSAGES :],
                    group=conversation.kind == Conversation.Kind.GROUP,
                )
            except ValueError:
                return None  # nothing left that a reply could answer
            # Under the lock, with every streaming reply in the window, nothing can refuse
            # the reply now: ask the provider at once, so that storing and announcing the
            # reply overlap the provider's latency instead of preceding it.
            provider_stream = ProviderStream.begin(provider, request)
            answers_through = pending[-1].seq
            # No savepoint: under the conversation's lock, with every streaming reply
            # of it in the window, the partial unique index cannot refuse this one.
            message = character_message_create(
                conversation=conversation,
                character=character,
                text="",
                status=Message.Status.STREAMING,
                metadata={
                    "answers_through": answers_through,
                    "provider": provider.name,
                    "offline": provider.offline,
                    "context": context.as_dict(),
                },
            )
            live_state().set(_partial_key(message.pk), "", ttl=settings.PARLEY_REPLY_STALE_S)
            who = character_ref(character)
            broadcast.frame_on_commit(
                conversation_id=conversation.pk,
                frame=ReceiptUpdate(
                    conversation=conversation.pk,
                    user=who,
                    delivered_seq=answers_through,
                    read_seq=answers_through,
                ),
            )
            broadcast.frame_on_commit(
                conversation_id=conversation.pk,
                frame=TypingIndicator(conversation=conversation.pk, user=who, is_typing=True),
            )
    except BaseException as error:
        if provider_stream is not None:
            provider_stream.cancel()
        if isinstance(error, IntegrityError):
            return None  # a reply started meanwhile after all (the index keeps it to one)
        raise
    return ReplyJob(
        message=message,
        character=character,
        request=request,
        context=context,
        answers_through=answers_through,
        user_id=pending[-1].sender_user_id,
        provider_stream=provider_stream,
    )


# --- Streaming


@dataclass
class _Outcome:
    text: str = ""
    status: str = Message.Status.COMPLETE
    error: ProviderError | None = None
    done: ReplyDone | None = None
    first_token_ms: int | None = None
    total_ms: int = 0
    asked_at: float = 0.0  # monotonic time the provider was asked; both times count from it


class ProviderStream:
    """A reply's request to the provider, read into an `_Outcome` by a task of the
    server's loop. `reply_start` begins it from its thread before the reply is stored;
    `_stream` relays from it (and starts it, when there was no loop to begin it on)."""

    def __init__(self, provider, request: ReplyRequest) -> None:
        self.provider, self.request = provider, request
        self.outcome = _Outcome()
        self.task: asyncio.Task | None = None
        self.first: asyncio.Future | None = None  # resolved by the first text
        self.cancelled = False

    @classmethod
    def begin(cls, provider, request: ReplyRequest) -> ProviderStream:
        """From any thread: start it on the server's loop as soon as the loop gets to it."""
        stream = cls(provider, request)
        submit(stream._start_soon)
        return stream

    async def _start_soon(self) -> None:
        self.start()

    def start(self) -> None:
        """On the loop; once."""
        if self.task is not None or self.cancelled:
            return
        self.first = asyncio.get_running_loop().create_future()
        self.outcome.asked_at = time.monotonic()
        self.task = asyncio.create_task(
            _consume(self.provider, self.request, self.outcome, self.first)
        )
        if self.cancelled:  # cancelled from a thread meanwhile
            self.task.cancel()

    def cancel(self) -> None:
        """From any thread: the reply was not stored after all."""
        self.cancelled = True
        task = self.task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs
                task.get_loop().call_soon_threadsafe(task.cancel)


async def _consume(
    provider, request: ReplyRequest, outcome: _Outcome, first: asyncio.Future
) -> None:
    """Read the provider's stream into `outcome`. Per token only an append: `_stream`
    publishes on its own clock. `first` is resolved by the first text."""
    try:
        async for event in provider.stream(request):
            if isinstance(event, TextDelta):
                if outcome.first_token_ms is None:
                    outcome.first_token_ms = int((time.monotonic() - outcome.asked_at) * 1000)
                    first.set_result(None)
                outcome.text += event.text
            elif isinstance(event, ReplyDone):
                outcome.done = event
    except ProviderError as error:
        outcome.status, outcome.error = Message.Status.FAILED, error
    except Exception as error:  # a provider bug must end the reply, not hang it
        logger.exception("Provider %s failed", provider.name)
        outcome.status = Message.Status.FAILED
        outcome.error = ProviderError("provider_error", str(error) or type(error).__name__)


async def _stream(job: ReplyJob) -> _Outcome:
    """Relay the provider's deltas: the first at once, then whatever arrived, once per
    flush interval, until the stream ends or a stop is requested (checked with each
    delta, and every 0.2 s while none comes)."""
    provider = get_provider()
    message = job.message
    flush_s = settings.PARLEY_STREAM_FLUSH_MS / 1000
    live = live_state()
    loop = asyncio.get_running_loop()
    last_check = time.monotonic()
    source = job.provider_stream or ProviderStream(provider, job.request)
    source.start()  # if reply_start could not (no loop to begin it on)
    consumer, first, outcome = source.task, source.first, source.outcome
    sent = 0  # code points already broadcast

    async def flush() -> bool:
        """Publish what arrived since the last flush; True if a stop was requested."""
        nonlocal sent, last_check
        if len(outcome.text) == sent:
            if time.monotonic() - last_check < 0.15:  # polled about every 0.2 s
                return False
            last_check = time.monotonic()
            return bool(await live.aget(_stop_key(message.pk)))
        delta = outcome.text[sent:]
        frame = MessageStream(
            conversation=message.conversation_id,
            message_id=message.pk,
            seq=message.seq,
            delta=delta,
            offset=sent,
        )
        sent = len(outcome.text)
        last_check = time.monotonic()
        # Store before publishing: a socket joining now gets in its snapshot every
        # delta it subscribed too late to receive. One round trip appends the delta,
        # renews the text's TTL and reads the stop flag.
        stop = await live.aappend(
            _partial_key(message.pk),
            delta,
            total=outcome.text,
            ttl=settings.PARLEY_REPLY_STALE_S,
            flag=_stop_key(message.pk),
        )
        # Queued, not awaited: the layer publishes in call order (chat/layers.py).
        await broadcast.aconversation_send(
            conversation_id=message.conversation_id, frame=frame, wait=False
        )
        return bool(stop)

    stopped = False
    try:
        while True:
            ended = consumer.done()  # before the flush: nothing can arrive after it
            flushed = loop.time()
            if await flush():
                stopped = True
                break
            if ended:
                break
            if sent:  # the next flush, flush_s after this one began
                await asyncio.wait((consumer,), timeout=max(0.0, flushed + flush_s - loop.time()))
            else:
                # The first delta goes out the moment it arrives, also when it arrived
                # during this flush's poll of the stop flag (then this returns at once).
                await asyncio.wait(
                    (consumer, first), timeout=0.2, return_when=asyncio.FIRST_COMPLETED
                )
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    if stopped:
        outcome.status = Message.Status.STOPPED
        await flush()  # what arrived before the stream was closed is kept, and sent
    outcome.total_ms = int((time.monotonic() - outcome.asked_at) * 1000)
    return outcome


def reply_finish(*, job: ReplyJob, outcome: _Outcome) -> Message:
    message = job.message
    metadata = dict(message.metadata)
    done = outcome.done
    usage = done.usage if done else None
    metadata.update(
        model=done.model if done else job.request.model,
        stop_reason=done.stop_reason if done else None,
        time_to_first_token_ms=outcome.first_token_ms,
        total_ms=outcome.total_ms,
        usage={
            "input_tokens": usage.input_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
            "cache_read_tokens": usage.cache_read_tokens if usage else 0,
            "cache_write_tokens": usage.cache_write_tokens if usage else 0,
        },
    )
    if outcome.error is not None:
        metadata["error"] = {"code": outcome.error.code, "message": outcome.error.message}
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(
            text=outcome.text,
            html=render_markdown(outcome.text),
            status=outcome.status,
            metadata=metadata,
        )
        message.refresh_from_db()
        Generation.objects.create(
            message=message,
            conversation_id=message.conversation_id,
            character=job.character,
            user_id=job.user_id,
            provider=message.metadata.get("provider", ""),
            model=metadata["model"] or "",
            status=outcome.status,
            error_code=outcome.error.code if outcome.error else "",
            time_to_first_token_ms=outcome.first_token_ms,
            total_ms=outcome.total_ms,
            **metadata["usage"],
        )
        broadcast.message_updated_on_commit(message)
        broadcast.frame_on_commit(
            conversation_id=message.conversation_id,
            frame=TypingIndicator(
                conversation=message.conversation_id,
                user=character_ref(job.character),
                is_typing=False,
            ),
        )
    live_state().delete(_partial_key(message.pk), _stop_key(message.pk))
    return message


async def reply_run(
    *, conversation_id: int, character_id: int, job: ReplyJob | None = _RETRY
) -> None:
    """Answer what is waiting (`job`: a reply already started), then whatever arrived
    meanwhile, one reply at a time."""
    while True:
        if job is _RETRY:
            job = await db_sync_to_async(reply_start)(
                conversation_id=conversation_id, character_id=character_id
            )
        if job is None:
            return
        try:
            outcome = await _stream(job)
        except BaseException:
            outcome = _Outcome(
                status=Message.Status.FAILED,
                error=ProviderError("provider_error", "The reply was interrupted."),
            )
            await db_sync_to_async(reply_finish)(job=job, outcome=outcome)
            raise
        await db_sync_to_async(reply_finish)(job=job, outcome=outcome)
        job = _RETRY


# --- Stopping, and joining mid-reply


def reply_stop(*, conversation_id: int) -> int | None:
    """Ask the streaming reply of the conversation to stop, on whichever process it
    runs; it keeps its partial text. The id of that reply, or None."""
    message_id = (
        Message.objects.filter(conversation_id=conversation_id, status=Message.Status.STREAMING)
        .values_list("pk", flat=True)
        .first()
    )
    if message_id is not None:
        live_state().set(_stop_key(message_id), "1", ttl=settings.PARLEY_REPLY_STALE_S)
    return message_id


def partial_texts(message_ids: list[int]) -> dict[int, str]:
    """The text so far of replies still streaming."""
    found = live_state().get_many([_partial_key(i) for i in message_ids])
    return {i: found[_partial_key(i)] for i in message_ids if _partial_key(i) in found}

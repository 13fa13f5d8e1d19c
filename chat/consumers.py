"""The websocket protocol (contract sections 1-5): one socket per device, every
conversation the user joins multiplexed over it. Thin: parse, validate, call a
service, send the typed frame back."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from chat import inbound, presence, selectors, services
from chat.auth import CLOSE_UNAUTHENTICATED, seconds_left
from chat.broadcast import conversation_group, user_group
from chat.connections import registry
from chat.db import db_sync_to_async
from chat.dispatch import dispatch_many
from chat.events import (
    ConversationLeft,
    ErrorFrame,
    ErrorOut,
    Frame,
    MessageReceive,
    MessageStatus,
    Pong,
    SessionReady,
    SessionUser,
)
from chat.payloads import message_out
from chat.receipts import batcher as receipt_batcher
from chat.typists import relay as typing_relay
from config.errors import ApplicationError

logger = logging.getLogger(__name__)

# What sending on a socket that is already closing raises: daphne's (autobahn's) own
# error, or the OSError subclass the ASGI spec asks of other servers.
SOCKET_GONE = (Disconnected, OSError)


def _echoable(value: object) -> str | None:
    """`value` if it can be echoed back in a frame (a string that is valid UTF-8, so
    not one with a lone surrogate from a `\\ud800` escape), else None."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _oversized_send(text: str) -> dict | None:
    """The `message:send` in a frame over the size limit, so that it still gets its
    `message:status` (guarantee 1); None for any other frame. Only a frame that names
    the type is parsed, and daphne caps frames at 1 MiB."""
    if '"message:send"' not in text:
        return None
    try:
        content = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(content, dict) and content.get("type") == "message:send":
        return content
    return None


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def __call__(self, scope, receive, send):
        # Channels' own loop, with a cheaper wait for the next message (chat/dispatch.py).
        if not settings.PARLEY_LEAN_DISPATCH:
            return await super().__call__(scope, receive, send)
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        # The layer of this loop itself, when it has one: not a proxy call per message.
        get_loop_layer = getattr(self.channel_layer, "_get_layer", None)
        layer = get_loop_layer() if get_loop_layer is not None else self.channel_layer
        self.channel_receive = functools.partial(layer.receive, self.channel_name)
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            await dispatch_many([receive, self.channel_receive], self.dispatch)

    async def dispatch(self, message):
        # Channels >= 4.2 hops to a thread before every handler to close stale DB
        # connections; our DB work goes through database_sync_to_async, which already
        # does that, so skip the hop (it costs a large share of throughput).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- Connection lifecycle

    async def connect(self) -> None:
        self.user = self.scope["user"]
        self.auth = self.scope["auth"]
        # conversation id -> highest seq this socket has been sent
        self.cursors: dict[int, int] = {}
        self._expiry: asyncio.TimerHandle | None = None
        await self.accept(subprotocol=self.auth.subprotocol)
        await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
        registry.add(self)
        left = seconds_left(self.auth)
        if left is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                max(left, 0), lambda: asyncio.ensure_future(self.close(code=CLOSE_UNAUTHENTICATED))
            )
        await self.send_frame(
            SessionReady(
                user=SessionUser(
                    id=self.user.pk,
                    username=self.user.username,
                    display_name=self.user.display_name,
                ),
                heartbeat_s=settings.PARLEY_HEARTBEAT_S,
                server_time=timezone.now(),
            )
        )
        await presence.tracker.socket_opened(self)

    async def disconnect(self, code: int) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        registry.discard(self)
        await typing_relay.socket_closed(self)
        await receipt_batcher.socket_closed(self.user.pk)
        await presence.tracker.socket_closed(self)
        for conversation_id in list(self.cursors):
            await self.channel_layer.group_discard(
                conversation_group(conversation_id), self.channel_name
            )
        await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)

    async def websocket_disconnect(self, message) -> None:
        # As Channels does, minus its thread hop to close DB connections (see dispatch).
        if hasattr(self, "user"):
            await self.disconnect(message["code"])
        raise StopConsumer()

    # --- Inbound frames

    async def websocket_receive(self, message) -> None:
        text = message.get("text")
        if text is None:
            return await self.send_error("bad_request", "Binary frames are not supported.")
        limit = settings.PARLEY_MAX_FRAME_BYTES
        if len(text) > limit or (
            len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
        ):
            error = ApplicationError("too_large", f"Frames are limited to {limit} bytes.")
            if (send := _oversized_send(text)) is not None:
                client_id = _echoable(send.get("client_id"))
                return await self.fail(
                    error, frame_type="message:send", content=send, client_id=client_id
                )
            return await self.send_error(error.code, error.message)
        try:
            content = json.loads(text)
        except (ValueError, RecursionError):
            return await self.send_error("bad_request", "A frame must be valid JSON.")
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            return await self.send_error(
                "bad_request", "A frame must be a JSON object with a string `type`."
            )
        frame_type = content["type"]
        client_id = _echoable(content.get("client_id"))
        schema = inbound.INBOUND.get(frame_type)
        if schema is None:
            return await self.send_error(
                "unknown_type",
                f"Unknown frame type {frame_type[:64]!r}.",
                ref=_echoable(frame_type[:64]),
                client_id=client_id,
            )
        try:
            frame = schema.model_validate(content)
        except ValidationError as exc:
            error = ApplicationError("bad_request", inbound.describe(exc))
            return await self.fail(
                error, frame_type=frame_type, content=content, client_id=client_id
            )
        handler = self.HANDLERS[frame_type]
        try:
            await handler(self, frame)
        except ApplicationError as error:
            await self.fail(error, frame_type=frame_type, content=content, client_id=client_id)
        except Exception:
            logger.exception("Unhandled error in %s for user %s", frame_type, self.user.pk)
            error = ApplicationError("server_error", "Something went wrong on our side.")
            await self.fail(error, frame_type=frame_type, content=content, client_id=client_id)

    async def fail(
        self, error: ApplicationError, *, frame_type: str, content: dict, client_id: str | None
    ) -> None:
        if frame_type == "message:send":
            # Every message:send gets exactly one message:status (guarantee 1).
            conversation = content.get("conversation")
            await self.send_frame(
                MessageStatus(
                    conversation=conversation if type(conversation) is int else None,
                    client_id=client_id,
                    message_id=None,
                    seq=None,
                    status="failed",
                    error=ErrorOut(code=error.code, message=error.message),
                )
            )
        await self.send_error(error.code, error.message, ref=frame_type, client_id=client_id)

    async def on_ping(self, frame: inbound.Ping) -> None:
        try:
            text = Pong(t=frame.t).to_text()
        except PydanticSerializationError as exc:
            raise ApplicationError("bad_request", "`t` cannot be echoed back.") from exc
        await self.send(text_data=text)

    async def on_join(self, frame: inbound.ConversationJoin) -> None:
        conversation_id = frame.conversation
        if conversation_id is None and frame.character is not None:
            conversation, _ = await db_sync_to_async(services.conversation_open_with_character)(
                user=self.user, slug=frame.character
            )
            conversation_id = conversation.pk
        elif conversation_id is None:
            raise ApplicationError("bad_request", "Give either `conversation` or `character`.")
        group = conversation_group(conversation_id)
        # Subscribe before the snapshot, so nothing committed in between is missed;
        # the cursor then drops what the snapshot already holds.
        await self.channel_layer.group_add(group, self.channel_name)
        try:
            joined = await db_sync_to_async(services.conversation_join)(
                user=self.user, conversation_id=conversation_id, since=frame.since
            )
        except BaseException:
            if conversation_id not in self.cursors:
                await self.channel_layer.group_discard(group, self.channel_name)
            raise
        self.cursors[conversation_id] = joined.last_seq
        await self.send_frame(joined)

    async def on_leave(self, frame: inbound.ConversationLeave) -> None:
        await typing_relay.stop(self, frame.conversation)
        if self.cursors.pop(frame.conversation, None) is not None:
            await self.channel_layer.group_discard(
                conversation_group(frame.conversation), self.channel_name
            )
        await self.send_frame(ConversationLeft(conversation=frame.conversation))

    async def on_send(self, frame: inbound.MessageSend) -> None:
        result = await db_sync_to_async(services.message_post)(
            user=self.user,
            conversation_id=frame.conversation,
            client_id=frame.client_id,
            text=frame.text,
            kind=frame.kind,
            reply_to_id=frame.reply_to,
            attachment_id=frame.attachment,
        )
        await self.send_frame(
            MessageStatus(
                conversation=frame.conversation,
                client_id=frame.client_id,
                message_id=result.message.pk,
                seq=result.message.seq,
                status="sent",
                duplicate=not result.created,
            )
        )

    async def on_stop(self, frame: inbound.GenerationStop) -> None:
        stopped = await db_sync_to_async(services.generation_stop)(
            user=self.user, conversation_id=frame.conversation
        )
        if stopped is None:
            raise ApplicationError("not_found", "No reply is being generated.")
        # The reply answers with message:update (status "stopped") when it has stopped.

    async def _member_of(self, conversation_id: int) -> None:
        """Membership is known for a joined conversation; else ask (`not_found`)."""
        if conversation_id not in self.cursors:
            await db_sync_to_async(selectors.membership_get)(
                user_id=self.user.pk, conversation_id=conversation_id
            )

    async def on_receipt(self, frame: inbound.Receipt) -> None:
        # Written in batches (chat/receipts.py); `receipt:update` answers if it moved.
        await self._member_of(frame.conversation)
        read = frame.type == "message:read"
        receipt_batcher.add(
            conversation_id=frame.conversation,
            user_id=self.user.pk,
            user_name=self.user.name,
            delivered_seq=0 if read else frame.seq,
            read_seq=frame.seq if read else 0,
            origin=self.channel_name,
        )

    async def on_typing(self, frame: inbound.Typing) -> None:
        if frame.type == "typing:stop":
            return await typing_relay.stop(self, frame.conversation)
        await self._member_of(frame.conversation)
        await typing_relay.start(self, frame.conversation)

    async def on_presence(self, frame: inbound.PresenceSet) -> None:
        await presence.tracker.status_set(self, frame.status)

    HANDLERS: dict[str, Callable[..., Awaitable[None]]] = {
        "ping": on_ping,
        "conversation:join": on_join,
        "conversation:leave": on_leave,
        "message:send": on_send,
        "generation:stop": on_stop,
        "message:delivered": on_receipt,
        "message:read": on_receipt,
        "typing:start": on_typing,
        "typing:stop": on_typing,
        "presence:set": on_presence,
    }

    # --- Channel layer events

    async def parley_frame(self, event: dict) -> None:
        if (
            event.get("exclude_user") == self.user.pk  # typing: for the others only
            or event.get("exclude_channel") == self.channel_name  # receipts: we sent it
        ):
            return
        conversation_id = event["conversation"]
        cursor = self.cursors.get(conversation_id)
        if cursor is None:
            return  # left meanwhile
        seq = event["seq"]
        if seq is None:
            return await self.send(text_data=event["text"])
        if seq <= cursor:
            return  # already sent (snapshot, gap fill or a duplicate delivery)
        if seq > cursor + 1:
            # The layer lost or reordered something: the database has it.
            await self._fill_gap(conversation_id, after=cursor, before=seq)
        self.cursors[conversation_id] = seq
        await self.send(text_data=event["text"])

    async def _fill_gap(self, conversation_id: int, *, after: int, before: int) -> None:
        while after < before - 1:
            page = await db_sync_to_async(selectors.message_page)(
                conversation_id=conversation_id,
                after=after,
                before=before,
                limit=settings.PARLEY_RESUME_LIMIT,
            )
            if not page.messages:
                return
            for message in page.messages:
                await self.send_frame(MessageReceive(message=message_out(message)))
            after = page.messages[-1].seq
            self.cursors[conversation_id] = after

    async def parley_close(self, event: dict) -> None:
        await self.close(code=event["code"])

    async def parley_user_frame(self, event: dict) -> None:
        # Frames about the user rather than one conversation (usage:update, presence).
        await self.send(text_data=event["text"])

    # --- Outbound

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        try:
            if text_data is not None and not close:
                # Every frame comes this way: straight to the server, skipping the two
                # layers of Channels' send that would build the same message.
                await self.base_send({"type": "websocket.send", "text": text_data})
            else:
                await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except SOCKET_GONE:
            # Either side began the closing handshake while a frame was on its way: the
            # frame is moot. Raising would kill the consumer, and with it the cleanup
            # that the websocket.disconnect, which follows, runs (groups, registry).
            logger.debug("Frame to closing socket %s dropped", self.channel_name)

    async def send_frame(self, frame: Frame) -> None:
        await self.send(text_data=frame.to_text())

    async def send_error(
        self, code: str, message: str, *, ref: str | None = None, client_id: str | None = None
    ) -> None:
        await self.send_frame(ErrorFrame(code=code, message=message, ref=ref, client_id=client_id))

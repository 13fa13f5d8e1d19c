"""Fan-out over the channel layer. Frames are encoded once per event, not per socket.

Everything here is called from `transaction.on_commit`, so a rolled-back change
never reaches a client.
"""

from __future__ import annotations

import asyncio
from functools import partial

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from chat.events import Frame, MessageReceive, MessageUpdate
from chat.models import Message
from chat.payloads import message_out
from chat.tasks import submit

FRAME_EVENT = "parley.frame"
CLOSE_EVENT = "parley.close"
USER_FRAME_EVENT = "parley.user_frame"  # a frame for every socket of one user


def conversation_group(conversation_id: int) -> str:
    return f"conv.{conversation_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def _group_send(group: str, event: dict) -> None:
    # Handed to the server's loop without waiting: the committing thread goes back to
    # work at once. Tasks start in submission order, so publishes keep their order.
    layer = get_channel_layer()
    if not submit(layer.group_send, group, event):
        async_to_sync(layer.group_send)(group, event)


def conversation_send(*, conversation_id: int, frame: Frame, seq: int | None = None) -> None:
    """Send a frame to every socket joined to the conversation. `seq` marks frames that
    carry a new message: sockets use it to keep order and fill gaps from the database."""
    _group_send(
        conversation_group(conversation_id),
        {"type": FRAME_EVENT, "conversation": conversation_id, "seq": seq, "text": frame.to_text()},
    )


async def aconversation_send(
    *, conversation_id: int, frame: Frame, exclude_user: int | None = None, wait: bool = True
) -> None:
    """`conversation_send` for async code (streaming), for frames without a seq. With
    `exclude_user`, that user's own sockets drop the frame (typing indicators). Without
    `wait`, returns before Redis has it (publishes still go out in call order)."""
    event = {
        "type": FRAME_EVENT,
        "conversation": conversation_id,
        "seq": None,
        "text": frame.to_text(),
    }
    if exclude_user is not None:
        event["exclude_user"] = exclude_user
    group = conversation_group(conversation_id)
    if wait:
        await get_channel_layer().group_send(group, event)
    else:
        _group_send(group, event)


def frame_on_commit(*, conversation_id: int, frame: Frame) -> None:
    transaction.on_commit(partial(conversation_send, conversation_id=conversation_id, frame=frame))


def frames_on_commit(items: list[tuple[int, Frame, str | None]]) -> None:
    """Many (conversation id, frame, channel to leave out) to send on commit, in one
    Redis round trip (receipts: one flush moves many members' markers). The socket of
    that channel, if any, is not handed its copy (it reported what the frame says)."""
    if items:
        transaction.on_commit(partial(_many_send, items))


def _many_send(items: list[tuple[int, Frame, str | None]]) -> None:
    events = []
    for cid, frame, exclude_channel in items:
        event = {"type": FRAME_EVENT, "conversation": cid, "seq": None, "text": frame.to_text()}
        if exclude_channel is not None:
            event["exclude_channel"] = exclude_channel
        events.append((conversation_group(cid), event))
    if not submit(_agroup_send_many, events):
        async_to_sync(_agroup_send_many)(events)


async def _agroup_send_many(events: list[tuple[str, dict]]) -> None:
    # Started together, they leave in one pipelined round trip (chat/layers.py).
    layer = get_channel_layer()
    await asyncio.gather(*(layer.group_send(group, event) for group, event in events))


def message_updated_on_commit(message: Message) -> None:
    frame_on_commit(
        conversation_id=message.conversation_id, frame=MessageUpdate(message=message_out(message))
    )


def message_created_on_commit(message: Message) -> None:
    frame = MessageReceive(message=message_out(message))
    transaction.on_commit(
        partial(
            conversation_send, conversation_id=message.conversation_id, frame=frame, seq=message.seq
        )
    )


def user_send(*, user_id: int, frame: Frame) -> None:
    """Send a frame to every socket of the user, on every server process."""
    _group_send(user_group(user_id), {"type": USER_FRAME_EVENT, "text": frame.to_text()})


def user_frame_on_commit(*, user_id: int, frame: Frame) -> None:
    transaction.on_commit(partial(user_send, user_id=user_id, frame=frame))


async def ausers_send(*, user_ids: list[int], frame: Frame) -> None:
    """Send one frame to every socket of each user (presence): encoded once, one
    publish per user, concurrently."""
    layer = get_channel_layer()
    event = {"type": USER_FRAME_EVENT, "text": frame.to_text()}
    await asyncio.gather(*(layer.group_send(user_group(uid), event) for uid in user_ids))


def user_disconnect_on_commit(*, user_id: int, code: int) -> None:
    """Close every socket of the user, on every server process."""
    transaction.on_commit(
        partial(_group_send, user_group(user_id), {"type": CLOSE_EVENT, "code": code})
    )

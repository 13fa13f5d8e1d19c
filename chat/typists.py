"""Typing indicators: relayed, never stored.

The state lives with the typist's sockets, in their server process: per user and
conversation, the sockets currently typing, when a start was last relayed, and a
timer that ends the typing after `PARLEY_TYPING_TIMEOUT_S` of silence. No other
process needs it, so nothing is shared (a user typing in two tabs on two processes
is relayed by each).

- `typing:start` is relayed when the user was not typing, then at most once every
  `PARLEY_TYPING_RELAY_S` while starts keep coming (a burst costs one frame; a member
  who joins mid-typing still learns of it);
- `typing:stop`, leaving the conversation, closing the socket or the silence timer
  relay `is_typing: false` once the user's last typing socket there is done.

Frames go to the conversation's group and carry `exclude_user`, so the typist's own
sockets drop them (see `ChatConsumer.parley_frame`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings

from chat.broadcast import aconversation_send
from chat.events import TypingIndicator, UserRef
from chat.tasks import spawn

if TYPE_CHECKING:
    from chat.consumers import ChatConsumer

Key = tuple[int, int]  # (user id, conversation id)


@dataclass
class _Typist:
    who: UserRef
    sockets: set[ChatConsumer] = field(default_factory=set)
    relayed_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


async def _relay(key: Key, who: UserRef, is_typing: bool) -> None:
    user_id, conversation_id = key
    await aconversation_send(
        conversation_id=conversation_id,
        frame=TypingIndicator(conversation=conversation_id, user=who, is_typing=is_typing),
        exclude_user=user_id,
        wait=False,  # queued in order; the typist's next frame need not wait for Redis
    )


class TypingRelay:
    """The typists of this server process."""

    def __init__(self) -> None:
        self._typists: dict[Key, _Typist] = {}
        self._by_socket: dict[ChatConsumer, set[Key]] = {}

    def is_typing(self, *, user_id: int, conversation_id: int) -> bool:
        return (user_id, conversation_id) in self._typists

    async def start(self, consumer: ChatConsumer, conversation_id: int) -> None:
        key = (consumer.user.pk, conversation_id)
        loop = asyncio.get_running_loop()
        typist = self._typists.get(key)
        relay = typist is None
        if typist is None:
            who = UserRef(id=consumer.user.pk, name=consumer.user.name, type="user")
            typist = self._typists[key] = _Typist(who=who)
        typist.sockets.add(consumer)
        self._by_socket.setdefault(consumer, set()).add(key)
        if typist.timer is not None:
            typist.timer.cancel()
        typist.timer = loop.call_later(settings.PARLEY_TYPING_TIMEOUT_S, self._expire, key)
        now = loop.time()
        if relay or now - typist.relayed_at >= settings.PARLEY_TYPING_RELAY_S:
            typist.relayed_at = now
            await _relay(key, typist.who, True)

    async def stop(self, consumer: ChatConsumer, conversation_id: int) -> None:
        key = (consumer.user.pk, conversation_id)
        keys = self._by_socket.get(consumer)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_socket[consumer]
        await self._leave(key, consumer)

    async def socket_closed(self, consumer: ChatConsumer) -> None:
        for key in self._by_socket.pop(consumer, ()):
            await self._leave(key, consumer)

    async def _leave(self, key: Key, consumer: ChatConsumer) -> None:
        typist = self._typists.get(key)
        if typist is None or consumer not in typist.sockets:
            return
        typist.sockets.discard(consumer)
        if not typist.sockets:
            await self._end(key)

    async def _end(self, key: Key) -> None:
        typist = self._forget(key)
        if typist is not None:
            await _relay(key, typist.who, False)

    def _forget(self, key: Key) -> _Typist | None:
        typist = self._typists.pop(key, None)
        if typist is None:
            return None
        if typist.timer is not None:
            typist.timer.cancel()
        for consumer in typist.sockets:
            keys = self._by_socket.get(consumer)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_socket[consumer]
        return typist

    def _expire(self, key: Key) -> None:
        # Forget at once (a start in the same instant begins a new typing), relay after.
        typist = self._forget(key)
        if typist is not None:
            spawn(_relay, key=key, who=typist.who, is_typing=False)


relay = TypingRelay()

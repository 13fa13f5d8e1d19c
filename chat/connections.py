"""The sockets open in this server process, and a sweeper that closes those whose user
was deactivated: one query per process per sweep, not one per socket. (Deactivation
also closes sockets at once through the channel layer; the sweep is the safety net
for when that message is lost.)"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from django.conf import settings

from chat.auth import CLOSE_FORBIDDEN
from chat.db import db_sync_to_async

if TYPE_CHECKING:
    from chat.consumers import ChatConsumer

logger = logging.getLogger(__name__)


@db_sync_to_async
def _inactive_user_ids(user_ids: list[int]) -> set[int]:
    from accounts.models import User

    active = set(User.objects.filter(pk__in=user_ids, is_active=True).values_list("pk", flat=True))
    return set(user_ids) - active


class ConnectionRegistry:
    def __init__(self) -> None:
        self.by_user: dict[int, set[ChatConsumer]] = defaultdict(set)
        self._sweeper: asyncio.Task | None = None

    def add(self, consumer: ChatConsumer) -> None:
        self.by_user[consumer.user.pk].add(consumer)
        loop = asyncio.get_running_loop()
        if self._sweeper is None or self._sweeper.done() or self._sweeper.get_loop() is not loop:
            self._sweeper = loop.create_task(self._sweep_forever())

    def discard(self, consumer: ChatConsumer) -> None:
        sockets = self.by_user.get(consumer.user.pk)
        if sockets is not None:
            sockets.discard(consumer)
            if not sockets:
                del self.by_user[consumer.user.pk]

    def count(self) -> int:
        return sum(len(s) for s in self.by_user.values())

    async def sweep(self) -> None:
        if not self.by_user:
            return
        for user_id in await _inactive_user_ids(list(self.by_user)):
            for consumer in list(self.by_user.get(user_id, ())):
                await consumer.close(code=CLOSE_FORBIDDEN)

    async def _sweep_forever(self) -> None:
        while self.by_user:
            await asyncio.sleep(settings.PARLEY_AUTH_SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                logger.exception("Connection sweep failed")


registry = ConnectionRegistry()

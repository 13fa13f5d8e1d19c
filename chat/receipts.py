"""Receipt markers from the sockets of this server process, written in batches.

A client sends `message:delivered` for what it receives and `message:read` for what it
shows, often one frame per message. Writing each would cost a transaction per frame;
instead every marker is merged here (per member and conversation: the highest seq
wins) and all of them are written together by `services.receipts_apply` at most every
`PARLEY_RECEIPT_FLUSH_MS`: one transaction of two statements per process and period,
however many sockets and markers. The last marker always lands: a flush picks up
whatever arrived meanwhile, a failed flush keeps its markers for the next one, and a
closing socket flushes its user's markers at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from django.conf import settings

from chat import services
from chat.db import db_sync_to_async
from chat.services import ReceiptMark

logger = logging.getLogger(__name__)

Key = tuple[int, int]  # (conversation id, user id)


def _merged(old: ReceiptMark | None, new: ReceiptMark) -> ReceiptMark:
    if old is None:
        return new
    return replace(
        old,
        delivered_seq=max(old.delivered_seq, new.delivered_seq),
        read_seq=max(old.read_seq, new.read_seq),
        origin=old.origin if old.origin == new.origin else None,
    )


class ReceiptBatcher:
    def __init__(self) -> None:
        self._pending: dict[Key, ReceiptMark] = {}
        self._task: asyncio.Task | None = None

    def add(self, mark: ReceiptMark) -> None:
        key = (mark.conversation_id, mark.user_id)
        self._pending[key] = _merged(self._pending.get(key), mark)
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._flush_periodically())

    def pending_for(self, user_id: int) -> bool:
        return any(uid == user_id for _, uid in self._pending)

    async def _flush_periodically(self) -> None:
        while self._pending:
            await asyncio.sleep(settings.PARLEY_RECEIPT_FLUSH_MS / 1000)
            await self.flush()

    async def flush(self) -> None:
        marks, self._pending = list(self._pending.values()), {}
        if not marks:
            return
        try:
            await db_sync_to_async(services.receipts_apply)(marks=marks)
        except Exception:
            logger.exception("Writing %d receipt markers failed; retrying", len(marks))
            for mark in marks:  # under anything newer that arrived meanwhile
                key = (mark.conversation_id, mark.user_id)
                self._pending[key] = _merged(self._pending.get(key), mark)
            self._schedule()

    async def socket_closed(self, user_id: int) -> None:
        if self.pending_for(user_id):
            await self.flush()


batcher = ReceiptBatcher()

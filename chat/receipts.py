"""Receipt markers from the sockets of this server process, written in batches.

A client sends `message:delivered` for what it receives and `message:read` for what it
shows, often one frame per message. Writing each would cost a transaction per frame;
instead every marker is merged here (per member and conversation: the highest seq
wins) and all of them are written together by `services.receipts_apply` at most every
`PARLEY_RECEIPT_FLUSH_MS`: one statement per process and period,
however many sockets and markers. The last marker always lands: a flush picks up
whatever arrived meanwhile, a failed flush keeps its markers for the next one, and a
closing socket flushes its user's markers at once.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from chat import services
from chat.db import db_sync_to_async
from chat.services import ReceiptMark

logger = logging.getLogger(__name__)

Key = tuple[int, int]  # (conversation id, user id)


class ReceiptBatcher:
    def __init__(self) -> None:
        # key -> [user name, delivered_seq, read_seq, origin]: plain and mutable, since
        # this runs for every marker frame (two per message received)
        self._pending: dict[Key, list] = {}
        self._task: asyncio.Task | None = None

    def add(
        self,
        *,
        conversation_id: int,
        user_id: int,
        user_name: str,
        delivered_seq: int = 0,
        read_seq: int = 0,
        origin: str | None = None,
    ) -> None:
        key = (conversation_id, user_id)
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = [user_name, delivered_seq, read_seq, origin]
        else:
            entry[1] = max(entry[1], delivered_seq)
            entry[2] = max(entry[2], read_seq)
            if entry[3] != origin:
                entry[3] = None  # several sockets reported: tell them all
        self._schedule()

    def _schedule(self) -> None:
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    def pending_for(self, user_id: int) -> bool:
        return any(uid == user_id for _, uid in self._pending)

    async def _flush_periodically(self) -> None:
        while self._pending:
            await asyncio.sleep(settings.PARLEY_RECEIPT_FLUSH_MS / 1000)
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        marks = [
            ReceiptMark(
                conversation_id=cid,
                user_id=uid,
                user_name=name,
                delivered_seq=delivered,
                read_seq=read,
                origin=origin,
            )
            for (cid, uid), (name, delivered, read, origin) in pending.items()
        ]
        try:
            await db_sync_to_async(services.receipts_apply)(marks=marks)
        except Exception:
            logger.exception("Writing %d receipt markers failed; retrying", len(marks))
            for m in marks:  # under anything newer that arrived meanwhile
                self.add(
                    conversation_id=m.conversation_id,
                    user_id=m.user_id,
                    user_name=m.user_name,
                    delivered_seq=m.delivered_seq,
                    read_seq=m.read_seq,
                    origin=m.origin,
                )

    async def socket_closed(self, user_id: int) -> None:
        if self.pending_for(user_id):
            await self.flush()


batcher = ReceiptBatcher()

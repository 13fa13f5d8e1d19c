"""What a consumer's main loop does, for less: `channels.utils.await_many_dispatch`
without its per-message `asyncio.wait` and task.

Channels waits for the next message of a socket with `asyncio.wait` over two fresh
tasks (one reading the server's queue, one the channel layer's) and starts a new task
for each message handled. In a profile of the load test with typing and receipts on
(where most frames are small and each wakes its consumer), that bookkeeping was about
a seventh of the server's CPU. Here each source has one long-lived task that moves its
messages into the consumer's inbox, and the consumer handles them in arrival order, one
at a time, as Channels does. Cancelling the source tasks at the end is what Channels
does too (the channel layer unsubscribes the consumer's channel then).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable


async def dispatch_many(
    sources: list[Callable[[], Awaitable[dict]]], dispatch: Callable[[dict], Awaitable[None]]
) -> None:
    """Handle what `sources` yield, in arrival order, until `dispatch` raises (a
    `StopConsumer` ends the consumer) or a source does."""
    loop = asyncio.get_running_loop()
    inbox: deque[dict] = deque()
    failed: list[BaseException] = []
    wakeup: asyncio.Future | None = None

    def wake() -> None:
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def pump(source: Callable[[], Awaitable[dict]]) -> None:
        try:
            while True:
                inbox.append(await source())
                wake()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            failed.append(exc)
            wake()

    pumps = [loop.create_task(pump(source)) for source in sources]
    try:
        while True:
            while inbox:
                await dispatch(inbox.popleft())
            if failed:
                raise failed[0]
            wakeup = loop.create_future()
            await wakeup
            wakeup = None
    finally:
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await task

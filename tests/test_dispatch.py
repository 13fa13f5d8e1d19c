"""The consumer's main loop (chat/dispatch.py): what Channels' await_many_dispatch does,
for less. No database or Redis needed."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import StopConsumer

from chat.dispatch import dispatch_many


class Source:
    """A queue read as a consumer reads the server or the layer; notes its cancellation."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    async def __call__(self) -> dict:
        try:
            return await self.queue.get()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_messages_are_handled_one_at_a_time_in_arrival_order_until_stop():
    server, layer = Source(), Source()
    handled: list[str] = []
    busy = False

    async def dispatch(message: dict) -> None:
        nonlocal busy
        assert not busy, "two messages handled at once"
        busy = True
        await asyncio.sleep(0.001)  # a handler that awaits: the next must wait
        handled.append(message["n"])
        busy = False
        if message["n"] == "stop":
            raise StopConsumer()

    runner = asyncio.create_task(dispatch_many([server, layer], dispatch))
    for n in ("a", "b"):
        server.queue.put_nowait({"n": n})
    await asyncio.sleep(0.01)
    layer.queue.put_nowait({"n": "c"})
    server.queue.put_nowait({"n": "d"})
    await asyncio.sleep(0.01)
    server.queue.put_nowait({"n": "stop"})
    with pytest.raises(StopConsumer):
        await asyncio.wait_for(runner, 2)
    assert handled == ["a", "b", "c", "d", "stop"]
    # Both sources were cancelled (the channel layer unsubscribes on that).
    assert server.cancelled and layer.cancelled


async def test_a_failing_source_ends_the_loop_with_its_error_after_what_came_before():
    server = Source()
    handled = []

    async def broken() -> dict:
        await asyncio.sleep(0.01)
        raise ConnectionError("layer gone")

    async def dispatch(message: dict) -> None:
        handled.append(message["n"])

    server.queue.put_nowait({"n": 1})
    with pytest.raises(ConnectionError, match="layer gone"):
        await asyncio.wait_for(dispatch_many([server, broken], dispatch), 2)
    assert handled == [1] and server.cancelled


async def test_cancelling_the_consumer_cancels_its_sources():
    server, layer = Source(), Source()

    async def dispatch(message: dict) -> None:
        pass

    runner = asyncio.create_task(dispatch_many([server, layer], dispatch))
    await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert server.cancelled and layer.cancelled

"""Background work of a server process (character replies) that must outlive the
request or socket that started it.

Services call `spawn()` from wherever they run: a coroutine on the server's event
loop (a consumer), a thread of `database_sync_to_async` or a sync REST view (handed
to the loop the ASGI app runs on), or a plain sync context such as a management
command (a thread with a loop of its own).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None
_running: set[asyncio.Future] = set()  # strong references: the loop keeps only weak ones


def bind_server_loop() -> None:
    global _server_loop
    _server_loop = asyncio.get_running_loop()


class BindServerLoop:
    """ASGI wrapper that remembers the loop the app runs on, for `spawn()`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if _server_loop is not asyncio.get_running_loop():
            bind_server_loop()
        return await self.app(scope, receive, send)


def _track(future: asyncio.Future) -> None:
    _running.add(future)
    future.add_done_callback(_done)


def _done(future: asyncio.Future) -> None:
    _running.discard(future)
    if not future.cancelled() and future.exception() is not None:
        logger.error("Background task failed", exc_info=future.exception())


def submit(func: Callable[..., Awaitable[None]], /, *args, **kwargs) -> bool:
    """Start `func(*args, **kwargs)` as a task of the running loop, or of the server's
    loop when called from one of its threads; never blocks. False when there is no
    loop to run it on (a management command, a plain sync test)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    # A fresh context: the task must not inherit the caller's (asgiref marks the
    # thread of database_sync_to_async in it, and would refuse the task's DB calls).
    if loop is not None:
        _track(loop.create_task(func(*args, **kwargs), context=contextvars.Context()))
        return True
    server_loop = _server_loop
    if server_loop is not None and server_loop.is_running():
        server_loop.call_soon_threadsafe(
            lambda: _track(server_loop.create_task(func(*args, **kwargs))),
            context=contextvars.Context(),
        )
        return True
    return False


def spawn(func: Callable[..., Awaitable[None]], /, **kwargs) -> None:
    """Run `func(**kwargs)` in the background of this process; never blocks."""
    if not submit(func, **kwargs):
        threading.Thread(target=asyncio.run, args=(func(**kwargs),), daemon=True).start()


async def drain(seconds: float = 10.0) -> None:
    """Wait for this loop's background tasks (tests, graceful shutdown)."""
    loop = asyncio.get_running_loop()
    mine = [f for f in _running if f.get_loop() is loop]
    if mine:
        await asyncio.wait(mine, timeout=seconds)

"""Short-lived state shared by every server process: the text so far of streaming
replies and their stop flags. Redis when REDIS_URL is set (asyncio client per event
loop, so the hot path never hops to a thread), else a dict in this process (a single
process is all that runs without Redis)."""

from __future__ import annotations

import asyncio
import threading
import time

import redis
import redis.asyncio as aioredis
from django.conf import settings


class _Local:
    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._data[key] = (value, time.monotonic() + ttl)

    def get_many(self, keys: list[str]) -> dict[str, str]:
        now = time.monotonic()
        found = {}
        with self._lock:
            for key in keys:
                item = self._data.get(key)
                if item is not None and item[1] > now:
                    found[key] = item[0]
        return found

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def append(self, key: str, value: str, ttl: int) -> int:
        with self._lock:
            item = self._data.get(key)
            text = (item[0] if item is not None and item[1] > time.monotonic() else "") + value
            self._data[key] = (text, time.monotonic() + ttl)
            return len(text.encode())


class LiveState:
    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self._local = _Local() if not url else None
        self._sync = redis.Redis.from_url(url, decode_responses=True) if url else None
        self._async: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}

    def _k(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _client(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            for old in [lp for lp in self._async if lp.is_closed()]:
                del self._async[old]
            client = self._async[loop] = aioredis.Redis.from_url(self.url, decode_responses=True)
        return client

    # async, for the streaming loop
    async def aset(self, key: str, value: str, ttl: int) -> None:
        if self._local is not None:
            return self._local.set(key, value, ttl)
        await self._client().set(self._k(key), value, ex=ttl)

    async def aappend(self, key: str, text: str, *, total: str, ttl: int, flag: str) -> str | None:
        """Append `text` to the value at `key`, whose whole value is then `total`, and
        renew its TTL; return the value of `flag` (a stop flag), all in one round trip.
        Rewrites `total` if the appended value came out different (the key had
        expired), so a reader never gets a tail without its start."""
        if self._local is not None:
            if self._local.append(key, text, ttl) != len(total.encode()):
                self._local.set(key, total, ttl)
            return self._local.get_many([flag]).get(flag)
        pipe = self._client().pipeline(transaction=False)
        pipe.append(self._k(key), text)
        pipe.expire(self._k(key), ttl)
        pipe.get(self._k(flag))
        length, _, flagged = await pipe.execute()
        if length != len(total.encode()):
            await self._client().set(self._k(key), total, ex=ttl)
        return flagged

    async def aget(self, key: str) -> str | None:
        if self._local is not None:
            return self._local.get_many([key]).get(key)
        return await self._client().get(self._k(key))

    # sync, for services running in a thread
    def set(self, key: str, value: str, ttl: int) -> None:
        if self._local is not None:
            return self._local.set(key, value, ttl)
        self._sync.set(self._k(key), value, ex=ttl)

    def get_many(self, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        if self._local is not None:
            return self._local.get_many(keys)
        values = self._sync.mget([self._k(k) for k in keys])
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    def delete(self, *keys: str) -> None:
        if self._local is not None:
            return self._local.delete(*keys)
        self._sync.delete(*[self._k(k) for k in keys])


_state: LiveState | None = None


def live_state() -> LiveState:
    global _state
    prefix = f"{settings.CACHES['default'].get('KEY_PREFIX', 'parley')}:live"
    if _state is None or _state.prefix != prefix:
        _state = LiveState(settings.REDIS_URL, prefix)
    return _state

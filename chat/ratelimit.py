"""Rate limits enforced inside services, so that every transport shares one budget: a
user's sends over REST and over any number of sockets on any server process count
against the same counter (in Redis, through Django's cache).

A fixed window per user: `N/period` allows N hits in each window of `period`
(aligned to the epoch). Simple and atomic (SET NX with expiry, then INCR, in one round
trip to Redis); a burst across a window boundary can reach 2N, which is fine for a
flood guard.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import SimpleRateThrottle

_PREFIX = "ratelimit"


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """`"60/min"` -> (60, 60), as DRF's throttles read it; None or "" -> None (off)."""
    if not rate:
        return None
    return SimpleRateThrottle.parse_rate(None, rate)


def retry_after(*, scope: str, ident: str | int, rate: str | None) -> int | None:
    """Count one hit. None if it is within the rate, else the seconds until the
    window ends (the hit still counts: a client hammering stays limited)."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    allowed, period = parsed
    now = time.time()
    window = int(now // period)
    count = _count(f"{_PREFIX}:{scope}:{ident}:{window}", timeout=period + 1)
    if count <= allowed:
        return None
    return max(1, int((window + 1) * period - now + 0.999))


def send_retry_after(*, user_id: int) -> int | None:
    """One message sent by the user (the `send` scope of REST_FRAMEWORK's rates)."""
    rate = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).get("send")
    return retry_after(scope="send", ident=user_id, rate=rate)


def _count(key: str, *, timeout: int) -> int:
    """Increment the window's counter, creating it with its expiry; the new count."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        # One round trip instead of Django's three (add; incr = EXISTS + INCRBY): this
        # runs on every send. Django stores ints unpickled, so the value stays an int.
        full_key = cache.make_and_validate_key(key)
        pipe = cache._cache.get_client(full_key, write=True).pipeline(transaction=False)
        pipe.set(full_key, 0, ex=timeout, nx=True)
        pipe.incr(full_key)
        return pipe.execute()[1]
    cache.add(key, 0, timeout=timeout)  # other backends (LocMemCache without REDIS_URL)
    try:
        return cache.incr(key)
    except ValueError:  # expired between the two calls: a new window
        cache.add(key, 1, timeout=timeout)
        return 1

"""Tuning of the server process itself, applied once it has loaded (config/asgi.py)."""

from __future__ import annotations

import gc

from django.conf import settings
from django.db import connections


def tune_garbage_collector() -> None:
    """Keep full garbage collections rare and small.

    By default Python runs a young collection every 700 allocations, and each one
    promotes whatever is alive at that instant (frames in flight) to the older
    generations. Under load the oldest one fills within seconds, and a full collection
    walks every object of the process (about 300,000 with 1,000 sockets) with the
    event loop stopped: 100-400 ms on the benchmark machine, every few seconds, which
    was the p99 latency of the load tests. Rarer young collections promote far less
    (most objects of a frame are freed by reference counting long before), and freezing
    what exists once the application is loaded (Django, the code, about 130,000
    objects) keeps it out of every later collection."""
    if settings.PARLEY_GC_THRESHOLDS:
        gc.set_threshold(*settings.PARLEY_GC_THRESHOLDS)
    if settings.PARLEY_GC_FREEZE:
        gc.collect()
        gc.freeze()


def close_request_connections(**kwargs) -> None:
    """At the end of an HTTP request, close the database connections of its thread.

    Under ASGI, Django runs each request's sync code in a thread of its own that ends
    with the request, so a persistent connection (`CONN_MAX_AGE`) never serves a second
    request there: it only lingers, open, until the garbage collector finalizes it.
    Under load that exhausted PostgreSQL's `max_connections` (tests/test_processes.py).
    Long-lived threads (the websocket consumers' `database_sync_to_async` pool) keep
    theirs. A connection inside a transaction (a test's) is left alone."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()

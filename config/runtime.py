"""Tuning of the server process itself, applied once it has loaded (config/asgi.py)."""

from __future__ import annotations

import gc

from django.conf import settings


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

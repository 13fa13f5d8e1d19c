"""Parley's server process: daphne, on uvloop when it is installed.

    python -m config.server -b 127.0.0.1 -p 8000 config.asgi:application

Takes daphne's own options. daphne creates its event loop when `daphne.server` is
first imported, so the loop policy has to be set before that, here. uvloop runs the
same asyncio and Twisted code with a loop written in C: the event loop's own overhead
is a large share of the CPU a websocket frame costs (docs/performance.md).
`PARLEY_UVLOOP=0` keeps the standard loop.
"""

from __future__ import annotations

import asyncio
import os


def main() -> None:
    if os.environ.get("PARLEY_UVLOOP", "1").lower() not in ("0", "false", "no", "off"):
        try:
            import uvloop
        except ImportError:  # not installed (e.g. Windows): the standard loop
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import config.asgi  # noqa: F401  (the application: loaded before the collector is tuned)
    from characters.llm import provider_preload
    from config.runtime import tune_garbage_collector

    provider_preload()  # the model provider's SDK too, so that it is frozen with the rest

    # Here, not in config.asgi: a server process's tuning, not every importer's (a
    # test run that keeps cyclic garbage longer keeps its database connections too).
    tune_garbage_collector()
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

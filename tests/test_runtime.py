"""Tuning of the server process (config/runtime.py, config/server.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from config.runtime import tune_garbage_collector

LOOP_PROBE = """
import asyncio, sys
sys.argv = ["daphne", "--help"]
from config import server
try:
    server.main()  # sets the loop policy, then daphne's CLI prints its help and exits
except SystemExit:
    pass
import daphne.server
print(type(daphne.server.twisted_loop).__module__)
"""


def test_the_collector_runs_young_collections_rarely_and_skips_what_is_loaded(settings):
    before = gc.get_threshold()
    settings.PARLEY_GC_THRESHOLDS = (50000, 20, 10)
    settings.PARLEY_GC_FREEZE = True
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == (50000, 20, 10)
        assert gc.get_freeze_count() > 10_000  # Django, the project, the test run
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


FREEZE_PROBE = """
import gc, sys
sys.argv = ["daphne", "--help"]
from config import server
try:
    server.main()
except SystemExit:
    pass
from anthropic.resources.messages import AsyncMessages
print(any(o is AsyncMessages for o in gc.get_objects()))  # False: frozen, never walked
"""


def test_the_server_loads_the_model_sdk_before_freezing_what_is_loaded():
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-probe", PARLEY_GC_FREEZE="1")
    done = subprocess.run(
        [sys.executable, "-c", FREEZE_PROBE], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "False"


def run_probe(env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", LOOP_PROBE], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_the_server_runs_daphne_on_uvloop():
    assert run_probe() == "uvloop"


def test_parley_uvloop_0_keeps_the_standard_loop():
    assert run_probe(dict(os.environ, PARLEY_UVLOOP="0")) == "asyncio.unix_events"

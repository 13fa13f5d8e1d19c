"""What a newcomer does first: clone the repository and `make run`. On a fresh clone of
the committed code, with no DATABASE_URL or REDIS_URL (SQLite and the in-memory layer),
the server must serve the character page and a working websocket.

The clone reuses the virtualenv running the tests (VENV=...) instead of installing
one: what matters is that the committed code runs, and installing needs the network.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import Client, free_port, stop_process_group, wait_for_port

pytestmark = pytest.mark.slow

DEMO_CHARACTERS = ["Ada Lovelace", "Captain Brine", "Sage"]


@dataclass
class Served:
    clone: Path
    port: int
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    top = Path(_git("rev-parse", "--show-toplevel", cwd=Path(__file__).parent))
    clone = tmp_path / "parley"
    _git("clone", "--quiet", str(top), str(clone), cwd=tmp_path)
    venv = Path(sys.prefix)
    port = free_port()
    # A clean environment: no DATABASE_URL, REDIS_URL, DEBUG, SECRET_KEY, nor the
    # MAKEFLAGS of a `make test` around us.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    command = ["make", "run", "HOST=127.0.0.1", f"PORT={port}", f"VENV={venv}"]

    # The checkout is newer than the venv's install stamp, so make would reinstall the
    # shared venv from the clone (and need the network). The venv running these tests
    # stands for an installed one: tell make so, then check that make agrees.
    stamp = venv / ".installed"
    if stamp.exists():
        before = stamp.stat().st_mtime - 1
        os.utime(clone / "pyproject.toml", (before, before))
    plan = subprocess.run(
        [command[0], "--dry-run", *command[1:]],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "pip install" not in plan and " -m venv " not in plan, (
        f"`make run` would reinstall {venv} (not installed by make?); refusing:\n{plan}"
    )

    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(
            port, timeout=60, process=process, describe=lambda: log.read_text(errors="replace")
        )
        yield Served(clone, port, log)
    finally:
        stop_process_group(process)
        print(log.read_text(errors="replace")[-4000:])


async def test_make_run_on_a_fresh_clone_serves_a_page_and_a_websocket(served):
    async with httpx.AsyncClient(base_url=served.http, timeout=10) as http:
        home = await http.get("/")
        assert home.status_code == 200, home.text
        for name in DEMO_CHARACTERS:
            assert name in home.text
        css = await http.get("/static/css/parley.css")
        assert css.status_code == 200
        login = await http.post(
            "/api/auth/token/", json={"username": "demo", "password": "parley-demo"}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access"]

    client = await Client.open(served.ws, token, label="demo")
    try:
        assert client.ready["user"]["username"] == "demo"
        await client.send(type="conversation:join", character="ada")
        joined = await client.expect("conversation:joined")
        assert joined["conversation"]["character"] == "ada"
        greeting = joined["messages"][0]
        assert (greeting["seq"], greeting["sender"]["type"]) == (1, "character")
        conversation = joined["conversation"]["id"]
        await client.send(
            type="message:send", conversation=conversation, client_id="hello-1", text="Hello!"
        )
        # The status and the broadcast, in either order (a character reply may follow).
        status, received = None, None
        while status is None or received is None:
            frame = await client.recv()
            if frame["type"] == "message:status":
                status = frame
            elif frame["type"] == "message:receive" and frame["message"]["seq"] == 2:
                received = frame["message"]
        assert (status["status"], status["seq"]) == ("sent", 2), status
        assert (received["client_id"], received["text"]) == ("hello-1", "Hello!"), received
    finally:
        await client.close()

    # The clone's code ran, not the checkout the venv was installed from: the clone's
    # settings put the database in the clone. `manage.py` (migrate, seed_demo) wrote
    # there too, or the demo login above would have failed.
    with sqlite3.connect(served.clone / "db.sqlite3") as db:
        rows = db.execute(
            "SELECT seq, text FROM chat_message WHERE client_id = ?", ["hello-1"]
        ).fetchall()
    assert rows == [(2, "Hello!")]

"""Real server processes for the slow tests (tests/test_processes.py, tests/test_newcomer.py).

- `ScratchDatabase`: a PostgreSQL database of its own for the server processes
  (pytest-django's test database is emptied between tests, and a non-transactional
  test's rows are never committed where another process could see them).
- `start_daphne` / `Server`: a daphne process on a free port, its output in files.
- `Client`: a real `websockets` client speaking the Parley protocol.
- `django_command`: run Django code in a separate process against a given environment;
  the commands themselves are at the bottom (`python -m tests.servers COMMAND ARGS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# The virtualenv running the tests: its daphne and python serve the code under test.
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen, timeout: float = 5) -> None:
    """SIGTERM the process group the process leads (started with start_new_session),
    SIGKILL whatever is left after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; make sure no child of it outlives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return


def wait_for_port(
    port: int, *, timeout: float, process: subprocess.Popen, describe: Any = None
) -> None:
    """Return once 127.0.0.1:port accepts connections; fail at once if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening on {port}\n"
                + (describe() if describe else "")
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"nothing listens on {port} after {timeout} s\n" + (describe() if describe else "")
            )
        time.sleep(0.05)


# --- PostgreSQL


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class ScratchDatabase:
    """A PostgreSQL database created for the duration of a fixture, next to the one
    DATABASE_URL names (same server and credentials)."""

    def __init__(self, base_url: str) -> None:
        self.name = f"parley_proc_{uuid.uuid4().hex[:10]}"
        self.url = _with_database(base_url, self.name)
        self._admin_url = _with_database(base_url, "postgres")

    def _admin(self, statement: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(self.name)))

    def create(self) -> None:
        self._admin("CREATE DATABASE {}")

    def drop(self) -> None:
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")

    async def rows(self, query: str, params: tuple | list = ()) -> list[tuple]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=10
        ) as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()


# --- Django code in another process


def _run(env: dict[str, str], command: list[str], timeout: float) -> str:
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """`python manage.py ARGS` in a separate process with `env`; its stdout."""
    return _run(env, [str(BIN / "python"), "manage.py", *args], timeout)


def django_command(env: dict[str, str], *args: str, timeout: float = 60) -> Any:
    """`python -m tests.servers COMMAND ARGS` (see the bottom of this module) in a
    separate process with `env`; the JSON it prints."""
    stdout = _run(env, [str(BIN / "python"), "-m", "tests.servers", *args], timeout)
    return json.loads(stdout.strip().splitlines()[-1])


async def adjango_command(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(django_command, env, *args)


# --- Servers


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    access_log: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    def _files(self) -> list[Path]:
        return [p for p in (self.stdout_path, self.stderr_path, self.access_log) if p]

    def mark(self) -> dict[Path, int]:
        """Where each output file ends now: `output(since=mark)` gives what came after."""
        return {path: path.stat().st_size if path.exists() else 0 for path in self._files()}

    def output(self, since: dict[Path, int] | None = None) -> str:
        """Everything the process wrote (stdout carries daphne's default access log)."""
        parts = []
        for path in self._files():
            if path.exists():
                with path.open("rb") as file:
                    file.seek((since or {}).get(path, 0))
                    parts.append(
                        f"--- {self.name} {path.name}\n{file.read().decode(errors='replace')}"
                    )
        return "\n".join(parts)

    def stop(self) -> None:
        stop_process_group(self.process)


def start_daphne(
    name: str,
    *,
    env: dict[str, str],
    log_dir: Path,
    cwd: Path = ROOT,
    access_log: bool = False,
    timeout: float = 20,
) -> Server:
    """Start the server as production does (`python -m config.server`: daphne on uvloop)
    on a free port and wait until it listens. A port taken between choosing and binding
    it is retried with another."""
    for attempt in range(3):
        port = free_port()
        stdout_path = log_dir / f"{name}-{attempt}.stdout"
        stderr_path = log_dir / f"{name}-{attempt}.stderr"
        access_path = log_dir / f"{name}-{attempt}.access.log" if access_log else None
        command = [str(BIN / "python"), "-m", "config.server", "-b", "127.0.0.1", "-p", str(port)]
        if access_path is not None:
            command += ["--access-log", str(access_path)]
        command.append("config.asgi:application")
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
            )
        server = Server(name, port, process, stdout_path, stderr_path, access_path)
        try:
            wait_for_port(port, timeout=timeout, process=process, describe=server.output)
        except RuntimeError:
            server.stop()
            if "Address already in use" in server.output() and attempt < 2:
                continue
            raise
        return server
    raise AssertionError("unreachable")


# --- Websocket client


@dataclass
class Client:
    """One websocket, reading frames on demand. Frames skipped by `expect` are kept in
    `skipped` so that a failure can show what did arrive."""

    ws: Any
    label: str = ""
    ready: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    @classmethod
    async def open(cls, url: str, token: str | None = None, *, label: str = "") -> Client:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await connect(url, additional_headers=headers, open_timeout=10, close_timeout=2)
        client = cls(ws, label=label or url)
        client.ready = await client.expect("session:ready")
        return client

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, seconds: float = 10) -> dict:
        return json.loads(await asyncio.wait_for(self.ws.recv(), seconds))

    async def expect(self, frame_type: str, seconds: float = 10, **match: Any) -> dict:
        """The next frame of this type (and with these field values), skipping others."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                frame = await self.recv(max(left, 0))
            except TimeoutError:
                raise AssertionError(
                    f"{self.label}: no {frame_type} {match or ''} within {seconds} s; "
                    f"got meanwhile: {self.skipped[-10:]}"
                ) from None
            if frame.get("type") == frame_type and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.skipped.append(frame)

    async def join(self, conversation: int, **extra: Any) -> dict:
        await self.send(type="conversation:join", conversation=conversation, **extra)
        return await self.expect("conversation:joined")

    async def close_code(self, seconds: float) -> int | None:
        """Wait for the server to close the socket (reading what comes before); its code."""
        from websockets.exceptions import ConnectionClosed

        try:
            async with asyncio.timeout(seconds):
                while True:
                    self.skipped.append(json.loads(await self.ws.recv()))
        except ConnectionClosed:
            pass
        except TimeoutError:
            raise AssertionError(
                f"{self.label}: still open after {seconds} s; got {self.skipped[-10:]}"
            ) from None
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


# --- HTML forms, as a browser submits them


class _FormFields(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or (not a.get("name") and tag != "option"):
            return
        if tag == "input":
            kind = a.get("type", "text")
            if kind in {"submit", "button", "file", "image", "reset"}:
                return
            if kind in {"checkbox", "radio"} and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select is not None and "selected" in a:
            self.fields.append((self._select, a.get("value", "")))
        elif tag == "textarea":
            self._textarea = a["name"]
            self.fields.append((a["name"], ""))

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            name, text = self.fields.pop()
            self.fields.append((name, text + data))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def form_fields(html: str, form_id: str) -> list[tuple[str, str]]:
    """The (name, value) pairs a browser would submit for the form with this id."""
    parser = _FormFields(form_id)
    parser.feed(html)
    return parser.fields


# --- Commands run in a separate Django process: python -m tests.servers COMMAND ARGS


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def _cmd_users(*usernames: str) -> list[dict]:
    """Create active users without a usable password (no hashing cost); their ids."""
    from accounts.models import User

    return [
        {"id": User.objects.create_user(name, password=None).pk, "username": name}
        for name in usernames
    ]


def _cmd_superuser(username: str, password: str) -> dict:
    from accounts.models import User

    return {"id": User.objects.create_superuser(username, password=password).pk}


def _cmd_deactivate(username: str) -> dict:
    """Deactivate as the admin does: a model save, so the post_save signal fires."""
    from accounts.models import User

    user = User.objects.get(username=username)
    user.is_active = False
    user.save()
    return {"id": user.pk, "is_active": user.is_active}


_COMMANDS = {"users": _cmd_users, "superuser": _cmd_superuser, "deactivate": _cmd_deactivate}


if __name__ == "__main__":
    _setup_django()
    command, *arguments = sys.argv[1:]
    print(json.dumps(_COMMANDS[command](*arguments)))

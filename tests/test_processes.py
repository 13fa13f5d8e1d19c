"""Two real daphne processes on real PostgreSQL and Redis, driven by real websocket
clients: what the contract promises across server processes (sections 1 and 5).

The processes use a scratch database of their own (tests/servers.py), with users made
once per module; each test makes its own conversations. Their auth sweep is set to an
hour, so that a socket closed within seconds proves the channel-layer path.
"""

from __future__ import annotations

import asyncio
import os
import types
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.servers import (
    Client,
    ScratchDatabase,
    Server,
    adjango_command,
    django_command,
    form_fields,
    manage,
    start_daphne,
)

pytestmark = pytest.mark.slow

MEMBERS = [f"member{i}" for i in range(5)]
LONELY = ["doomed", "swept", "expiring", "logged", "slowpoke"]
ADMIN = "root"


def token_for(user_id: int, *, seconds: float | None = None) -> str:
    """An access JWT as POST /api/auth/token/ issues it (same key as the servers)."""
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(types.SimpleNamespace(id=user_id))
    if seconds is not None:
        token.set_exp(lifetime=timedelta(seconds=seconds))
    return str(token)


@dataclass
class Cluster:
    db: ScratchDatabase
    env: dict[str, str]
    a: Server
    b: Server
    user_ids: dict[str, int]
    admin_password: str

    @property
    def servers(self) -> tuple[Server, Server]:
        return self.a, self.b

    def token(self, username: str, *, seconds: float | None = None) -> str:
        return token_for(self.user_ids[username], seconds=seconds)

    async def client(self, server: Server, username: str, label: str = "") -> Client:
        label = label or f"{username}@{server.name}"
        return await Client.open(server.ws, self.token(username), label=label)

    async def group(self, creator: str, *members: str) -> int:
        """A new group conversation, made over REST on process A."""
        async with httpx.AsyncClient(base_url=self.a.http, timeout=10) as http:
            response = await http.post(
                "/api/conversations/",
                json={"title": f"group {uuid.uuid4().hex[:6]}", "members": list(members)},
                headers={"Authorization": f"Bearer {self.token(creator)}"},
            )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def deactivate_in_admin(self, server: Server, username: str) -> None:
        """Untick "Active" on the user's admin page and save, as staff do, on `server`."""
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            await http.get("/admin/login/")
            login = await http.post(
                "/admin/login/",
                data={
                    "username": ADMIN,
                    "password": self.admin_password,
                    "csrfmiddlewaretoken": http.cookies["csrftoken"],
                    "next": "/admin/",
                },
            )
            assert login.status_code == 302, login.text
            url = f"/admin/accounts/user/{self.user_ids[username]}/change/"
            page = await http.get(url)
            assert page.status_code == 200, page.text
            data: dict[str, list[str]] = {}
            for name, value in form_fields(page.text, "user_form"):
                data.setdefault(name, []).append(value)
            assert data.pop("is_active") == ["on"] and data["username"] == [username], data
            saved = await http.post(url, data=data)
            assert saved.status_code == 302, saved.text

    async def stored(self, conversation: int) -> list[tuple]:
        """(seq, id, client_id, sender_user_id) of every stored message, by seq."""
        return await self.db.rows(
            "SELECT seq, id, client_id, sender_user_id FROM chat_message "
            "WHERE conversation_id = %s ORDER BY seq",
            [conversation],
        )

    async def last_seq(self, conversation: int) -> int:
        rows = await self.db.rows(
            "SELECT last_seq FROM chat_conversation WHERE id = %s", [conversation]
        )
        return rows[0][0]


def server_env(db: ScratchDatabase) -> dict[str, str]:
    from django.conf import settings

    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "DATABASE_URL": db.url,
        "REDIS_URL": os.environ["REDIS_URL"],
        "DEBUG": "1",
        # The same key as this process, which mints the test tokens.
        "SECRET_KEY": settings.SECRET_KEY,
        # Redis pub/sub channels are not per database: keep this run's apart.
        "CHANNEL_LAYER_PREFIX": f"parley-proc-{run}",
        "CACHE_KEY_PREFIX": f"parley-proc-{run}",
        "PARLEY_AUTH_SWEEP_S": "3600",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    db = ScratchDatabase(os.environ["DATABASE_URL"])
    db.create()
    servers: list[Server] = []
    try:
        env = server_env(db)
        manage(env, "migrate", "--noinput", "-v0")
        admin_password = uuid.uuid4().hex
        log_dir = tmp_path_factory.mktemp("servers")
        with ThreadPoolExecutor() as pool:  # independent steps, each a process
            users = pool.submit(django_command, env, "users", *MEMBERS, *LONELY)
            admin = pool.submit(django_command, env, "superuser", ADMIN, admin_password)
            starts = [
                pool.submit(start_daphne, "a", env=env, log_dir=log_dir, access_log=True),
                pool.submit(start_daphne, "b", env=env, log_dir=log_dir),
            ]
            servers += [start.result() for start in starts if start.exception() is None]
            for step in (*starts, users, admin):
                step.result()  # the first failure, if any; `finally` stops what started
        user_ids = {u["username"]: u["id"] for u in users.result()}
        yield Cluster(db, env, *servers, user_ids=user_ids, admin_password=admin_password)
    finally:
        for server in servers:
            server.stop()
        db.drop()


@pytest.fixture(autouse=True)
def server_health(cluster) -> Iterator[None]:
    """After each test: both processes still run and logged no traceback meanwhile.
    Their output ends up in a failing test's report (captured teardown output)."""
    marks = {server.name: server.mark() for server in cluster.servers}
    yield
    for server in cluster.servers:
        output = server.output(since=marks[server.name])
        print(output[-4000:])
        assert server.process.poll() is None, f"{server.name} died:\n{output}"
        assert "Traceback" not in output, f"{server.name} logged an error:\n{output}"


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def send_many(client: Client, conversation: int, client_ids: list[str]) -> list[dict]:
    """Send a burst of messages, then read until each has its message:status."""
    for client_id in client_ids:
        await client.send(
            type="message:send",
            conversation=conversation,
            client_id=client_id,
            text=f"text of {client_id}",
        )
    statuses = []
    while len(statuses) < len(client_ids):
        statuses.append(await client.expect("message:status", 30))
    return statuses


async def test_fanout_across_processes_is_complete_and_in_seq_order(cluster):
    """4 clients, 2 per process, each sends 25 messages at once: every socket gets all
    100 messages exactly once, seq 1..100 in order."""
    names = MEMBERS[:4]
    conversation = await cluster.group(*names)
    clients = await asyncio.gather(
        *(cluster.client(cluster.servers[i % 2], name) for i, name in enumerate(names))
    )
    try:
        for client in clients:
            joined = await client.join(conversation)
            assert joined["last_seq"] == 0 and joined["messages"] == []

        async def run(i: int, client: Client) -> tuple[list[dict], list[dict]]:
            for k in range(25):
                await client.send(
                    type="message:send",
                    conversation=conversation,
                    client_id=f"c{i}-{k}",
                    text=f"from {i} #{k}",
                )
            received, statuses = [], []
            async with asyncio.timeout(30):
                while len(received) < 100 or len(statuses) < 25:
                    frame = await client.recv(30)
                    if frame["type"] == "message:receive":
                        received.append(frame["message"])
                    elif frame["type"] == "message:status":
                        statuses.append(frame)
                    else:
                        client.skipped.append(frame)
            # Nothing more (no duplicate) before the answer to a ping sent now.
            await client.send(type="ping", t=f"end-{i}")
            while (frame := await client.recv()).get("type") != "pong":
                assert frame["type"] != "message:receive", f"extra frame {frame}"
            return received, statuses

        results = await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    finally:
        await close_all(clients)

    sent = {f"c{i}-{k}": f"from {i} #{k}" for i in range(4) for k in range(25)}
    all_statuses = []
    for client, (received, statuses) in zip(clients, results, strict=True):
        assert [m["seq"] for m in received] == list(range(1, 101)), client.label
        assert {m["client_id"]: m["text"] for m in received} == sent, client.label
        assert all(s["status"] == "sent" for s in statuses), statuses
        all_statuses += statuses
    assert sorted(s["seq"] for s in all_statuses) == list(range(1, 101))
    # Every socket saw the same message under each seq, the one its sender was told.
    by_seq = {s["seq"]: (s["message_id"], s["client_id"]) for s in all_statuses}
    for received, _ in results:
        assert {m["seq"]: (m["id"], m["client_id"]) for m in received} == by_seq


async def test_concurrent_sends_across_processes_get_gap_free_seqs(cluster):
    """50 sends at once from 10 sockets over both processes: seq 1..50 in the database,
    no gap, no duplicate, each as its sender was told."""
    conversation = await cluster.group(*MEMBERS)
    clients = await asyncio.gather(
        *(
            cluster.client(server, name, label=f"{name}@{server.name}")
            for name in MEMBERS
            for server in cluster.servers
        )
    )
    try:
        for client in clients:
            await client.join(conversation)
        results = await asyncio.gather(
            *(
                send_many(client, conversation, [f"s{n}-{k}" for k in range(5)])
                for n, client in enumerate(clients)
            )
        )
    finally:
        await close_all(clients)

    statuses = [s for batch in results for s in batch]
    assert all(s["status"] == "sent" for s in statuses), statuses
    rows = await cluster.stored(conversation)
    assert [seq for seq, *_ in rows] == list(range(1, 51))
    assert await cluster.last_seq(conversation) == 50
    assert {(s["seq"], s["message_id"], s["client_id"]) for s in statuses} == {
        (seq, message_id, client_id) for seq, message_id, client_id, _ in rows
    }


async def test_retry_on_the_other_process_returns_the_first_message(cluster):
    """A message:send repeated with the same client_id on the other process, after the
    first or racing it, stores nothing new and repeats the first message_id and seq."""
    sender, watcher = MEMBERS[0], MEMBERS[1]
    conversation = await cluster.group(sender, watcher)
    on_a = await cluster.client(cluster.a, sender)
    on_b = await cluster.client(cluster.b, sender)
    observer = await cluster.client(cluster.b, watcher)
    clients = [on_a, on_b, observer]
    try:
        for client in clients:
            await client.join(conversation)

        # A retry after the first send answered.
        first = (await send_many(on_a, conversation, ["retry-1"]))[0]
        again = (await send_many(on_b, conversation, ["retry-1"]))[0]
        assert first["status"] == again["status"] == "sent", (first, again)
        assert first["seq"] == 1
        assert (again["message_id"], again["seq"]) == (first["message_id"], first["seq"])
        assert again["duplicate"] is True and first["duplicate"] is False
        # A retry racing the first send, one on each process.
        racing = await asyncio.gather(
            send_many(on_a, conversation, ["race-1"]), send_many(on_b, conversation, ["race-1"])
        )
        one, other = (batch[0] for batch in racing)
        assert one["status"] == other["status"] == "sent", racing
        assert (one["message_id"], one["seq"]) == (other["message_id"], other["seq"])
        assert one["seq"] == 2 and {one["duplicate"], other["duplicate"]} == {True, False}
        last = (await send_many(on_b, conversation, ["last"]))[0]
        assert last["seq"] == 3, last

        # The watcher got each message once, nothing for the repeats.
        seen = [(await observer.expect("message:receive"))["message"] for _ in range(3)]
        assert [(m["seq"], m["client_id"]) for m in seen] == [
            (1, "retry-1"),
            (2, "race-1"),
            (3, "last"),
        ]
        await observer.send(type="ping", t="end")
        await observer.expect("pong", t="end")
        assert not [f for f in observer.skipped if f["type"] == "message:receive"]
    finally:
        await close_all(clients)

    rows = await cluster.stored(conversation)
    assert [(seq, client_id) for seq, _, client_id, _ in rows] == [
        (1, "retry-1"),
        (2, "race-1"),
        (3, "last"),
    ]
    assert await cluster.last_seq(conversation) == 3


async def test_query_token_is_never_written_to_logs(cluster):
    """A JWT in ?token= stays out of the access log (A: --access-log file; B: daphne's
    default access log on stdout) and out of everything else the processes write."""
    username = "logged"
    token = cluster.token(username)
    expired = cluster.token(username, seconds=-60)
    for server in cluster.servers:
        async with connect(f"{server.ws}?token={token}", open_timeout=10) as ws:
            client = Client(ws, label=server.name)
            await client.expect("session:ready")
            await client.send(type="ping", t=1)
            await client.expect("pong")
        # A rejected credential takes the other path through the middleware.
        async with connect(f"{server.ws}?token={expired}", open_timeout=10) as ws:
            assert await Client(ws, label=server.name).close_code(5) == 4401
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            me = await http.get("/api/me/", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
            refused = await http.get("/api/me/", headers={"Authorization": f"Bearer {expired}"})
            assert refused.status_code == 401, refused.text

    # The logs did record those requests (so the check below is not vacuous).
    assert cluster.a.access_log is not None
    logs = {
        "a access log": cluster.a.access_log.read_text,
        "a output": cluster.a.output,
        "b output": cluster.b.output,
    }
    expected = ("WSCONNECT /ws/chat/", "WSDISCONNECT /ws/chat/", "GET /api/me/")
    for name in ("a access log", "b output"):
        for _ in range(100):  # the disconnect entries may take a moment
            if all(entry in logs[name]() for entry in expected):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"{name} lacks one of {expected}:\n{logs[name]()}")
    for name, read in logs.items():
        text = read()
        for credential in (token, expired):
            assert credential not in text, f"a token in {name}"
            assert credential.rsplit(".", 1)[1] not in text, f"a token signature in {name}"


async def test_user_deactivated_in_the_admin_on_a_is_closed_with_4403_on_both(cluster):
    """Deactivating a user in the admin of process A closes their sockets on A and B
    with 4403 within seconds (not by the hourly sweep); a new socket is refused."""
    username = "doomed"
    sockets = [await cluster.client(server, username) for server in cluster.servers]
    try:
        await cluster.deactivate_in_admin(cluster.a, username)
        codes = await asyncio.gather(*(s.close_code(3) for s in sockets))
    finally:
        await close_all(sockets)
    assert codes == [4403, 4403]
    for server in cluster.servers:
        async with connect(f"{server.ws}?token={cluster.token(username)}") as ws:
            with pytest.raises(ConnectionClosed):
                frame = await asyncio.wait_for(ws.recv(), 5)
                pytest.fail(f"a frame for a deactivated user: {frame}")
            assert ws.close_code == 4403


async def test_user_deactivated_behind_the_signals_back_is_swept(cluster, tmp_path):
    """The safety net: a bulk UPDATE sends no signal; the per-process sweep closes
    the socket with 4403 on its next round."""
    server = start_daphne(
        "sweeper", env={**cluster.env, "PARLEY_AUTH_SWEEP_S": "1"}, log_dir=tmp_path
    )
    try:
        username = "swept"
        client = await cluster.client(server, username)
        try:
            await cluster.db.rows(
                "UPDATE accounts_user SET is_active = false WHERE username = %s RETURNING id",
                [username],
            )
            assert await client.close_code(5) == 4403
        finally:
            await client.close()
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


async def test_socket_is_closed_with_4401_when_its_token_expires(cluster):
    # `exp` has whole seconds: this token expires 2 to 3 s from now.
    client = await Client.open(
        cluster.a.ws, cluster.token("expiring", seconds=3), label="expiring@a"
    )
    try:
        assert await client.close_code(6) == 4401
    finally:
        await client.close()


async def test_resume_with_since_on_the_other_process(cluster):
    """Guarantee 4 across processes: a client that left process A and comes back on B
    with `since` gets every message it missed, in order."""
    reader, writer = MEMBERS[2], MEMBERS[3]
    conversation = await cluster.group(reader, writer)
    away = await cluster.client(cluster.a, reader)
    sender = await cluster.client(cluster.b, writer)
    try:
        await sender.join(conversation)
        await away.join(conversation)
        await send_many(sender, conversation, ["before"])
        seen = (await away.expect("message:receive"))["message"]["seq"]
        await away.close()
        await send_many(sender, conversation, [f"missed-{k}" for k in range(3)])
        back = await cluster.client(cluster.b, reader, label="back@b")
        try:
            joined = await back.join(conversation, since=seen)
        finally:
            await back.close()
    finally:
        await close_all([away, sender])
    assert seen == 1
    assert joined["gap"] is False
    assert [(m["seq"], m["client_id"]) for m in joined["messages"]] == [
        (2, "missed-0"),
        (3, "missed-1"),
        (4, "missed-2"),
    ]


async def test_socket_closed_by_the_server_while_frames_keep_coming(cluster):
    """The server closes a socket (its user is deactivated) whose client is slow to
    answer the closing handshake, while messages for it keep coming: sending those
    must not crash the consumer (a crashed consumer never runs its disconnect cleanup)."""
    writer, slow = MEMBERS[0], "slowpoke"
    conversation = await cluster.group(writer, slow)
    sender = await cluster.client(cluster.b, writer)
    # max_queue=1: once two frames wait unread, the client stops reading the socket,
    # so the server's close frame stays unanswered for its handshake timeout (1 s).
    ws = await connect(f"{cluster.a.ws}?token={cluster.token(slow)}", open_timeout=10, max_queue=1)
    sleeper = Client(ws, label=f"{slow}@a")
    mark = cluster.a.mark()
    stop = asyncio.Event()

    async def tick() -> int:
        n = 0
        while not stop.is_set():
            await send_many(sender, conversation, [f"tick-{n}"])
            n += 1
            await asyncio.sleep(0.05)
        return n

    try:
        await sleeper.expect("session:ready")
        await sleeper.join(conversation)
        await sender.join(conversation)
        ticker = asyncio.create_task(tick())
        try:
            await adjango_command(cluster.env, "deactivate", slow)
            await asyncio.sleep(1.5)  # the close frame unanswered, messages still coming
        finally:
            stop.set()
            sent = await ticker
        assert sent > 5, sent
        assert await sleeper.close_code(5) == 4403
    finally:
        await close_all([sender, sleeper])
    output = cluster.a.output(since=mark)
    assert "Traceback" not in output, output


async def test_http_requests_do_not_leave_database_connections_behind(cluster):
    """Django runs each HTTP request's sync code in a thread of its own under ASGI; the
    database connection such a thread opened must not outlive it. (A garbage collector
    tuned to run rarely once kept them open until `max_connections` was exhausted.)"""

    async def connections() -> int:
        rows = await cluster.db.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
        return rows[0][0] - 1  # minus this query's own connection

    before = await connections()
    headers = {"Authorization": f"Bearer {cluster.token(MEMBERS[0])}"}
    async with httpx.AsyncClient(base_url=cluster.a.http, timeout=10) as http:
        for _ in range(10):
            responses = await asyncio.gather(
                *(http.get("/api/conversations/", headers=headers) for _ in range(20))
            )
            assert {r.status_code for r in responses} == {200}
    await asyncio.sleep(1)
    assert await connections() - before <= 10

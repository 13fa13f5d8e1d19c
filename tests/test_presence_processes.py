"""Presence, typing and receipts across real daphne processes on real PostgreSQL and
Redis: two tabs on two processes, a reload onto the other process, a process killed
with SIGKILL. The processes run with short presence timings (see `TIMINGS`)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.servers import Client, ScratchDatabase, Server, django_command, manage, start_daphne
from tests.test_processes import token_for

pytestmark = pytest.mark.slow

USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
TTL_S, HEARTBEAT_S, SWEEP_S, GRACE_S = 3.0, 1.0, 0.5, 2.0
TIMINGS = {
    "PARLEY_PRESENCE_TTL_S": str(TTL_S),
    "PARLEY_PRESENCE_HEARTBEAT_S": str(HEARTBEAT_S),
    "PARLEY_PRESENCE_SWEEP_S": str(SWEEP_S),
    "PARLEY_PRESENCE_GRACE_S": str(GRACE_S),
    "PARLEY_RECEIPT_FLUSH_MS": "100",
}
# How late an announcement may be beyond its deadline on a busy test machine.
SLACK_S = 2.5


@dataclass
class Cluster:
    env: dict[str, str]
    a: Server
    b: Server
    user_ids: dict[str, int]
    log_dir: Path

    def token(self, username: str) -> str:
        return token_for(self.user_ids[username])

    async def client(self, server: Server, username: str) -> Client:
        return await Client.open(server.ws, self.token(username), label=f"{username}@{server.name}")

    async def group(self, creator: str, *members: str) -> int:
        async with httpx.AsyncClient(base_url=self.a.http, timeout=10) as http:
            response = await http.post(
                "/api/conversations/",
                json={"title": f"group {uuid.uuid4().hex[:6]}", "members": list(members)},
                headers={"Authorization": f"Bearer {self.token(creator)}"},
            )
        assert response.status_code == 201, response.text
        return response.json()["id"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    from django.conf import settings

    db = ScratchDatabase(os.environ["DATABASE_URL"])
    db.create()
    servers: list[Server] = []
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "REDIS_URL": os.environ["REDIS_URL"],
        "DEBUG": "1",
        "SECRET_KEY": settings.SECRET_KEY,  # this process mints the tokens
        "CHANNEL_LAYER_PREFIX": f"parley-presence-{run}",
        "CACHE_KEY_PREFIX": f"parley-presence-{run}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
        **TIMINGS,
    }
    try:
        manage(env, "migrate", "--noinput", "-v0")
        log_dir = tmp_path_factory.mktemp("presence-servers")
        with ThreadPoolExecutor() as pool:
            users = pool.submit(django_command, env, "users", *USERS)
            starts = [pool.submit(start_daphne, n, env=env, log_dir=log_dir) for n in "ab"]
            servers += [s.result() for s in starts if s.exception() is None]
            for step in (*starts, users):
                step.result()
        user_ids = {u["username"]: u["id"] for u in users.result()}
        yield Cluster(env, *servers, user_ids=user_ids, log_dir=log_dir)
    finally:
        for server in servers:
            server.stop()
        db.drop()


@pytest.fixture(autouse=True)
def server_health(cluster) -> Iterator[None]:
    marks = {server.name: server.mark() for server in (cluster.a, cluster.b)}
    yield
    for server in (cluster.a, cluster.b):
        output = server.output(since=marks[server.name])
        assert server.process.poll() is None, f"{server.name} died:\n{output}"
        assert "Traceback" not in output, f"{server.name} logged an error:\n{output}"


async def presence_of(client: Client, user_id: int, seconds: float) -> dict:
    """The next presence:update about this user (others are skipped)."""
    deadline = time.monotonic() + seconds
    while True:
        frame = await client.expect("presence:update", max(deadline - time.monotonic(), 0))
        if frame["user"]["id"] == user_id:
            return frame


async def no_presence_of(client: Client, user_id: int, seconds: float) -> None:
    """Nothing about this user's presence arrives during `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await client.recv(left)
        except TimeoutError:
            return
        if frame["type"] == "presence:update" and frame["user"]["id"] == user_id:
            pytest.fail(f"{client.label}: unexpected {frame}")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_two_tabs_on_two_processes(cluster):
    """Online while any tab on any process is open, away only when every tab says so,
    offline after the last tab closed and the grace passed; watchers on both processes
    see the same."""
    alice, bob, carol = (cluster.user_ids[n] for n in ("alice", "bob", "carol"))
    await cluster.group("alice", "bob", "carol")
    watchers = [await cluster.client(cluster.b, "bob"), await cluster.client(cluster.a, "carol")]
    tabs: list[Client] = []
    try:
        tabs.append(await cluster.client(cluster.a, "alice"))
        for watcher in watchers:
            online = await presence_of(watcher, alice, 5)
            assert online["status"] == "online"
            assert online["user"] == {"id": alice, "name": "alice", "type": "user"}
        tabs.append(await cluster.client(cluster.b, "alice"))
        await tabs[0].send(type="presence:set", status="away")
        await no_presence_of(watchers[0], alice, 1.0)  # the tab on B is still online
        await tabs[1].send(type="presence:set", status="away")
        for watcher in watchers:
            assert (await presence_of(watcher, alice, 5))["status"] == "away"
        await tabs[1].send(type="presence:set", status="online")
        for watcher in watchers:
            assert (await presence_of(watcher, alice, 5))["status"] == "online"

        await tabs[1].close()  # the online tab on B goes; A's (away) remains
        for watcher in watchers:
            assert (await presence_of(watcher, alice, 5))["status"] == "away"
        await tabs[0].close()
        closed = time.time()
        offline = await presence_of(watchers[1], alice, GRACE_S + SWEEP_S + SLACK_S)
        waited = time.time() - closed
        assert offline["status"] == "offline"
        assert waited >= GRACE_S - 0.3, f"offline after {waited:.2f} s, within the grace"
        assert abs(epoch(offline["last_seen"]) - closed) < 1.0
        assert (await presence_of(watchers[0], alice, 5))["status"] == "offline"
        # The watchers' own presence went to each other, never to themselves.
        assert all(f["user"]["id"] != bob for f in watchers[0].skipped if "user" in f)
        assert all(f["user"]["id"] != carol for f in watchers[1].skipped if "user" in f)
    finally:
        await close_all(watchers + tabs)


async def test_a_reload_onto_the_other_process_does_not_flicker(cluster):
    dave = cluster.user_ids["dave"]
    conversation = await cluster.group("dave", "erin")
    watcher = await cluster.client(cluster.a, "erin")
    clients = [watcher]
    try:
        page = await cluster.client(cluster.a, "dave")
        clients.append(page)
        assert (await presence_of(watcher, dave, 5))["status"] == "online"
        await page.close()
        reloaded = await cluster.client(cluster.b, "dave")  # the new page, other process
        clients.append(reloaded)
        await no_presence_of(watcher, dave, GRACE_S + SWEEP_S + 1.5)
        # A join tells the current presence of the members.
        joined = await watcher.join(conversation)
        (entry,) = joined["presence"]
        assert (entry["user"]["id"], entry["status"]) == (dave, "online")
    finally:
        await close_all(clients)


async def test_the_sockets_of_a_killed_process_go_offline_by_themselves(cluster):
    """SIGKILL a process (no disconnect handler runs): its user is announced offline by
    the surviving process within the TTL plus one sweep."""
    frank = cluster.user_ids["frank"]
    await cluster.group("frank", "bob")
    doomed = start_daphne("doomed", env=cluster.env, log_dir=cluster.log_dir)
    watcher = await cluster.client(cluster.a, "bob")
    try:
        victim = await cluster.client(doomed, "frank")
        assert (await presence_of(watcher, frank, 5))["status"] == "online"
        await asyncio.sleep(HEARTBEAT_S * 1.5)  # at least one heartbeat
        os.killpg(doomed.process.pid, signal.SIGKILL)
        killed = time.time()
        doomed.process.wait(10)
        offline = await presence_of(watcher, frank, TTL_S + SWEEP_S + SLACK_S)
        waited = time.time() - killed
        assert offline["status"] == "offline", offline
        assert waited <= TTL_S + SWEEP_S + SLACK_S
        # last_seen: the last heartbeat, before the kill and at most a heartbeat earlier.
        seen = epoch(offline["last_seen"])
        assert killed - HEARTBEAT_S - 1.0 <= seen <= killed + 0.1, (seen, killed)
        await victim.close()
    finally:
        await watcher.close()
        doomed.stop()


async def test_typing_and_receipts_across_processes(cluster):
    alice, bob = (cluster.user_ids[n] for n in ("alice", "bob"))
    conversation = await cluster.group("alice", "bob")
    reader = await cluster.client(cluster.b, "bob")
    clients = [reader]
    try:
        writer = await cluster.client(cluster.a, "alice")
        clients.append(writer)
        await reader.join(conversation)
        await writer.join(conversation)
        await writer.send(type="typing:start", conversation=conversation)
        typing = await reader.expect("typing:indicator", 5)
        assert (typing["user"]["id"], typing["is_typing"]) == (alice, True)
        await writer.send(
            type="message:send", conversation=conversation, client_id="c1", text="hello"
        )
        seq = (await reader.expect("message:receive", 5))["message"]["seq"]
        await reader.send(type="message:delivered", conversation=conversation, seq=seq)
        await reader.send(type="message:read", conversation=conversation, seq=seq)
        update = await writer.expect("receipt:update", 5)
        assert (update["user"]["id"], update["delivered_seq"], update["read_seq"]) == (
            bob,
            seq,
            seq,
        )
        await writer.close()  # still typing: the close clears it on the other process
        cleared = await reader.expect("typing:indicator", 5)
        assert (cleared["user"]["id"], cleared["is_typing"]) == (alice, False)
    finally:
        await close_all(clients)

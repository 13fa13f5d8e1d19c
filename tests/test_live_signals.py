"""Typing indicators, delivery and read receipts, unread counts and presence inside one
server process, through the real Redis channel layer (tests/test_presence_processes.py
covers several processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import presence, selectors, services
from chat.models import Membership
from tests.conftest import WS_TIMEOUT, ws_session

pytestmark = pytest.mark.django_db(transaction=True)


# --- Helpers


@pytest.fixture
async def alice(make_user):
    return await database_sync_to_async(make_user)("alice", display_name="Alice")


@pytest.fixture
async def bob(make_user):
    return await database_sync_to_async(make_user)("bob")


@pytest.fixture
async def mallory(make_user):
    return await database_sync_to_async(make_user)("mallory")


@database_sync_to_async
def make_group(creator, *members) -> int:
    return services.conversation_create_group(
        creator=creator, title="Team", member_usernames=[m.username for m in members]
    ).pk


@database_sync_to_async
def post(user, conversation_id: int, count: int, prefix: str = "m") -> list[int]:
    """`count` messages by `user` (as another device would post them); their seqs."""
    return [
        services.message_post(
            user=user, conversation_id=conversation_id, client_id=f"{prefix}{i}", text=f"#{i}"
        ).message.seq
        for i in range(count)
    ]


@database_sync_to_async
def markers(user, conversation_id: int) -> tuple[int, int]:
    m = Membership.objects.get(user=user, conversation_id=conversation_id)
    return m.delivered_seq, m.read_seq


async def join(ws, conversation_id: int) -> dict:
    await ws.send_json_to({"type": "conversation:join", "conversation": conversation_id})
    return await next_of(ws, "conversation:joined")


async def next_of(ws, frame_type: str, within: float = WS_TIMEOUT) -> dict:
    """The next frame of this type, skipping others (presence frames come and go)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {frame_type} within {within} s")
        frame = await ws.receive_json_from(timeout=left)
        if frame["type"] == frame_type:
            return frame


async def collect(ws, seconds: float, frame_type: str | None = None) -> list[dict]:
    """Every frame (of this type) the socket gets during `seconds`. (A communicator's
    read that times out cancels the application: wait with receive_nothing.)"""
    frames = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await ws.receive_nothing(timeout=left, interval=0.01):
            break
        frame = await ws.receive_json_from()
        if frame_type is None or frame["type"] == frame_type:
            frames.append(frame)
    return frames


async def until_pong(ws) -> list[dict]:
    """Ping, then every frame up to the pong: what the socket had been sent before."""
    await ws.send_json_to({"type": "ping", "t": "probe"})
    frames = []
    while (frame := await ws.receive_json_from(WS_TIMEOUT)) != {"type": "pong", "t": "probe"}:
        frames.append(frame)
    return frames


def of_type(frames: list[dict], frame_type: str) -> list[dict]:
    return [f for f in frames if f["type"] == frame_type]


def typing(conversation_id: int, start: bool = True) -> dict:
    return {"type": "typing:start" if start else "typing:stop", "conversation": conversation_id}


def receipt(conversation_id: int, seq: int, kind: str = "read") -> dict:
    return {"type": f"message:{kind}", "conversation": conversation_id, "seq": seq}


@pytest.fixture
def membership_writes(transactional_db) -> Iterator[Callable[[], Awaitable[int]]]:
    """Counts UPDATE statements on chat_membership, whichever thread or connection runs
    them: a statement-level trigger in the test database. Yields an async counter."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_membership_writes (id serial PRIMARY KEY)")
        cursor.execute(
            "CREATE FUNCTION test_membership_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO test_membership_writes DEFAULT VALUES; RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_membership_writes AFTER UPDATE ON chat_membership "
            "FOR EACH STATEMENT EXECUTE FUNCTION test_membership_write()"
        )

    @database_sync_to_async
    def count() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM test_membership_writes")
            return cursor.fetchone()[0]

    try:
        yield count
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_membership_writes ON chat_membership")
            cursor.execute("DROP FUNCTION test_membership_write()")
            cursor.execute("DROP TABLE test_membership_writes")


# --- Typing


async def test_typing_is_relayed_to_the_other_members_only(alice, bob, mallory):
    team = await make_group(alice, bob)
    async with (
        ws_session(alice) as (tab1, _),
        ws_session(alice) as (tab2, _),
        ws_session(bob) as (bobs, _),
        ws_session(mallory) as (outsider, _),
    ):
        for ws in (tab1, tab2, bobs):
            await join(ws, team)
        await tab1.send_json_to(typing(team))
        indicator = await next_of(bobs, "typing:indicator")
        assert indicator == {
            "type": "typing:indicator",
            "conversation": team,
            "user": {"id": alice.pk, "name": "Alice", "type": "user"},
            "is_typing": True,
        }
        await tab1.send_json_to(typing(team, start=False))
        stopped = await next_of(bobs, "typing:indicator")
        assert stopped["is_typing"] is False and stopped["user"]["id"] == alice.pk
        # Neither of the typist's own sockets, nor a non-member, heard any of it.
        for ws in (tab1, tab2, outsider):
            assert of_type(await until_pong(ws), "typing:indicator") == []


async def test_sockets_that_would_drop_a_frame_are_not_even_handed_it(
    alice, bob, settings, monkeypatch
):
    """The typist's own sockets and the socket that reported a marker never get the
    layer event (the channel layer leaves them out), so no consumer wakes to drop it."""
    from chat.consumers import ChatConsumer

    settings.PARLEY_RECEIPT_FLUSH_MS = 50
    handed: list[tuple[int, str]] = []
    real = ChatConsumer.parley_frame

    async def spy(self, event):
        handed.append((self.user.pk, event["text"]))
        await real(self, event)

    monkeypatch.setattr(ChatConsumer, "parley_frame", spy)
    team = await make_group(alice, bob)
    await post(alice, team, 2)
    async with (
        ws_session(alice) as (tab1, _),
        ws_session(alice) as (tab2, _),
        ws_session(bob) as (reader, _),
    ):
        for ws in (tab1, tab2, reader):
            await join(ws, team)
        await tab1.send_json_to(typing(team))
        await next_of(reader, "typing:indicator")
        await reader.send_json_to(receipt(team, 2))
        await next_of(tab1, "receipt:update")
        await next_of(tab2, "receipt:update")
        await until_pong(reader)
    typing_to = [uid for uid, text in handed if '"typing:indicator"' in text]
    receipts_to = [uid for uid, text in handed if '"receipt:update"' in text]
    assert typing_to == [bob.pk]
    assert sorted(receipts_to) == [alice.pk, alice.pk]


async def test_a_burst_of_starts_is_relayed_once_then_again_after_the_interval(
    alice, bob, settings
):
    settings.PARLEY_TYPING_RELAY_S = 0.5
    team = await make_group(alice, bob)
    async with ws_session(alice) as (typist, _), ws_session(bob) as (watcher, _):
        await join(typist, team)
        await join(watcher, team)
        for _ in range(20):
            await typist.send_json_to(typing(team))
        frames = await collect(watcher, 0.3, "typing:indicator")
        assert [f["is_typing"] for f in frames] == [True]
        await asyncio.sleep(0.3)  # past the relay interval since the first start
        await typist.send_json_to(typing(team))
        again = await next_of(watcher, "typing:indicator")
        assert again["is_typing"] is True


async def test_typing_expires_after_the_silence_timeout(alice, bob, settings):
    settings.PARLEY_TYPING_TIMEOUT_S = 1.0
    team = await make_group(alice, bob)
    async with ws_session(alice) as (typist, _), ws_session(bob) as (watcher, _):
        await join(typist, team)
        await join(watcher, team)
        await typist.send_json_to(typing(team))
        assert (await next_of(watcher, "typing:indicator"))["is_typing"] is True
        started = time.monotonic()
        await asyncio.sleep(0.6)
        await typist.send_json_to(typing(team))  # still typing: the timer starts over
        restarted = time.monotonic()
        ended = await next_of(watcher, "typing:indicator", within=3)
        assert ended["is_typing"] is False
        assert time.monotonic() - restarted >= 0.95, "expired before a full silence"
        assert time.monotonic() - started < 2.5
        # Ended once: nothing more comes.
        assert of_type(await collect(watcher, 1.2), "typing:indicator") == []


async def test_typing_is_cleared_when_the_typists_socket_closes(alice, bob):
    team = await make_group(alice, bob)
    async with ws_session(bob) as (watcher, _):
        await join(watcher, team)
        async with ws_session(alice) as (typist, _):
            await join(typist, team)
            await typist.send_json_to(typing(team))
            assert (await next_of(watcher, "typing:indicator"))["is_typing"] is True
        cleared = await next_of(watcher, "typing:indicator")
        assert cleared == {**cleared, "is_typing": False, "conversation": team}
        assert cleared["user"]["id"] == alice.pk


async def test_typing_stays_on_while_another_tab_of_the_user_types(alice, bob):
    team = await make_group(alice, bob)
    async with (
        ws_session(alice) as (tab1, _),
        ws_session(alice) as (tab2, _),
        ws_session(bob) as (watcher, _),
    ):
        for ws in (tab1, tab2, watcher):
            await join(ws, team)
        await tab1.send_json_to(typing(team))
        await tab2.send_json_to(typing(team))
        assert (await next_of(watcher, "typing:indicator"))["is_typing"] is True
        await tab1.send_json_to({"type": "conversation:leave", "conversation": team})
        await next_of(tab1, "conversation:left")
        assert of_type(await until_pong(watcher), "typing:indicator") == []
        await tab2.send_json_to(typing(team, start=False))
        assert (await next_of(watcher, "typing:indicator"))["is_typing"] is False


async def test_typing_in_a_conversation_of_others_is_refused(alice, bob, mallory):
    team = await make_group(alice, bob)
    async with ws_session(mallory) as (intruder, _), ws_session(bob) as (watcher, _):
        await join(watcher, team)
        await intruder.send_json_to(typing(team))
        error = await next_of(intruder, "error")
        assert (error["code"], error["ref"]) == ("not_found", "typing:start")
        await intruder.send_json_to({"type": "typing:start", "conversation": "1"})
        assert (await next_of(intruder, "error"))["code"] == "bad_request"
        assert of_type(await until_pong(watcher), "typing:indicator") == []


async def test_a_member_may_type_without_joining_on_this_socket(alice, bob):
    team = await make_group(alice, bob)
    async with ws_session(alice) as (typist, _), ws_session(bob) as (watcher, _):
        await join(watcher, team)
        await typist.send_json_to(typing(team))
        assert (await next_of(watcher, "typing:indicator"))["is_typing"] is True
        assert of_type(await until_pong(typist), "error") == []


# --- Receipts


async def test_read_marker_moves_forward_only_and_is_broadcast_to_the_members(alice, bob, settings):
    settings.PARLEY_RECEIPT_FLUSH_MS = 50
    team = await make_group(alice, bob)
    await post(alice, team, 5)
    async with (
        ws_session(alice) as (sender, _),
        ws_session(bob) as (reader, _),
        ws_session(bob) as (other_device, _),
    ):
        for ws in (sender, reader, other_device):
            await join(ws, team)
        await reader.send_json_to(receipt(team, 3))
        update = await next_of(sender, "receipt:update")
        assert update == {
            "type": "receipt:update",
            "conversation": team,
            "user": {"id": bob.pk, "name": "bob", "type": "user"},
            "delivered_seq": 3,  # read implies delivered
            "read_seq": 3,
        }
        # The reader's other devices learn it too (their unread counts); the socket
        # that reported it is not told back.
        assert await next_of(other_device, "receipt:update") == update
        assert of_type(await until_pong(reader), "receipt:update") == []
        assert await markers(bob, team) == (3, 3)

        await reader.send_json_to(receipt(team, 2))  # lower: ignored
        await reader.send_json_to(receipt(team, 1, "delivered"))  # lower: ignored
        await asyncio.sleep(0.3)
        assert of_type(await until_pong(sender), "receipt:update") == []
        assert await markers(bob, team) == (3, 3)

        await reader.send_json_to(receipt(team, 4, "delivered"))
        delivered = await next_of(sender, "receipt:update")
        assert (delivered["delivered_seq"], delivered["read_seq"]) == (4, 3)
        await reader.send_json_to(receipt(team, 999))  # past the last message: clamped
        read = await next_of(sender, "receipt:update")
        assert (read["delivered_seq"], read["read_seq"]) == (5, 5)
    assert await markers(bob, team) == (5, 5)
    assert await markers(alice, team) == (0, 0)


async def test_a_burst_of_read_markers_costs_one_write_and_the_last_lands(
    alice, bob, settings, membership_writes
):
    settings.PARLEY_RECEIPT_FLUSH_MS = 300
    team = await make_group(alice, bob)
    seqs = await post(alice, team, 50)
    async with ws_session(alice) as (sender, _), ws_session(bob) as (reader, _):
        await join(sender, team)
        await join(reader, team)
        before = await membership_writes()
        for seq in seqs:  # delivered, then read, for each message: as a client does
            await reader.send_json_to(receipt(team, seq, "delivered"))
            await reader.send_json_to(receipt(team, seq))
        updates = [await next_of(sender, "receipt:update")]
        while updates[-1]["read_seq"] < 50:
            updates.append(await next_of(sender, "receipt:update"))
        # 100 markers, at most two flushes (a burst may straddle one boundary).
        writes = await membership_writes() - before
        assert 1 <= writes <= 2, writes
        assert len(updates) == writes
        assert (updates[-1]["delivered_seq"], updates[-1]["read_seq"]) == (50, 50)
    assert await markers(bob, team) == (50, 50)


async def test_the_last_marker_lands_when_the_socket_closes_at_once(alice, bob, settings):
    settings.PARLEY_RECEIPT_FLUSH_MS = 60_000  # only the close can write it in time
    team = await make_group(alice, bob)
    await post(alice, team, 7)
    async with ws_session(bob) as (reader, _):
        await join(reader, team)
        await reader.send_json_to(receipt(team, 7))
        await until_pong(reader)  # the marker was taken in
        assert await markers(bob, team) == (0, 0)  # batched, not written yet
    assert await markers(bob, team) == (7, 7)


async def test_markers_of_a_non_member_or_malformed_are_refused_and_store_nothing(
    alice, bob, mallory, settings
):
    settings.PARLEY_RECEIPT_FLUSH_MS = 50
    team = await make_group(alice, bob)
    await post(alice, team, 3)
    async with ws_session(mallory) as (intruder, _), ws_session(bob) as (reader, _):
        await intruder.send_json_to(receipt(team, 3))
        error = await next_of(intruder, "error")
        assert (error["code"], error["ref"]) == ("not_found", "message:read")
        for bad in (
            {"type": "message:read", "conversation": team, "seq": -1},
            {"type": "message:read", "conversation": team, "seq": "3"},
            {"type": "message:delivered", "conversation": team},
            {"type": "message:read", "seq": 3},
        ):
            await reader.send_json_to(bad)
            error = await next_of(reader, "error")
            assert (error["code"], error["ref"]) == ("bad_request", bad["type"]), bad
        await asyncio.sleep(0.3)
    assert await database_sync_to_async(Membership.objects.filter(user=mallory).count)() == 0
    assert await markers(bob, team) == (0, 0)


async def test_markers_from_a_member_who_did_not_join_on_this_socket_land(alice, bob, settings):
    settings.PARLEY_RECEIPT_FLUSH_MS = 50
    team = await make_group(alice, bob)
    await post(alice, team, 2)
    async with ws_session(alice) as (sender, _), ws_session(bob) as (reader, _):
        await join(sender, team)
        await reader.send_json_to(receipt(team, 2))
        assert (await next_of(sender, "receipt:update"))["read_seq"] == 2
    assert await markers(bob, team) == (2, 2)


async def test_rest_read_marker(api_client_for, alice, bob, mallory):
    team = await make_group(alice, bob)
    await post(alice, team, 4)
    url = f"/api/conversations/{team}/read/"
    as_bob = database_sync_to_async(api_client_for(bob).post)
    async with ws_session(alice) as (sender, _):
        await join(sender, team)
        response = await as_bob(url, {"seq": 3}, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["id"], body["read_seq"], body["unread_count"]) == (team, 3, 1)
        update = await next_of(sender, "receipt:update")
        assert (update["user"]["id"], update["delivered_seq"], update["read_seq"]) == (
            bob.pk,
            3,
            3,
        )
        lower = await as_bob(url, {"seq": 1}, format="json")
        assert lower.status_code == 200 and lower.json()["read_seq"] == 3
        assert of_type(await until_pong(sender), "receipt:update") == []
    for bad in ({}, {"seq": -1}, {"seq": "x"}, {"seq": None}):
        refused = await as_bob(url, bad, format="json")
        assert refused.status_code == 400, bad
        assert refused.json()["code"] == "bad_request"
    outsider = await database_sync_to_async(api_client_for(mallory).post)(
        url, {"seq": 4}, format="json"
    )
    assert outsider.status_code == 404 and outsider.json()["code"] == "not_found"
    assert await markers(bob, team) == (3, 3)


# --- Unread counts


async def test_unread_counts_follow_the_read_marker_in_rest_and_on_join(
    api_client_for, alice, bob, settings
):
    settings.PARLEY_RECEIPT_FLUSH_MS = 50
    team = await make_group(alice, bob)
    await post(alice, team, 6)
    await post(bob, team, 2, prefix="b")  # bob's own messages are never unread to him
    as_bob = api_client_for(bob)

    async def rest_unread() -> int:
        listed = await database_sync_to_async(as_bob.get)("/api/conversations/")
        return next(c for c in listed.json() if c["id"] == team)["unread_count"]

    assert await rest_unread() == 6
    async with ws_session(bob) as (reader, _), ws_session(alice) as (watcher, _):
        joined = await join(reader, team)
        await join(watcher, team)
        assert (joined["conversation"]["unread_count"], joined["read_seq"]) == (6, 0)
        await reader.send_json_to(receipt(team, 4))
        await next_of(watcher, "receipt:update")  # written
        assert await rest_unread() == 2
        rejoined = await join(reader, team)
        assert (rejoined["conversation"]["unread_count"], rejoined["read_seq"]) == (2, 4)
        await reader.send_json_to(receipt(team, 8))
        await next_of(watcher, "receipt:update")
    assert await rest_unread() == 0


def test_unread_counts_cost_no_query_per_conversation(api_client_for, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    client = api_client_for(alice)

    def list_queries(expected: dict[int, int]) -> int:
        with CaptureQueriesContext(connection) as queries:
            listed = client.get("/api/conversations/")
        assert listed.status_code == 200
        assert {c["id"]: c["unread_count"] for c in listed.json()} == expected
        return len(queries)

    expected = {}
    counts = []
    for n in range(1, 6):
        team = services.conversation_create_group(
            creator=alice, title=f"T{n}", member_usernames=[bob.username]
        ).pk
        for i in range(n + 1):
            services.message_post(user=bob, conversation_id=team, client_id=f"c{i}", text="x")
        services.receipt_mark(user=alice, conversation_id=team, read_seq=1)
        expected[team] = n
        counts.append(list_queries(expected))
    assert len(set(counts)) == 1, counts


@pytest.mark.presence
def test_join_queries_do_not_grow_with_members_or_presence(make_user):
    alice = make_user("alice")
    others = [make_user(f"u{i}") for i in range(6)]
    small = services.conversation_create_group(
        creator=alice, title="small", member_usernames=[others[0].username]
    )
    big = services.conversation_create_group(
        creator=alice, title="big", member_usernames=[u.username for u in others]
    )

    def join_queries(conversation_id: int) -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            joined = services.conversation_join(user=alice, conversation_id=conversation_id)
        return len(queries), len(joined.presence)

    (small_queries, small_people), (big_queries, big_people) = (
        join_queries(small.pk),
        join_queries(big.pk),
    )
    assert (small_people, big_people) == (1, 6)
    assert small_queries == big_queries


def work(queries: CaptureQueriesContext) -> list[str]:
    """The statements, transaction control left out."""
    return [q["sql"] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]


def test_receipts_apply_moves_many_members_in_one_statement(make_user):
    users = [make_user(f"u{i}") for i in range(4)]
    outsider = make_user("outsider")
    teams = [
        services.conversation_create_group(
            creator=users[0], title=f"T{n}", member_usernames=[u.username for u in users[1:]]
        ).pk
        for n in range(3)
    ]
    for team in teams:
        for i in range(3):
            services.message_post(user=users[0], conversation_id=team, client_id=f"c{i}", text=".")
    ahead = Membership.objects.filter(user=users[1], conversation_id=teams[0])
    ahead.update(delivered_seq=3, read_seq=3)

    def mark(team: int, user, **seqs) -> services.ReceiptMark:
        return services.ReceiptMark(
            conversation_id=team, user_id=user.pk, user_name=user.name, **seqs
        )

    marks = [mark(team, u, read_seq=2, delivered_seq=3) for team in teams for u in users[1:]]
    marks += [mark(teams[1], users[2], read_seq=9), mark(teams[0], outsider, read_seq=1)]
    with CaptureQueriesContext(connection) as queries:
        frames = services.receipts_apply(marks=marks)
    assert len(work(queries)) == 1, work(queries)
    moved = {(f.conversation, f.user.id): (f.delivered_seq, f.read_seq) for f in frames}
    expected = {(team, u.pk): (3, 2) for team in teams for u in users[1:]}
    del expected[(teams[0], users[1].pk)]  # already further: a lower marker is ignored
    expected[(teams[1], users[2].pk)] = (3, 3)  # 9 is past the last message: clamped
    assert moved == expected
    stored = Membership.objects.filter(user__in=users[1:]).values_list(
        "conversation_id", "user_id", "delivered_seq", "read_seq"
    )
    assert {(c, u): (d, r) for c, u, d, r in stored} == {
        **expected,
        (teams[0], users[1].pk): (3, 3),
    }
    assert not Membership.objects.filter(user=outsider).exists()
    # Again: nothing moves, nothing is broadcast; still one statement.
    with CaptureQueriesContext(connection) as queries:
        assert services.receipts_apply(marks=marks) == []
    assert len(work(queries)) == 1


# --- Presence (one process; tests/test_presence_processes.py for several)


def test_co_members_are_found_in_one_query(make_user):
    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    services.conversation_create_group(creator=alice, title="a", member_usernames=["bob"])
    services.conversation_create_group(creator=carol, title="b", member_usernames=["alice", "bob"])
    services.conversation_create_group(creator=dave, title="c", member_usernames=["bob"])
    with CaptureQueriesContext(connection) as queries:
        audience = selectors.co_member_ids(user_id=alice.pk)
    assert len(queries) == 1
    assert sorted(audience) == sorted([bob.pk, carol.pk])


@pytest.mark.presence
async def test_presence_online_away_and_offline_after_the_grace(alice, bob, settings):
    settings.PARLEY_PRESENCE_GRACE_S = 1.0
    settings.PARLEY_PRESENCE_SWEEP_S = 0.2
    await make_group(alice, bob)
    async with ws_session(bob) as (watcher, _):
        async with ws_session(alice) as (tab1, _):
            online = await next_of(watcher, "presence:update")
            assert online["user"] == {"id": alice.pk, "name": "Alice", "type": "user"}
            assert online["status"] == "online" and online["last_seen"]
            await tab1.send_json_to({"type": "presence:set", "status": "away"})
            assert (await next_of(watcher, "presence:update"))["status"] == "away"
            async with ws_session(alice) as (tab2, _):  # a new socket is online
                assert (await next_of(watcher, "presence:update"))["status"] == "online"
                await tab2.send_json_to({"type": "presence:set", "status": "away"})
                assert (await next_of(watcher, "presence:update"))["status"] == "away"
                await tab1.send_json_to({"type": "presence:set", "status": "online"})
                assert (await next_of(watcher, "presence:update"))["status"] == "online"
                await tab1.send_json_to({"type": "presence:set", "status": "busy"})
                assert (await next_of(tab1, "error"))["code"] == "bad_request"
            # tab2 closed, tab1 (online) is open: no change.
            assert of_type(await collect(watcher, 0.5), "presence:update") == []
        closed = time.time()
        offline = await next_of(watcher, "presence:update", within=3)
        assert offline["status"] == "offline"
        assert time.time() - closed >= 0.9, "offline announced before the grace ended"
        assert abs(_epoch(offline["last_seen"]) - closed) < 1.0  # when the last socket went


@pytest.mark.presence
async def test_a_reload_within_the_grace_does_not_flicker(alice, bob, settings):
    settings.PARLEY_PRESENCE_GRACE_S = 1.5
    settings.PARLEY_PRESENCE_SWEEP_S = 0.2
    await make_group(alice, bob)
    async with ws_session(bob) as (watcher, _):
        async with ws_session(alice):
            assert (await next_of(watcher, "presence:update"))["status"] == "online"
        async with ws_session(alice):  # the reloaded page
            assert of_type(await collect(watcher, 2.5), "presence:update") == []


@pytest.mark.presence
async def test_joined_carries_the_members_presence_characters_always_online(
    alice, bob, mallory, character
):
    team = await database_sync_to_async(
        lambda: (
            services.conversation_create_group(
                creator=alice,
                title="Team",
                member_usernames=["bob", "mallory"],
                character_slugs=["tester"],
            ).pk
        )
    )()
    async with ws_session(bob), ws_session(alice) as (ws, _):
        joined = await join(ws, team)
    by_user = {(p["user"]["type"], p["user"]["id"]): p for p in joined["presence"]}
    assert set(by_user) == {("user", bob.pk), ("user", mallory.pk), ("character", character.pk)}
    assert by_user[("user", bob.pk)]["status"] == "online"
    assert by_user[("user", bob.pk)]["last_seen"] is not None
    assert by_user[("user", mallory.pk)] == {
        "user": {"id": mallory.pk, "name": "mallory", "type": "user"},
        "status": "offline",
        "last_seen": None,
    }
    assert by_user[("character", character.pk)]["status"] == "online"
    assert by_user[("character", character.pk)]["user"]["name"] == "Tester"


@pytest.mark.parametrize("kind", ["redis", "local"])
async def test_presence_store_rules(kind, settings):
    """The Redis store (Lua, on Redis's clock) and the single-process fallback follow the
    same rules. The margins are wide: only a stall of 0.5 s or more could fail it."""
    settings.PARLEY_PRESENCE_TTL_S = 2.0
    settings.PARLEY_PRESENCE_GRACE_S = 0.6
    if kind == "redis":
        prefix = f"{settings.CACHES['default']['KEY_PREFIX']}:store-test-{time.time_ns()}"
        store = presence.RedisStore(settings.REDIS_URL, prefix)
    else:
        store = presence.LocalStore()

    async def settle_due() -> list[tuple[int, str]]:
        changes = [await store.settle(user_id=uid) for uid in await store.due()]
        return [(c.user_id, c.status) for c in changes if c]

    try:
        first = await store.touch(user_id=1, name="One", socket="a", status="online")
        assert (first.user_id, first.name, first.status) == (1, "One", "online")
        assert await store.touch(user_id=1, name="One", socket="b", status="away") is None
        away = await store.touch(user_id=1, name="One", socket="a", status="away")
        assert away.status == "away"  # every socket says away
        assert await store.leave(user_id=1, socket="b") is None  # a is still away
        assert await store.leave(user_id=1, socket="a") is None  # offline after the grace
        left = time.time()
        assert await settle_due() == []
        assert store.snapshot([1])[1][0] == "away"
        await asyncio.sleep(0.8)
        assert await settle_due() == [(1, "offline")]
        status, seen = store.snapshot([1])[1]
        assert status == "offline" and abs(seen - left) < 0.5  # when the last one left
        assert await settle_due() == []  # announced once

        # A socket whose heartbeat stops (its process died) goes by itself after the TTL.
        await store.touch(user_id=2, name="Two", socket="x", status="online")
        await store.touch(user_id=2, name="Two", socket="y", status="online")
        await asyncio.sleep(1.0)
        assert await store.refresh([(2, "y"), (2, "never")]) == [1]  # y lives on
        await asyncio.sleep(1.3)  # x's deadline passed, y's not
        assert await settle_due() == []
        await asyncio.sleep(1.0)
        assert await settle_due() == [(2, "offline")]
        snapshot = store.snapshot([2, 3])
        assert snapshot[2][0] == "offline" and snapshot[3] == ("offline", None)
    finally:
        if kind == "redis":
            keys = store._sync.keys(f"{prefix}:*")
            if keys:
                store._sync.delete(*keys)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def test_a_batch_of_frames_is_published_in_one_pipeline_through_the_redis_layer():
    """The receipts' batch publish leaves in one round trip with the configured layer,
    and subscribers get every message."""
    from channels.layers import get_channel_layer

    from chat.broadcast import _agroup_send_many, conversation_group
    from tests.test_layers import count_round_trips

    layer = get_channel_layer()
    listener = await layer.new_channel()
    groups = [conversation_group(900_000 + i) for i in range(3)]
    for group in groups:
        await layer.group_add(group, listener)
    events = [(g, {"type": "parley.frame", "n": i}) for i, g in enumerate(groups)]
    try:
        sizes = count_round_trips(layer)
        await _agroup_send_many(events)
        assert sizes == [3]
        got = [await asyncio.wait_for(layer.receive(listener), WS_TIMEOUT) for _ in groups]
        assert sorted(e["n"] for e in got) == [0, 1, 2]
    finally:
        for group in groups:
            await layer.group_discard(group, listener)

"""Guarantee 7 on PostgreSQL: N concurrent sends against R remaining units accept
exactly min(N, R). Threads released together by a barrier, each on its own database
connection; then real websocket clients on two server processes."""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import types
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction

from chat import services
from chat.models import Conversation, Message
from config.errors import ApplicationError
from tests.servers import (
    Client,
    ScratchDatabase,
    Server,
    django_command,
    manage,
    start_daphne,
)
from usage import services as usage_services
from usage.models import CharacterLimit, Plan, UsageCounter

SEED = importlib.import_module("usage.migrations.0002_free_and_premium_plans")
SENDS = 50


@pytest.fixture(autouse=True)
def _no_send_rate_limit(settings):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "send": ""}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def together(count: int, work: Callable[[int], str]) -> list[str]:
    """Run work(0..count-1) on `count` threads released at the same moment."""
    barrier = threading.Barrier(count)

    def run(i: int) -> str:
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def gap_free(conversation_id: int) -> bool:
    seqs = list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    last_seq = Conversation.objects.get(pk=conversation_id).last_seq
    return seqs == list(range(1, last_seq + 1))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usage
@pytest.mark.parametrize("remaining", [30, 1])
def test_concurrent_charges_take_exactly_what_is_left(make_user, character, remaining):
    SEED.create_plans(django_apps, None)
    alice = make_user("alice")
    CharacterLimit.objects.create(
        character=character, plan=Plan.objects.get(slug="free"), kind="text", limit=remaining
    )

    def charge(_: int) -> str:
        try:
            with transaction.atomic():
                usage_services.usage_charge(user=alice, characters=[character], kind="text")
        except usage_services.QuotaExceeded:
            return "refused"
        return "ok"

    outcomes = Counter(together(SENDS, charge))
    assert outcomes == {"ok": remaining, "refused": SENDS - remaining}
    assert UsageCounter.objects.get(user=alice).used == remaining


@pytest.mark.django_db(transaction=True)
@pytest.mark.usage
def test_50_concurrent_sends_from_several_conversations_accept_exactly_30(make_user, character):
    """The free plan's 30 text messages with the character, shared by the user's own
    conversation with it and four groups where messages @mention it: the counter is
    the only thing these sends have in common."""
    SEED.create_plans(django_apps, None)
    alice = make_user("alice")
    own, _ = services.conversation_open_with_character(user=alice, slug="tester")
    groups = [
        services.conversation_create_group(
            creator=alice, title=f"g{i}", member_usernames=[], character_slugs=["tester"]
        )
        for i in range(4)
    ]
    conversations = [own.pk, *(g.pk for g in groups)]

    def post(i: int) -> str:
        try:
            services.message_post(
                user=alice,
                conversation_id=conversations[i % len(conversations)],
                client_id=f"c{i}",
                text=f"@tester message {i}",
            )
        except ApplicationError as error:
            return error.code
        return "sent"

    outcomes = Counter(together(SENDS, post))
    assert outcomes == {"sent": 30, "quota_exceeded": SENDS - 30}
    assert UsageCounter.objects.get(user=alice, kind="text").used == 30
    assert Message.objects.filter(sender_user=alice, role="user").count() == 30
    assert all(gap_free(c) for c in conversations)
    # At most one upgrade prompt, in the user's own conversation (never in a group).
    prompts = Message.objects.filter(role="system", metadata__level="exhausted")
    assert set(prompts.values_list("conversation_id", flat=True)) <= {own.pk}
    assert prompts.count() <= 1


# --- Real sockets on two server processes


@dataclass
class Cluster:
    db: ScratchDatabase
    servers: list[Server]
    user_id: int

    def token(self) -> str:
        from rest_framework_simplejwt.tokens import AccessToken

        return str(AccessToken.for_user(types.SimpleNamespace(id=self.user_id)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    from django.conf import settings

    db = ScratchDatabase(os.environ["DATABASE_URL"])
    db.create()
    started: list[Server] = []
    try:
        run = uuid.uuid4().hex[:8]
        env = {
            **os.environ,
            "DATABASE_URL": db.url,
            "DEBUG": "1",
            "SECRET_KEY": settings.SECRET_KEY,  # this process mints the tokens
            "CHANNEL_LAYER_PREFIX": f"parley-usage-{run}",
            "CACHE_KEY_PREFIX": f"parley-usage-{run}",
            "PARLEY_CHARACTER_REPLIES": "0",
            "PARLEY_USAGE_METERING": "1",
            "THROTTLE_SEND": "",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
        }
        manage(env, "migrate", "--noinput", "-v0")  # the free plan: 30 text a day
        manage(env, "seed_demo")  # characters, "ada" among them
        [user] = django_command(env, "users", "sender")
        log_dir = tmp_path_factory.mktemp("usage-servers")
        with ThreadPoolExecutor() as pool:
            starts = [pool.submit(start_daphne, n, env=env, log_dir=log_dir) for n in "ab"]
            started += [s.result() for s in starts if s.exception() is None]
            for step in starts:
                step.result()  # the first failure, if any
        yield Cluster(db=db, servers=started, user_id=user["id"])
    finally:
        for server in started:
            server.stop()
        db.drop()


@pytest.mark.slow
async def test_50_sends_from_several_sockets_on_two_processes_accept_exactly_30(cluster):
    a, b = cluster.servers
    token = cluster.token()
    async with httpx.AsyncClient(
        base_url=a.http, timeout=10, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        groups = []
        for i in range(2):
            response = await http.post(
                "/api/conversations/", json={"title": f"g{i}", "characters": ["ada"]}
            )
            assert response.status_code == 201, response.text
            groups.append(response.json()["id"])
    # Five sockets of one user on both processes, sending to the user's conversation
    # with the character and to two groups where every message @mentions it.
    clients = [
        await Client.open(server.ws, token, label=f"socket{i}@{server.name}")
        for i, server in enumerate((a, b, a, b, b))
    ]
    per_client = SENDS // len(clients)
    try:
        await clients[0].send(type="conversation:join", character="ada")
        own = (await clients[0].expect("conversation:joined"))["conversation"]["id"]
        conversations = [own, *groups]
        for i, client in enumerate(clients[1:], start=1):
            await client.join(conversations[i % len(conversations)])

        async def burst(i: int, client: Client) -> list[dict]:
            for k in range(per_client):
                await client.send(
                    type="message:send",
                    conversation=conversations[i % len(conversations)],
                    client_id=f"s{i}-{k}",
                    text=f"@ada number {k}",
                )
            return [await client.expect("message:status", 30) for _ in range(per_client)]

        batches = await asyncio.gather(*(burst(i, c) for i, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    statuses = [status for batch in batches for status in batch]
    outcomes = Counter(s["error"]["code"] if s["status"] == "failed" else "sent" for s in statuses)
    assert outcomes == {"sent": 30, "quota_exceeded": SENDS - 30}, outcomes
    [(used,)] = await cluster.db.rows(
        "SELECT used FROM usage_usagecounter WHERE user_id = %s AND kind = 'text'",
        [cluster.user_id],
    )
    assert used == 30
    rows = await cluster.db.rows(
        "SELECT conversation_id, seq FROM chat_message WHERE conversation_id = ANY(%s) "
        "ORDER BY conversation_id, seq",
        [conversations],
    )
    stored = await cluster.db.rows(
        "SELECT count(*) FROM chat_message WHERE sender_user_id = %s", [cluster.user_id]
    )
    assert stored == [(30,)]
    for conversation in conversations:
        seqs = [seq for cid, seq in rows if cid == conversation]
        assert seqs == list(range(1, len(seqs) + 1)), (conversation, seqs)

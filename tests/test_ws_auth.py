"""Websocket authentication (contract section 1): every credential the contract names,
the close codes of the ones it refuses, and sockets outliving their credential."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.services import ws_ticket_consume, ws_ticket_issue
from chat.connections import registry
from tests.conftest import WS_TIMEOUT, access_token_for, ws_communicator, ws_session

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED_ORIGIN = b"http://localhost:8000"


# --- Helpers


@pytest.fixture
def user(make_user):
    return make_user(display_name="Zoë")


@database_sync_to_async
def deactivate(user) -> None:
    user.is_active = False
    user.save()


def token_with(user, *, lifetime: timedelta, from_time: datetime | None = None) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(from_time=from_time, lifetime=lifetime)
    return str(token)


def expired_token_of(user) -> str:
    return token_with(
        user, from_time=datetime.now(UTC) - timedelta(hours=1), lifetime=timedelta(minutes=5)
    )


def forged_token(user) -> str:
    """Well-formed, with the right claims, signed with the wrong key."""
    payload = dict(AccessToken.for_user(user).payload)
    return jwt.encode(payload, "not-the-server-secret-key-but-long-enough", algorithm="HS256")


@database_sync_to_async
def issue_ticket(user) -> str:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
    response = client.post("/api/auth/ws-ticket/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["expires_in"] == 60
    return body["ticket"]


@database_sync_to_async
def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


def via_query(token: str):
    return ws_communicator(f"/ws/chat/?token={token}")


def via_bearer(token: str):
    return ws_communicator(headers=[(b"authorization", f"Bearer {token}".encode())])


def via_subprotocol(token: str):
    return ws_communicator(subprotocols=["access_token", token])


JWT_TRANSPORTS = {"query": via_query, "bearer": via_bearer, "subprotocol": via_subprotocol}


def expected_subprotocol(transport: str) -> str | None:
    return "access_token" if transport == "subprotocol" else None


async def handshake(ws) -> list[dict]:
    """The first two raw ASGI messages the server sends after the connect."""
    await ws.send_input({"type": "websocket.connect"})
    return [await ws.receive_output(WS_TIMEOUT), await ws.receive_output(WS_TIMEOUT)]


async def assert_refused(ws, code: int, *, subprotocol: str | None = None) -> None:
    """Accepted, then closed with `code` before any other frame, and nothing after."""
    accept, close = await handshake(ws)
    assert accept["type"] == "websocket.accept", accept
    assert accept.get("subprotocol") == subprotocol
    assert close == {"type": "websocket.close", "code": code}
    await ws.wait(WS_TIMEOUT)  # the application has ended
    assert ws.output_queue.empty()


def is_ready(output: dict) -> bool:
    return (
        output["type"] == "websocket.send" and json.loads(output["text"])["type"] == "session:ready"
    )


async def assert_open(ws) -> None:
    await ws.send_json_to({"type": "ping", "t": "still-open"})
    assert await ws.receive_json_from(WS_TIMEOUT) == {"type": "pong", "t": "still-open"}


# --- Accepted credentials


async def test_query_token_is_accepted(user):
    ws = via_query(access_token_for(user))
    assert await ws.connect(WS_TIMEOUT) == (True, None)
    ready = await ws.receive_json_from(WS_TIMEOUT)
    assert ready["type"] == "session:ready"
    assert ready["user"]["id"] == user.pk
    await ws.disconnect()


async def test_bearer_header_is_accepted(user):
    ws = via_bearer(access_token_for(user))
    assert await ws.connect(WS_TIMEOUT) == (True, None)
    ready = await ws.receive_json_from(WS_TIMEOUT)
    assert ready["user"]["id"] == user.pk
    await ws.disconnect()


async def test_subprotocol_token_is_accepted_with_the_access_token_subprotocol(user):
    ws = via_subprotocol(access_token_for(user))
    assert await ws.connect(WS_TIMEOUT) == (True, "access_token")
    ready = await ws.receive_json_from(WS_TIMEOUT)
    assert ready["user"]["id"] == user.pk
    await ws.disconnect()


async def test_ticket_is_accepted(user):
    ticket = await issue_ticket(user)
    async with ws_session(path=f"/ws/chat/?ticket={ticket}") as (ws, ready):
        assert ready["user"]["id"] == user.pk
        await assert_open(ws)


async def test_ticket_is_single_use(user):
    ticket = await issue_ticket(user)
    async with ws_session(path=f"/ws/chat/?ticket={ticket}"):
        pass
    await assert_refused(ws_communicator(f"/ws/chat/?ticket={ticket}"), 4401)


async def test_racing_uses_of_one_ticket_accept_exactly_one(user):
    ticket = await issue_ticket(user)
    first = ws_communicator(f"/ws/chat/?ticket={ticket}")
    second = ws_communicator(f"/ws/chat/?ticket={ticket}")
    outputs = await asyncio.gather(handshake(first), handshake(second))
    accepted = [out for out in outputs if is_ready(out[1])]
    refused = [out for out in outputs if out[1] == {"type": "websocket.close", "code": 4401}]
    assert (len(accepted), len(refused)) == (1, 1), outputs
    await first.disconnect()
    await second.disconnect()


def test_ticket_consumed_from_many_threads_at_once_yields_one_user(make_user):
    user = make_user()
    ticket, _ = ws_ticket_issue(user=user)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: ws_ticket_consume(ticket=ticket), range(8)))
    assert (results.count(user.pk), results.count(None)) == (1, 7)


async def test_unknown_ticket_is_refused():
    await assert_refused(ws_communicator("/ws/chat/?ticket=made-up"), 4401)


async def test_session_cookie_from_an_allowed_origin_is_accepted(user):
    cookie = await session_cookie(user)
    headers = [(b"cookie", cookie), (b"origin", ALLOWED_ORIGIN)]
    async with ws_session(headers=headers) as (ws, ready):
        assert ready["user"]["id"] == user.pk
        await assert_open(ws)


@pytest.mark.parametrize(
    "origin",
    [b"https://evil.example", b"http://localhost.evil.example", b"null", None],
    ids=["foreign", "lookalike", "null", "missing"],
)
async def test_session_cookie_from_a_foreign_or_missing_origin_is_refused_4403(user, origin):
    headers = [(b"cookie", await session_cookie(user))]
    if origin is not None:
        headers.append((b"origin", origin))
    await assert_refused(ws_communicator(headers=headers), 4403)


# --- Refused credentials: accepted, then closed before any other frame


async def test_no_credential_is_refused_4401():
    await assert_refused(ws_communicator(), 4401)


async def test_unknown_session_cookie_is_refused_4401():
    headers = [(b"cookie", b"sessionid=doesnotexist"), (b"origin", ALLOWED_ORIGIN)]
    await assert_refused(ws_communicator(headers=headers), 4401)


@pytest.mark.parametrize("transport", JWT_TRANSPORTS)
async def test_forged_jwt_is_refused_4401(user, transport):
    ws = JWT_TRANSPORTS[transport](forged_token(user))
    await assert_refused(ws, 4401, subprotocol=expected_subprotocol(transport))


@pytest.mark.parametrize("transport", JWT_TRANSPORTS)
async def test_garbage_jwt_is_refused_4401(transport):
    ws = JWT_TRANSPORTS[transport]("not.a.jwt")
    await assert_refused(ws, 4401, subprotocol=expected_subprotocol(transport))


@pytest.mark.parametrize("transport", JWT_TRANSPORTS)
async def test_expired_jwt_is_refused_4401(user, transport):
    ws = JWT_TRANSPORTS[transport](expired_token_of(user))
    await assert_refused(ws, 4401, subprotocol=expected_subprotocol(transport))


async def test_refresh_token_is_not_an_access_token(user):
    refresh = await database_sync_to_async(RefreshToken.for_user)(user)
    await assert_refused(via_query(str(refresh)), 4401)


async def test_subprotocol_without_a_token_is_refused_4401():
    ws = ws_communicator(subprotocols=["access_token"])
    await assert_refused(ws, 4401, subprotocol="access_token")


async def test_non_bearer_authorization_header_is_refused_4401(user):
    ws = ws_communicator(headers=[(b"authorization", f"Basic {access_token_for(user)}".encode())])
    await assert_refused(ws, 4401)


async def test_token_of_a_deleted_user_is_refused_4401(user):
    token = access_token_for(user)
    await database_sync_to_async(user.delete)()
    await assert_refused(via_query(token), 4401)


@pytest.mark.parametrize("transport", JWT_TRANSPORTS)
async def test_deactivated_user_with_a_jwt_is_refused_4403(user, transport):
    token = access_token_for(user)
    await deactivate(user)
    ws = JWT_TRANSPORTS[transport](token)
    await assert_refused(ws, 4403, subprotocol=expected_subprotocol(transport))


async def test_deactivated_user_with_a_ticket_is_refused_4403(user):
    ticket = await issue_ticket(user)
    await deactivate(user)
    await assert_refused(ws_communicator(f"/ws/chat/?ticket={ticket}"), 4403)


async def test_deactivated_user_with_a_session_cookie_is_refused_4403(user):
    cookie = await session_cookie(user)
    await deactivate(user)
    headers = [(b"cookie", cookie), (b"origin", ALLOWED_ORIGIN)]
    await assert_refused(ws_communicator(headers=headers), 4403)


# --- Sockets that outlive their credential


async def test_live_socket_of_a_deactivated_user_is_closed_4403_at_once(user, make_user):
    bystander = await database_sync_to_async(make_user)()
    async with ws_session(user) as (ws, _), ws_session(bystander) as (other, _):
        await deactivate(user)
        assert await ws.receive_output(WS_TIMEOUT) == {"type": "websocket.close", "code": 4403}
        await assert_open(other)


async def test_sweep_closes_sockets_of_users_deactivated_behind_its_back(user):
    """The safety net for a lost close event: a queryset update sends no signal."""
    async with ws_session(user) as (ws, _):
        await database_sync_to_async(
            lambda: type(user).objects.filter(pk=user.pk).update(is_active=False)
        )()
        assert await ws.receive_nothing(timeout=0.3)
        await registry.sweep()
        assert await ws.receive_output(WS_TIMEOUT) == {"type": "websocket.close", "code": 4403}


@pytest.mark.parametrize("transport", JWT_TRANSPORTS)
async def test_socket_is_closed_4401_when_its_token_expires(user, transport):
    ws = JWT_TRANSPORTS[transport](token_with(user, lifetime=timedelta(seconds=2)))
    connected, _ = await ws.connect(WS_TIMEOUT)
    assert connected
    assert (await ws.receive_json_from(WS_TIMEOUT))["type"] == "session:ready"
    await assert_open(ws)
    assert await ws.receive_output(timeout=4) == {"type": "websocket.close", "code": 4401}
    await ws.disconnect()


# --- session:ready


async def test_session_ready_shape(user):
    before = datetime.now(UTC)
    async with ws_session(user) as (_, ready):
        after = datetime.now(UTC)
    assert set(ready) == {"type", "protocol", "user", "heartbeat_s", "server_time"}
    assert ready["protocol"] == 1
    assert ready["user"] == {"id": user.pk, "username": user.username, "display_name": "Zoë"}
    assert ready["heartbeat_s"] == settings.PARLEY_HEARTBEAT_S == 25
    server_time = datetime.fromisoformat(ready["server_time"])
    assert server_time.tzinfo is not None
    assert before - timedelta(seconds=1) <= server_time <= after + timedelta(seconds=1)


async def test_session_ready_is_the_first_frame(user):
    ws = via_bearer(access_token_for(user))
    accept, first = await handshake(ws)
    assert accept["type"] == "websocket.accept"
    assert is_ready(first)
    await ws.disconnect()

"""Shared fixtures. The suite runs on real PostgreSQL and Redis (DATABASE_URL,
REDIS_URL); if either is missing it fails at once instead of skipping."""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.llm_fixtures import fake_anthropic, offline_provider  # noqa: F401 (fixtures)


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def pytest_configure(config):
    problems = []
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        problems.append("DATABASE_URL must point at PostgreSQL")
    elif not _answers(database_url, 5432):
        problems.append(f"PostgreSQL does not answer at {database_url}")
    if not redis_url:
        problems.append("REDIS_URL must point at Redis")
    elif not _answers(redis_url, 6379):
        problems.append(f"Redis does not answer at {redis_url}")
    if problems:
        raise pytest.UsageError(
            "The tests need real PostgreSQL and Redis (`make test` sets local defaults): "
            + "; ".join(problems)
        )
    # Threads of database_sync_to_async must not keep connections past each call,
    # or the test database cannot be dropped at the end.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Keep this run's channel groups and cache keys apart from any other process.
    run = uuid.uuid4().hex[:8]
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"parley-test-{run}"
    settings.CACHES["default"]["KEY_PREFIX"] = f"parley-test-{run}"


@pytest.fixture
def make_user(db):
    from accounts.models import User

    def make(username: str | None = None, **fields) -> User:
        username = username or f"user-{uuid.uuid4().hex[:8]}"
        return User.objects.create_user(username, password="a-long-test-password", **fields)

    return make


@pytest.fixture
def character(db):
    from characters.models import Character

    return Character.objects.create(
        slug="tester", name="Tester", persona="You test things.", greeting="Hello, tester here."
    )


def access_token_for(user) -> str:
    from rest_framework_simplejwt.tokens import AccessToken

    return str(AccessToken.for_user(user))


@pytest.fixture
def api_client_for(db):
    """An APIClient sending `Authorization: Bearer <access JWT>` for `user` (anonymous
    without one): the same path a mobile app takes, JWT authentication included."""
    from rest_framework.test import APIClient

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
        return client

    return make


# --- Websocket helpers (tests/test_ws_*.py)


@pytest.fixture(scope="session", autouse=True)
def _end_stray_connections(django_db_setup, django_db_blocker):
    """Connections that threads of finished event loops still hold would keep the test
    database from being dropped at the end: end them first."""
    yield
    from django.db import connection

    name = connection.settings_dict["NAME"]
    if not name.startswith("test_"):
        return  # no test used the database
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )


@pytest.fixture(autouse=True)
def _close_worker_thread_connections():
    """Channels' test communicators keep `database_sync_to_async` from closing its
    connections (they patch `close_old_connections` out); close the worker thread's
    connection after each test, or the test database cannot be dropped at the end."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


WS_TIMEOUT = 3  # seconds any single websocket read may wait


def ws_communicator(path: str = "/ws/chat/", *, headers=None, subprotocols=None):
    """A not yet connected test socket on the real ASGI application."""
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    return WebsocketCommunicator(application, path, headers=headers, subprotocols=subprotocols)


@asynccontextmanager
async def ws_session(user=None, *, path: str | None = None, headers=None, subprotocols=None):
    """A socket past `session:ready` (by default authenticated with `?token=`):
    yields (communicator, ready frame) and disconnects on exit."""
    if path is None and user is not None:
        path = f"/ws/chat/?token={access_token_for(user)}"
    ws = ws_communicator(path or "/ws/chat/", headers=headers, subprotocols=subprotocols)
    connected, _ = await ws.connect(timeout=WS_TIMEOUT)
    assert connected
    ready = await ws.receive_json_from(timeout=WS_TIMEOUT)
    assert ready["type"] == "session:ready", ready
    try:
        yield ws, ready
    finally:
        await ws.disconnect(timeout=WS_TIMEOUT)


@pytest.fixture(autouse=True)
def _character_replies(request, settings):
    """Character replies add frames to every send in a character conversation; tests of
    the message path turn them off, tests of replies mark themselves `replies`."""
    settings.PARLEY_CHARACTER_REPLIES = request.node.get_closest_marker("replies") is not None


@pytest.fixture(autouse=True)
def _usage_metering(request, settings):
    """Metering adds `usage:update` frames (and system messages) to sends in character
    conversations; tests of quotas mark themselves `usage`, the others run without."""
    settings.PARLEY_USAGE_METERING = request.node.get_closest_marker("usage") is not None


@pytest.fixture(autouse=True)
def _presence(request, settings):
    """Presence adds `presence:update` frames whenever a co-member's socket opens or
    closes; tests of presence mark themselves `presence`, the others run without."""
    settings.PARLEY_PRESENCE = request.node.get_closest_marker("presence") is not None

"""Shared fixtures. The suite runs on real PostgreSQL and Redis (DATABASE_URL,
REDIS_URL); if either is missing it fails at once instead of skipping."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest
from django.conf import settings


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

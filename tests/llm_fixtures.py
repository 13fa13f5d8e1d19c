"""Fixtures for the provider boundary (imported by tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.fake_anthropic import FakeAnthropic


@pytest.fixture
async def fake_anthropic(settings):
    """A running fake Messages API, with Parley configured to use it through the real
    SDK: fast retries (2, backoff in milliseconds), a 5 s read timeout, a fresh provider.
    Script it with `fake_anthropic.script(ok(...), status(529), ...)`. Async so that
    its teardown closes the SDK clients on the test's own event loop."""
    from characters.llm import reset_provider
    from characters.llm.anthropic import aclose_clients

    fake = FakeAnthropic().start()
    settings.ANTHROPIC_API_KEY = fake.api_key
    settings.ANTHROPIC_BASE_URL = fake.base_url
    settings.ANTHROPIC_MAX_RETRIES = 2
    settings.ANTHROPIC_BACKOFF_BASE_S = 0.01
    settings.ANTHROPIC_BACKOFF_CAP_S = 0.05
    settings.ANTHROPIC_READ_TIMEOUT_S = 5.0
    settings.ANTHROPIC_CONNECT_TIMEOUT_S = 2.0
    reset_provider()
    try:
        yield fake
    finally:
        await aclose_clients()
        fake.stop()
        reset_provider()


@pytest.fixture
def offline_provider(settings):
    """The offline responder at full speed (no pauses between words)."""
    from characters.llm import get_provider, reset_provider

    settings.ANTHROPIC_API_KEY = ""
    settings.PARLEY_OFFLINE_WORDS_PER_S = 1_000_000
    reset_provider()
    yield get_provider()
    reset_provider()

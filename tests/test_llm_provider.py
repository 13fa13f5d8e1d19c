"""The provider boundary: the real `anthropic` SDK against the local fake Messages API,
and the offline responder."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from characters.llm import get_provider, reset_provider
from characters.llm.anthropic import AnthropicProvider
from characters.llm.base import ProviderError, ReplyDone, ReplyRequest, TextDelta, Turn
from characters.llm.offline import OfflineProvider, compose_reply, persona_line
from tests.fake_anthropic import (
    disconnect,
    drop,
    end_early,
    ok,
    overload_mid_stream,
    slow,
    status,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["aiohttp", "httpx"])
def fake_anthropic(request, fake_anthropic, settings):
    """Here every test of the Anthropic provider runs over both of the SDK's transports:
    the default (aiohttp) and httpx (ANTHROPIC_HTTP_CLIENT=httpx), whose errors differ."""
    settings.ANTHROPIC_HTTP_CLIENT = request.param
    reset_provider()
    return fake_anthropic


PERSONA = "You are Captain Mira, a pirate of the seven skies. You speak in nautical slang."


def make_request(**fields) -> ReplyRequest:
    values = {
        "system": PERSONA,
        "turns": [
            Turn("user", "Where are we sailing?"),
            Turn("assistant", "North, past the storm wall."),
            Turn("user", "Tell me about the storm wall."),
        ],
        "model": "claude-sonnet-4-6",
        "temperature": 0.7,
        "max_tokens": 300,
        "character_name": "Mira",
        "greeting": "Ahoy there, deckhand! The wind is up.",
        "user_name": "Sam",
    }
    values.update(fields)
    return ReplyRequest(**values)


async def collect(provider, request: ReplyRequest | None = None):
    """(deltas, done) of a stream that must succeed."""
    deltas: list[str] = []
    done: list[ReplyDone] = []
    async for event in provider.stream(request or make_request()):
        assert not done, "nothing may follow ReplyDone"
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            assert isinstance(event, ReplyDone)
            done.append(event)
    assert len(done) == 1
    return deltas, done[0]


async def collect_error(provider, request: ReplyRequest | None = None):
    """(deltas before the error, the ProviderError) of a stream that must fail."""
    deltas: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(request or make_request()):
            assert isinstance(event, TextDelta), "a failing stream must not report done"
            deltas.append(event.text)
    return deltas, caught.value


# --- Choosing the provider


def test_provider_is_anthropic_with_a_key_else_offline(settings):
    settings.ANTHROPIC_API_KEY = ""
    provider = get_provider()
    assert isinstance(provider, OfflineProvider)
    assert provider.offline and provider.name == "offline"
    assert get_provider() is provider  # cached

    settings.ANTHROPIC_API_KEY = "sk-ant-something"  # a settings change resets the cache
    provider = get_provider()
    assert isinstance(provider, AnthropicProvider)
    assert not provider.offline and provider.name == "anthropic"
    reset_provider()
    assert get_provider() is not provider


# --- The happy path


async def test_deltas_concatenate_to_the_text_and_done_reports_usage(fake_anthropic):
    text = "Arr, the storm wall is a mile of lightning. Nobody sails it twice. **Nobody.**"
    fake_anthropic.script(
        ok(text, chunk_size=5, input_tokens=1234, cache_read_tokens=1000, cache_creation_tokens=7)
    )
    deltas, done = await collect(get_provider())
    assert len(deltas) == len(range(0, len(text), 5)) > 1
    assert "".join(deltas) == text
    assert done.stop_reason == "end_turn"
    assert done.model == "claude-sonnet-4-6"
    assert done.usage.input_tokens == 1234
    assert done.usage.output_tokens == (len(text) + 3) // 4
    assert done.usage.cache_read_tokens == 1000
    assert done.usage.cache_write_tokens == 7
    assert done.attempts == 1


async def test_stop_reason_and_model_come_from_the_stream(fake_anthropic):
    fake_anthropic.script(ok("Cut short", stop_reason="max_tokens", model="claude-other"))
    _, done = await collect(get_provider())
    assert (done.stop_reason, done.model) == ("max_tokens", "claude-other")


async def test_request_carries_the_cached_persona_turns_model_and_limits(fake_anthropic):
    await collect(get_provider())
    [sent] = fake_anthropic.requests
    assert sent.path == "/v1/messages"
    body = sent.body
    assert body["system"] == [
        {"type": "text", "text": PERSONA, "cache_control": {"type": "ephemeral"}}
    ]
    assert body["model"] == "claude-sonnet-4-6"
    assert body["max_tokens"] == 300
    assert body["stream"] is True
    # API 2026-10-21 (what the SDK sends) rejects sampling parameters at any value.
    assert sent.headers["anthropic-version"] >= "2026-10-21"
    assert "temperature" not in body and "top_p" not in body
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Where are we sailing?"
    # The end of the history is a second cache breakpoint for the next request.
    assert body["messages"][-1]["content"] == [
        {
            "type": "text",
            "text": "Tell me about the storm wall.",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    # Retries are ours: the SDK never retried behind our back.
    assert sent.headers["x-stainless-retry-count"] == "0"


async def test_empty_model_falls_back_to_the_default(fake_anthropic, settings):
    settings.ANTHROPIC_DEFAULT_MODEL = "claude-default-for-test"
    _, done = await collect(get_provider(), make_request(model=""))
    assert fake_anthropic.requests[0].body["model"] == "claude-default-for-test"
    assert done.model == "claude-default-for-test"


async def test_concurrent_streams_do_not_mix(fake_anthropic):
    fake_anthropic.default = ok("one two three four five six seven", chunk_size=4, delay_s=0.01)
    provider = get_provider()
    results = await asyncio.gather(*(collect(provider) for _ in range(5)))
    for deltas, done in results:
        assert "".join(deltas) == "one two three four five six seven"
        assert done.stop_reason == "end_turn"


async def test_stopping_the_consumer_closes_the_stream(fake_anthropic):
    fake_anthropic.script(ok("x" * 400, chunk_size=2, delay_s=0.02))
    stream = get_provider().stream(make_request())
    got = [await anext(stream), await anext(stream)]
    await stream.aclose()  # what `generation:stop` does
    assert "".join(e.text for e in got) == "xxxx"
    assert len(fake_anthropic.requests) == 1


# --- Failures before the first delta: retried with backoff


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(status(529), id="overloaded-529"),
        pytest.param(status(429, retry_after=0), id="rate-limited-429"),
        pytest.param(status(500), id="server-error-500"),
        pytest.param(drop(after_deltas=0), id="dropped-before-first-delta"),
        pytest.param(disconnect(), id="disconnected-before-response"),
        pytest.param(overload_mid_stream(after_deltas=0), id="overload-event-before-delta"),
        pytest.param(end_early(after_deltas=0), id="ended-before-first-delta"),
    ],
)
async def test_transient_failures_before_the_first_delta_are_retried(fake_anthropic, first):
    fake_anthropic.script(first, ok("Recovered."))
    deltas, done = await collect(get_provider())
    assert "".join(deltas) == "Recovered."
    assert done.attempts == 2
    assert [r.behaviour for r in fake_anthropic.requests] == [first.kind, "ok"]


async def test_server_errors_fail_after_the_retries(fake_anthropic, settings):
    settings.ANTHROPIC_MAX_RETRIES = 3
    fake_anthropic.script(*[status(500)] * 4, ok("never reached"))
    deltas, error = await collect_error(get_provider())
    assert deltas == []
    assert error.code == "provider_error"
    assert error.retryable
    assert error.attempts == 4
    assert len(fake_anthropic.requests) == 4
    assert fake_anthropic.pending == 1


async def test_overload_fails_as_overloaded_after_the_retries(fake_anthropic):
    fake_anthropic.script(*[status(529)] * 3)
    _, error = await collect_error(get_provider())
    assert (error.code, error.attempts) == ("overloaded", 3)


async def test_retries_back_off(fake_anthropic, settings):
    settings.ANTHROPIC_BACKOFF_BASE_S = 0.1
    settings.ANTHROPIC_BACKOFF_CAP_S = 0.15
    fake_anthropic.script(status(529), status(529), ok())
    started = time.monotonic()
    await collect(get_provider())
    # Jittered within [d/2, d]: at least 0.05 + 0.075 for d = 0.1, then 0.15 (capped).
    assert time.monotonic() - started >= 0.12
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(fake_anthropic.requests)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.075


async def test_no_retry_starts_after_the_retry_window(fake_anthropic, settings):
    # Wide margins, so a loaded machine cannot flip the outcome: the second attempt
    # starts ~0.6 s in (inside the 1 s window), the third would start after ~1.2 s.
    settings.ANTHROPIC_READ_TIMEOUT_S = 0.6
    settings.ANTHROPIC_MAX_RETRIES = 5
    settings.ANTHROPIC_RETRY_WINDOW_S = 1.0
    fake_anthropic.script(*[slow(3)] * 6)
    _, error = await collect_error(get_provider())
    assert error.code == "timeout"
    assert error.attempts == 2
    assert len(fake_anthropic.requests) == 2


def test_backoff_grows_and_is_capped():
    provider = AnthropicProvider(
        api_key="k", default_model="m", backoff_base_s=0.5, backoff_cap_s=4
    )
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        for _ in range(20):
            assert ceiling / 2 <= provider.backoff(attempt) <= ceiling


@pytest.mark.parametrize("code", [400, 401, 404])
async def test_client_errors_are_bad_requests_and_not_retried(fake_anthropic, code):
    fake_anthropic.script(status(code), ok())
    _, error = await collect_error(get_provider())
    assert error.code == "bad_request"
    assert not error.retryable
    assert len(fake_anthropic.requests) == 1


async def test_wrong_key_is_a_bad_request(fake_anthropic, settings):
    settings.ANTHROPIC_API_KEY = "sk-ant-wrong"
    _, error = await collect_error(get_provider())
    assert error.code == "bad_request"
    assert "x-api-key" in error.message
    assert len(fake_anthropic.requests) == 1


@pytest.mark.parametrize("after_headers", [False, True], ids=["no-response", "stalled-stream"])
async def test_silence_longer_than_the_read_timeout_is_a_timeout(
    fake_anthropic, settings, after_headers
):
    settings.ANTHROPIC_READ_TIMEOUT_S = 0.2
    settings.ANTHROPIC_MAX_RETRIES = 1
    fake_anthropic.script(*[slow(3, after_headers=after_headers)] * 2)
    started = time.monotonic()
    deltas, error = await collect_error(get_provider())
    assert deltas == []
    assert error.code == "timeout"
    assert error.attempts == 2
    assert len(fake_anthropic.requests) == 2
    assert time.monotonic() - started < 2  # the SDK's 10-minute default is not in force


# --- Failures after the first delta: never retried, partial text kept by the caller


async def test_dropped_after_the_first_delta_is_connection_lost(fake_anthropic):
    fake_anthropic.script(drop(after_deltas=2, text="Hello there, sailor."), ok())
    deltas, error = await collect_error(get_provider())
    assert "".join(deltas) == "Hello there,"
    assert error.code == "connection_lost"
    assert error.attempts == 1
    assert len(fake_anthropic.requests) == 1


async def test_overload_event_mid_stream_is_overloaded(fake_anthropic):
    fake_anthropic.script(overload_mid_stream(after_deltas=1, text="Hello there."), ok())
    deltas, error = await collect_error(get_provider())
    assert deltas == ["Hello "]
    assert error.code == "overloaded"
    assert len(fake_anthropic.requests) == 1


async def test_stream_that_ends_early_is_incomplete(fake_anthropic):
    fake_anthropic.script(end_early(after_deltas=2, text="Hello there, sailor."), ok())
    deltas, error = await collect_error(get_provider())
    assert "".join(deltas) == "Hello there,"
    assert error.code == "incomplete"
    assert len(fake_anthropic.requests) == 1


async def test_silence_after_the_first_delta_is_a_timeout(fake_anthropic, settings):
    settings.ANTHROPIC_READ_TIMEOUT_S = 0.2
    fake_anthropic.script(ok("Hello there, sailor.", chunk_size=6, delay_s=2), ok())
    deltas, error = await collect_error(get_provider())
    assert deltas == ["Hello "]
    assert error.code == "timeout"
    assert len(fake_anthropic.requests) == 1


# --- The SDK client belongs to its event loop


async def test_one_client_per_event_loop(fake_anthropic):
    provider = get_provider()
    here = provider.client()
    assert provider.client() is here

    def other_loop():
        async def run():
            deltas, _ = await collect(provider)
            client = provider.client()
            await provider.aclose()
            return "".join(deltas), client

        return asyncio.run(run())

    text, there = await asyncio.to_thread(other_loop)
    assert text == "Hello from the fake model."
    assert there is not here
    assert provider.client() is here
    await provider.aclose()


async def test_the_transport_is_the_one_configured(fake_anthropic, settings):
    import anthropic

    aiohttp = settings.ANTHROPIC_HTTP_CLIENT == "aiohttp"
    assert isinstance(get_provider().client()._client, anthropic.DefaultAioHttpClient) is aiohttp
    await collect(get_provider())


# --- Offline responder


async def test_offline_streams_word_by_word(offline_provider):
    request = make_request()
    deltas, done = await collect(offline_provider, request)
    text = "".join(deltas)
    assert text == compose_reply(request)
    assert len(deltas) == len(text.split()) > 10
    assert all(len(d.split()) == 1 for d in deltas)
    assert done.stop_reason == "end_turn"
    assert done.model == "offline"
    assert done.usage.output_tokens > 0 and done.usage.input_tokens > 0
    assert offline_provider.offline


async def test_offline_reply_is_in_character_and_deterministic():
    request = make_request()
    text = compose_reply(request)
    assert text == compose_reply(request)
    assert "Mira" in text
    lowered = text.lower()
    assert "storm wall" in lowered or "tell me about the storm wall" in lowered
    other = compose_reply(make_request(turns=[Turn("user", "I found a treasure map!")]))
    assert other != text
    assert "treasure" in other.lower() or "map" in other.lower()


async def test_offline_paces_the_words(offline_provider, settings):
    settings.PARLEY_OFFLINE_WORDS_PER_S = 100
    provider = get_provider()
    started = time.monotonic()
    deltas, _ = await collect(provider)
    assert time.monotonic() - started >= 0.8 * len(deltas) / 100


async def test_offline_respects_max_tokens(offline_provider):
    deltas, done = await collect(offline_provider, make_request(max_tokens=5))
    assert done.stop_reason == "max_tokens"
    assert 0 < len("".join(deltas)) <= 20


def test_persona_line_speaks_in_the_first_person():
    assert persona_line(PERSONA) == "I am Captain Mira, a pirate of the seven skies."
    assert persona_line("You test things.") == "I test things."
    assert persona_line("Your name is Bo. You love your cat.") == "I love my cat."
    assert persona_line("You help you.") == ""
    assert persona_line("Mira is a pirate.") == ""

"""Claude through the official SDK (`anthropic.AsyncAnthropic`, `messages.stream`).

Retries are ours, not the SDK's (its `max_retries` is 0): the SDK cannot retry a
stream that fails after the response headers, which is where overloads and cut
connections actually happen, and ours are logged. A request is retried only while
nothing has been yielded; after the first delta the error goes to the caller.

The installed SDK (2.x) speaks API version 2026-10-21, which rejects sampling
parameters (`temperature`, `top_p`, `top_k`) with a 400 on every model, so
`ReplyRequest.temperature` is deliberately not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import weakref
from collections.abc import AsyncIterator
from typing import Any

import anthropic
from django.conf import settings

from .base import (
    ProviderError,
    ProviderErrorCode,
    ReplyDone,
    ReplyRequest,
    ReplyUsage,
    TextDelta,
)

logger = logging.getLogger(__name__)


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, other transport errors) of whichever HTTP library the SDK uses: anthropic
    2.x is built on `httpx2`, 0.x on `httpx`, either over aiohttp or not. Errors while
    reading a streamed body come from that library unwrapped (e.g. `RemoteProtocolError`
    for a cut chunked body)."""
    timeouts: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)  # RemoteProtocolError, ReadError, ...
        transport.append(module.StreamError)
    try:  # the aiohttp transport maps its errors to httpx's; any it leaves unmapped
        import aiohttp
    except ImportError:
        pass
    else:
        timeouts.append(aiohttp.ServerTimeoutError)
        transport.append(aiohttp.ClientError)
    return tuple(timeouts), tuple(transport)


_TIMEOUT_ERRORS, _TRANSPORT_ERRORS = _transport_errors()

# Error `type`s in a JSON error body (also in a mid-stream `error` event).
_ERROR_TYPES: dict[str, tuple[ProviderErrorCode, bool]] = {
    "overloaded_error": ("overloaded", True),
    "rate_limit_error": ("overloaded", True),
    "api_error": ("provider_error", True),
    "timeout_error": ("timeout", True),
    "invalid_request_error": ("bad_request", False),
    "authentication_error": ("bad_request", False),
    "permission_error": ("bad_request", False),
    "not_found_error": ("bad_request", False),
    "request_too_large": ("bad_request", False),
}


def classify(error: BaseException) -> ProviderError:
    """Map an SDK or transport failure to our error code and whether it is transient."""
    if isinstance(error, ProviderError):
        return error
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        if status == 200:
            # An `error` event inside a stream that had started fine.
            code, retryable = _ERROR_TYPES.get(str(error.type or ""), ("provider_error", True))
        elif status == 529 or status == 429:
            code, retryable = "overloaded", True
        elif status == 408:
            code, retryable = "timeout", True
        elif status == 409 or status >= 500:
            code, retryable = "provider_error", True
        else:
            code, retryable = "bad_request", False
        if error.response.headers.get("x-should-retry") == "false":
            retryable = False
        message = error.api_message or f"HTTP {status}"
        return ProviderError(code, f"{message} (HTTP {status})", retryable=retryable)
    if isinstance(error, (anthropic.APITimeoutError, *_TIMEOUT_ERRORS)):
        return ProviderError(
            "timeout", "The model provider did not answer in time.", retryable=True
        )
    if isinstance(error, anthropic.APIConnectionError):
        cause = error.__cause__
        if isinstance(cause, _TIMEOUT_ERRORS):
            return ProviderError(
                "timeout", "The model provider did not answer in time.", retryable=True
            )
        return ProviderError(
            "connection_lost", f"Connection failed: {cause or error}", retryable=True
        )
    if isinstance(error, _TRANSPORT_ERRORS):
        return ProviderError("connection_lost", f"The stream was cut: {error}", retryable=True)
    # Malformed responses and anything else the SDK raises: a provider problem, worth a retry.
    return ProviderError("provider_error", f"{type(error).__name__}: {error}", retryable=True)


# What `_attempt` maps through `classify`; anything else (our bugs, cancellation) propagates.
_HANDLED = (anthropic.AnthropicError, json.JSONDecodeError, *_TRANSPORT_ERRORS, *_TIMEOUT_ERRORS)


_providers: weakref.WeakSet[AnthropicProvider] = weakref.WeakSet()


async def aclose_clients() -> None:
    """Close every provider's SDK client of the running event loop (test teardown, a
    worker shutting down): their pooled keep-alive connections belong to this loop."""
    for provider in list(_providers):
        await provider.aclose()


class AnthropicProvider:
    name = "anthropic"
    offline = False

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str,
        read_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        retry_window_s: float = 45.0,
        http_client: str = "aiohttp",
    ):
        self.api_key = api_key
        self.base_url = base_url or None
        self.default_model = default_model
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.retry_window_s = retry_window_s
        self.http_client = http_client
        # One SDK client per event loop: its httpx connection pool belongs to the loop
        # it was created on. Keyed by id(loop); dead loops are pruned on access.
        self._clients: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], Any]] = {}
        _providers.add(self)

    @classmethod
    def from_settings(cls) -> AnthropicProvider:
        return cls(
            api_key=settings.ANTHROPIC_API_KEY,
            base_url=settings.ANTHROPIC_BASE_URL or None,
            default_model=settings.ANTHROPIC_DEFAULT_MODEL,
            read_timeout_s=settings.ANTHROPIC_READ_TIMEOUT_S,
            connect_timeout_s=settings.ANTHROPIC_CONNECT_TIMEOUT_S,
            max_retries=settings.ANTHROPIC_MAX_RETRIES,
            backoff_base_s=settings.ANTHROPIC_BACKOFF_BASE_S,
            backoff_cap_s=settings.ANTHROPIC_BACKOFF_CAP_S,
            retry_window_s=settings.ANTHROPIC_RETRY_WINDOW_S,
            http_client=settings.ANTHROPIC_HTTP_CLIENT,
        )

    def preload(self) -> None:
        """Import what a request will use (`characters.llm.provider_preload`)."""
        import anthropic.lib.streaming
        import anthropic.resources.messages  # noqa: F401

        for name in ("httpcore2", "httpcore", "aiohttp"):  # the transports' own imports
            with contextlib.suppress(ImportError):
                __import__(name)

    # --- Client per event loop

    def client(self) -> anthropic.AsyncAnthropic:
        loop = asyncio.get_running_loop()
        for key, (ref, _) in list(self._clients.items()):
            other = ref()
            if other is None or other.is_closed():
                del self._clients[key]
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0]() is loop:
            return entry[1]
        client = anthropic.AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            # `read` bounds the silence between two chunks of the stream, not its length:
            # the API sends pings, so a long reply is fine and a hung one fails fast.
            timeout=anthropic.Timeout(self.read_timeout_s, connect=self.connect_timeout_s),
            max_retries=0,
            # aiohttp parses each chunk of the stream in C: with one chunk per token,
            # httpx's pure-Python parsing was a third of a streamed reply's CPU.
            http_client=anthropic.DefaultAioHttpClient() if self.http_client == "aiohttp" else None,
        )
        self._clients[id(loop)] = (weakref.ref(loop), client)
        return client

    async def aclose(self) -> None:
        """Close this event loop's client (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(id(loop), None)
        if entry is not None and entry[0]() is loop:
            await entry[1].close()

    # --- Streaming

    async def stream(self, request: ReplyRequest) -> AsyncIterator[TextDelta | ReplyDone]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 1
        while True:
            streamed = False
            try:
                async with contextlib.aclosing(self._attempt(request, attempt)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            streamed = True
                        yield event
                return
            except ProviderError as error:
                error.attempts = attempt
                delay = self.backoff(attempt)
                # No retry that would start after the window: the caller (and the user
                # watching a typing indicator) must hear of the failure in bounded time.
                late = loop.time() - started + delay > self.retry_window_s
                if streamed or not error.retryable or attempt > self.max_retries or late:
                    logger.warning(
                        "Claude request failed for good (%s after %d attempt(s)%s): %s",
                        error.code,
                        attempt,
                        ", mid-stream" if streamed else "",
                        error.message,
                    )
                    raise
                logger.warning(
                    "Claude request failed (%s, attempt %d of %d), retrying in %.2fs: %s",
                    error.code,
                    attempt,
                    self.max_retries + 1,
                    delay,
                    error.message,
                )
            await asyncio.sleep(delay)
            attempt += 1

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: in [d/2, d] for d = base * 2^(attempt-1), capped."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.random() * ceiling / 2

    def _params(self, request: ReplyRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [
            {"role": turn.role, "content": turn.text} for turn in request.turns
        ]
        if messages:
            # Second cache breakpoint at the end of the history: the next request of the
            # conversation repeats it and reads it from the cache.
            last = messages[-1]
            last["content"] = [
                {"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}
            ]
        return {
            "model": request.model or self.default_model,
            "max_tokens": request.max_tokens,
            # A list of blocks rather than a string, to carry the cache breakpoint: the
            # persona is the stable prefix of every request of the character.
            "system": [
                {"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}
            ],
            "messages": messages,
        }

    async def _attempt(
        self, request: ReplyRequest, attempt: int
    ) -> AsyncIterator[TextDelta | ReplyDone]:
        """One HTTP request; every failure comes out as a ProviderError."""
        model = request.model or self.default_model
        usage: dict[str, int] = {}
        stop_reason: str | None = None
        try:
            async with self.client().messages.stream(**self._params(request)) as stream:
                async for event in stream:
                    kind = event.type
                    if kind == "content_block_delta":
                        if event.delta.type == "text_delta" and event.delta.text:
                            yield TextDelta(event.delta.text)
                    elif kind == "message_start":
                        model = event.message.model or model
                        _merge_usage(usage, event.message.usage)
                    elif kind == "message_delta":
                        stop_reason = event.delta.stop_reason
                        _merge_usage(usage, event.usage)
        except _HANDLED as error:
            raise classify(error) from error
        if not stop_reason:
            # The body ended cleanly but before message_delta / message_stop.
            raise ProviderError(
                "incomplete", "The reply stream ended before the model finished.", retryable=True
            )
        yield ReplyDone(
            stop_reason=stop_reason,
            model=model,
            usage=ReplyUsage(
                input_tokens=usage.get("input_tokens", 0),
                output_tokens=usage.get("output_tokens", 0),
                cache_read_tokens=usage.get("cache_read_input_tokens", 0),
                cache_write_tokens=usage.get("cache_creation_input_tokens", 0),
            ),
            attempts=attempt,
        )


def _merge_usage(into: dict[str, int], usage: Any) -> None:
    """message_delta counts are cumulative and overwrite message_start's; absent ones keep it."""
    if usage is None:
        return
    for name in (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ):
        value = getattr(usage, name, None)
        if value is not None:
            into[name] = value

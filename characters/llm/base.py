"""What a provider is to the rest of Parley: a streamer of text deltas.

`chat` builds a `ReplyRequest` (see `characters.context`), calls `provider.stream()`,
and consumes `TextDelta`s until one `ReplyDone`. Providers retry transient failures
themselves while nothing has been streamed yet; after the first delta, or when
retries run out, they raise `ProviderError` with a machine-readable code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


@dataclass(frozen=True)
class ReplyRequest:
    system: str  # the persona: stable across a conversation, so it is cached
    turns: list[Turn]  # alternating, starting and ending with "user"
    model: str
    temperature: float = 1.0  # not sent to Claude: API 2026-10-21 rejects sampling params
    max_tokens: int = 1024
    # Who is talking, for providers that need it in plain form (the offline responder's
    # voice); Claude gets all of it through `system` and `turns`.
    character_name: str = ""
    greeting: str = ""
    user_name: str = ""  # the person the reply answers (the last speaker)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReplyUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class ReplyDone:
    stop_reason: str  # "end_turn", "max_tokens", "stop_sequence", ...
    model: str
    usage: ReplyUsage = field(default_factory=ReplyUsage)
    attempts: int = 1  # provider requests it took, retries included


ProviderErrorCode = Literal[
    "overloaded",  # 529, or an overload event mid-stream
    "provider_error",  # 5xx and other API errors
    "timeout",  # no byte within the read timeout
    "connection_lost",  # the stream was cut
    "incomplete",  # the stream ended without message_stop / stop_reason
    "bad_request",  # 4xx: our request was wrong; retrying will not help
]


class ProviderError(Exception):
    def __init__(
        self,
        code: ProviderErrorCode,
        message: str,
        *,
        retryable: bool = False,
        attempts: int = 1,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable  # transient: the same request may succeed later
        self.attempts = attempts  # provider requests made, retries included


class Provider(Protocol):
    name: str  # "anthropic" or "offline"
    offline: bool  # shown in the page and the admin

    def stream(self, request: ReplyRequest) -> AsyncIterator[TextDelta | ReplyDone]: ...

"""The one application error type. Services raise it; each transport maps it once
(an `error` frame on the websocket, a JSON 4xx body over REST)."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "bad_request",
    "unknown_type",
    "not_found",
    "forbidden",
    "too_large",
    "rate_limited",
    "quota_exceeded",
    "banned",
    "server_error",
]

HTTP_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unknown_type": 400,
    "not_found": 404,
    "forbidden": 403,
    "too_large": 413,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "banned": 403,
    "server_error": 500,
}


class ApplicationError(Exception):
    def __init__(self, code: ErrorCode, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"ApplicationError({self.code!r}, {self.message!r})"

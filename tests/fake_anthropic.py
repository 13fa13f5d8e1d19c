"""A local fake of Anthropic's Messages API for the real `anthropic` client.

A threaded HTTP/1.1 server speaking the streaming protocol byte for byte as the API
does (chunked `text/event-stream`: message_start, ping, content_block_start,
content_block_delta text deltas, content_block_stop, message_delta with usage,
message_stop; JSON error bodies with `x-should-retry`). Point the SDK at it with
`base_url=fake.base_url` (settings.ANTHROPIC_BASE_URL).

Each request takes the next behaviour from a script (`fake.script(ok(...), status(529))`),
falling back to `fake.default` when the script is empty. Every request is recorded
(`fake.requests`) for assertions on the system prompt, turns, model and limits.

    with FakeAnthropic() as fake:
        fake.script(status(529), ok("Hello there."))
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

API_KEY = "sk-ant-fake-0000"
# From this API version on (the one anthropic SDK 2.x sends), sampling parameters are
# a 400 on every model; the fake says so as the API does.
SAMPLING_REJECTED_FROM = "2026-10-21"

Kind = Literal["ok", "status", "slow", "drop", "disconnect", "overload_mid_stream", "end_early"]


@dataclass(frozen=True)
class Behaviour:
    kind: Kind
    text: str = "Hello from the fake model."
    chunk_size: int = 6  # characters per text delta (about a token and a half)
    delay_s: float = 0.0  # between two deltas
    latency_s: float = 0.0  # after message_start, before the first delta
    stop_reason: str = "end_turn"
    model: str | None = None  # None: echo the requested model
    input_tokens: int | None = None  # None: estimated from the request
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    retry_after: int | None = None
    seconds: float = 0.0  # `slow`: silence before giving up on the client
    after_headers: bool = False  # `slow`: stall after the stream started
    after_deltas: int = 0  # `drop` / `overload_mid_stream` / `end_early`

    def chunks(self) -> list[str]:
        size = max(1, self.chunk_size)
        return [self.text[i : i + size] for i in range(0, len(self.text), size)]


def ok(text: str = "Hello from the fake model.", **options: Any) -> Behaviour:
    """A complete stream; options: chunk_size, delay_s, latency_s, stop_reason, model,
    input_tokens, cache_read_tokens, cache_creation_tokens."""
    return Behaviour("ok", text=text, **options)


ERROR_TYPES = {
    400: ("invalid_request_error", "messages: at least one message is required"),
    401: ("authentication_error", "invalid x-api-key"),
    404: ("not_found_error", "Not found"),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def status(code: int, *, error_type: str = "", message: str = "", **options: Any) -> Behaviour:
    """An error response with the API's JSON body (options: retry_after)."""
    default_type, default_message = ERROR_TYPES.get(code, ("api_error", "Error"))
    return Behaviour(
        "status",
        status=code,
        error_type=error_type or default_type,
        error_message=message or default_message,
        **options,
    )


def slow(seconds: float = 5.0, *, after_headers: bool = False) -> Behaviour:
    """No bytes for `seconds` (before the response, or after message_start), then hang up."""
    return Behaviour("slow", seconds=seconds, after_headers=after_headers)


def drop(after_deltas: int = 0, text: str = "Hello from the fake model.", **opts: Any) -> Behaviour:
    """Start the stream, send `after_deltas` deltas, close the socket mid-body (no
    terminating chunk): the client sees an incomplete chunked read."""
    return Behaviour("drop", text=text, after_deltas=after_deltas, **opts)


def disconnect() -> Behaviour:
    """Close the connection without any response."""
    return Behaviour("disconnect")


def overload_mid_stream(
    after_deltas: int = 1, text: str = "Hello from the fake model."
) -> Behaviour:
    """Deltas, then an `error` event (overloaded_error) and a cleanly ended body."""
    return Behaviour(
        "overload_mid_stream",
        text=text,
        after_deltas=after_deltas,
        error_type="overloaded_error",
        error_message="Overloaded",
    )


def end_early(after_deltas: int = 2, text: str = "Hello from the fake model.") -> Behaviour:
    """Deltas, then a cleanly terminated body without message_delta / message_stop."""
    return Behaviour("end_early", text=text, after_deltas=after_deltas)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    behaviour: str = ""
    received_at: float = field(default_factory=time.monotonic)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps([body.get("system"), body.get("messages")])) // 4)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog (5) drops the connects of a burst of requests, which
    # the client then retries after 1 s, 3 s, ...: the benchmark's 100 at once.
    request_queue_size = 256
    block_on_close = False
    fake: FakeAnthropic

    def process_request(self, request, client_address):
        self.fake._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.fake._connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- Plumbing

    def _json(self, code: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, error_type: str, message: str, **headers: str) -> None:
        self._json(
            code,
            {
                "type": "error",
                "error": {"type": error_type, "message": message},
                "request_id": self._request_id,
            },
            {"request-id": self._request_id, **headers},
        )

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self._request_id)
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, name: str, payload: dict[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    def _end_body(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # --- The Messages API

    def do_POST(self) -> None:
        fake = self.server.fake
        self._request_id = f"req_fake_{next(fake._ids):06d}"
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        behaviour = fake._next()
        fake._record(
            RecordedRequest(
                method="POST",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                behaviour=behaviour.kind,
            )
        )
        try:
            problem = self._validate(body)
            if problem:
                self._error(*problem)
            else:
                self._run(behaviour, body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True  # the client went away; nothing to tell it

    def do_GET(self) -> None:
        self._request_id = "req_fake_get"
        self._error(404, "not_found_error", "Not found")

    def _validate(self, body: dict[str, Any]) -> tuple[int, str, str] | None:
        fake = self.server.fake
        key = self.headers.get("x-api-key") or ""
        bearer = self.headers.get("authorization") or ""
        if fake.api_key not in (key, bearer.removeprefix("Bearer ").strip()):
            return 401, "authentication_error", "invalid x-api-key"
        if self.path.split("?")[0] != "/v1/messages":
            return 404, "not_found_error", f"Not found: {self.path}"
        if self.headers.get("anthropic-version", "") >= SAMPLING_REJECTED_FROM:
            for name in ("temperature", "top_p", "top_k"):
                if name in body:
                    return 400, "invalid_request_error", f"{name}: Extra inputs are not permitted"
        if not body.get("model"):
            return 400, "invalid_request_error", "model: Field required"
        if not isinstance(body.get("max_tokens"), int):
            return 400, "invalid_request_error", "max_tokens: Field required"
        messages = body.get("messages") or []
        if not messages:
            return 400, "invalid_request_error", "messages: at least one message is required"
        if messages[0].get("role") != "user":
            return 400, "invalid_request_error", "messages: first message must use the user role"
        return None

    def _run(self, b: Behaviour, body: dict[str, Any]) -> None:
        fake = self.server.fake
        if b.kind == "status":
            headers = {
                "x-should-retry": "true"
                if b.status in (408, 409, 429) or b.status >= 500
                else "false"
            }
            if b.retry_after is not None:
                headers["retry-after"] = str(b.retry_after)
            self._error(b.status, b.error_type, b.error_message, **headers)
            return
        if b.kind == "disconnect":
            self._hang_up()
            return
        if b.kind == "slow" and not b.after_headers:
            fake._wait(b.seconds)
            self._hang_up()
            return

        model = b.model or body.get("model") or "claude-fake"
        self._start_stream()
        self._event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_fake_{self._request_id[-6:]}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": b.input_tokens
                        if b.input_tokens is not None
                        else estimate_input_tokens(body),
                        "cache_creation_input_tokens": b.cache_creation_tokens,
                        "cache_read_input_tokens": b.cache_read_tokens,
                        "output_tokens": 1,
                    },
                },
            },
        )
        if b.kind == "slow":
            fake._wait(b.seconds)
            self._hang_up()
            return
        if b.latency_s and fake._wait(b.latency_s):
            return
        self._event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        self._event("ping", {"type": "ping"})
        chunks = b.chunks()
        limit = len(chunks) if b.kind == "ok" else min(b.after_deltas, len(chunks))
        for i, chunk in enumerate(chunks[:limit]):
            if i and b.delay_s and fake._wait(b.delay_s):
                return
            self._event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": chunk},
                },
            )
        if b.kind == "drop":
            self._hang_up()
            return
        if b.kind == "overload_mid_stream":
            self._event(
                "error",
                {"type": "error", "error": {"type": b.error_type, "message": b.error_message}},
            )
            self._end_body()
            return
        if b.kind == "end_early":
            self._end_body()
            return
        self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": b.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": max(1, (len(b.text) + 3) // 4)},
            },
        )
        self._event("message_stop", {"type": "message_stop"})
        self._end_body()


class FakeAnthropic:
    """The fake API server; `start()` it (or use it as a context manager)."""

    def __init__(self, *, default: Behaviour | None = None, api_key: str = API_KEY):
        self.api_key = api_key
        self.default = default or ok()
        self.requests: list[RecordedRequest] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- Script and records

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order."""
        with self._lock:
            self._script.extend(behaviours)

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        with self._lock:
            return len(self._script)

    def _wait(self, seconds: float) -> bool:
        """Sleep, cut short by stop(); True when stopped."""
        return self._stopped.wait(seconds)

    # --- Lifecycle

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> FakeAnthropic:
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":  # a standalone fake for manual runs and the benchmark
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--tokens-per-s", type=float, default=0, help="0: as fast as possible")
    args = parser.parse_args()
    reply = " ".join(f"word{i % 50}" for i in range(args.tokens))  # ~1 token a chunk
    fake = FakeAnthropic(
        default=ok(
            reply,
            chunk_size=max(1, len(reply) // args.tokens),
            latency_s=args.latency_ms / 1000,
            delay_s=1 / args.tokens_per_s if args.tokens_per_s else 0.0,
        )
    ).start(args.port)
    print(f"ANTHROPIC_BASE_URL={fake.base_url} ANTHROPIC_API_KEY={fake.api_key}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()

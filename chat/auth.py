"""Websocket authentication (contract section 1).

Resolves the user from, in this order, the `access_token` subprotocol, an
`Authorization: Bearer` header, a single-use `?ticket=`, a `?token=` JWT, or the
Django session cookie (only from an allowed Origin: cross-site websocket hijacking).
A connection without a valid credential never reaches the consumer: it is accepted
and closed at once with 4401 (no or invalid credential) or 4403 (deactivated user,
or a cookie from a foreign Origin), so that browsers can read the code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from channels.auth import get_user
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from accounts.services import ws_ticket_consume
from chat.db import db_sync_to_async

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
SUBPROTOCOL = "access_token"


@dataclass(frozen=True)
class WsAuth:
    user: User | None
    close_code: int = CLOSE_UNAUTHENTICATED
    subprotocol: str | None = None
    method: str = ""
    expires_at: float | None = None  # epoch seconds, for tokens


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _user_from_jwt(raw: str) -> tuple[int | None, float | None]:
    try:
        token = AccessToken(raw)
    except TokenError:
        return None, None
    user_id = token.get(settings.SIMPLE_JWT.get("USER_ID_CLAIM", "user_id"))
    return (int(user_id) if user_id is not None else None), float(token["exp"])


def _active(
    user_id: int | None,
    *,
    method: str,
    subprotocol: str | None = None,
    expires_at: float | None = None,
) -> WsAuth:
    user = User.objects.filter(pk=user_id).first() if user_id is not None else None
    if user is None:
        return WsAuth(user=None, subprotocol=subprotocol, method=method)
    if not user.is_active:
        return WsAuth(user=None, close_code=CLOSE_FORBIDDEN, subprotocol=subprotocol, method=method)
    return WsAuth(user=user, subprotocol=subprotocol, method=method, expires_at=expires_at)


def _origin_allowed(scope) -> bool:
    origin = _header(scope, b"origin")
    if not origin:
        return False
    host = urlsplit(origin).hostname
    if host is None:
        return False
    allowed = settings.ALLOWED_HOSTS or (
        ["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else []
    )
    return validate_host(host, allowed) or validate_host(f"[{host}]", allowed)


@db_sync_to_async
def _authenticate_credential(scope) -> WsAuth | None:
    """A WsAuth when the request carries a bearer-type credential, None otherwise."""
    subprotocols = scope.get("subprotocols") or []
    if SUBPROTOCOL in subprotocols:
        candidates = [p for p in subprotocols if p != SUBPROTOCOL]
        user_id, exp = _user_from_jwt(candidates[0]) if candidates else (None, None)
        return _active(user_id, subprotocol=SUBPROTOCOL, method="subprotocol", expires_at=exp)
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, raw = authorization.partition(" ")
        user_id, exp = _user_from_jwt(raw.strip()) if scheme.lower() == "bearer" else (None, None)
        return _active(user_id, method="bearer", expires_at=exp)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "ticket" in query:
        return _active(ws_ticket_consume(ticket=query["ticket"][0]), method="ticket")
    if "token" in query:
        user_id, exp = _user_from_jwt(query["token"][0])
        return _active(user_id, method="token", expires_at=exp)
    return None


@db_sync_to_async
def _session_refusal(session) -> WsAuth:
    """Why a session cookie gave no user: 4403 if it names a deactivated one, else 4401."""
    user_id = session.get(SESSION_KEY)
    inactive = user_id is not None and User.objects.filter(pk=user_id, is_active=False).exists()
    return WsAuth(user=None, close_code=CLOSE_FORBIDDEN if inactive else CLOSE_UNAUTHENTICATED)


async def authenticate(scope) -> WsAuth:
    result = await _authenticate_credential(scope)
    if result is not None:
        return result
    if "session" not in scope or not scope["session"].session_key:
        return WsAuth(user=None)
    if not _origin_allowed(scope):
        return WsAuth(user=None, close_code=CLOSE_FORBIDDEN)
    user = await get_user(scope)
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        return await _session_refusal(scope["session"])
    return WsAuth(user=user, method="session")


async def _reject(receive, send, auth: WsAuth) -> None:
    """Accept, then close with the code: a close before accept reaches a browser as a
    bare HTTP 403 it cannot tell apart from a network error."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    accept = {"type": "websocket.accept"}
    if auth.subprotocol:
        accept["subprotocol"] = auth.subprotocol
    await send(accept)
    await send({"type": "websocket.close", "code": auth.close_code})


class _TokenAuthMiddleware:
    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        auth = await authenticate(scope)
        if auth.user is None:
            return await _reject(receive, send, auth)
        return await self.inner(dict(scope, user=auth.user, auth=auth), receive, send)


class _SessionReadingMiddleware(SessionMiddleware):
    """Channels' SessionMiddleware, minus its wrapper around `send`: a socket reads the
    session (to authenticate) and never writes it, and the wrapper's save check would
    run on every frame the socket is sent."""

    async def __call__(self, scope, receive, send):
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def WebsocketAuthMiddleware(inner):
    return CookieMiddleware(_SessionReadingMiddleware(_TokenAuthMiddleware(inner)))


def seconds_left(auth: WsAuth) -> float | None:
    return None if auth.expires_at is None else auth.expires_at - time.time()

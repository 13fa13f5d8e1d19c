"""Accounts: sign-up and single-use websocket tickets."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import User
from accounts.timezones import validate_time_zone
from config.errors import ApplicationError

_TICKET_PREFIX = "ws-ticket:"


def user_register(*, username: str, password: str, email: str = "", display_name: str = "") -> User:
    user = User(username=username, email=email, display_name=display_name)
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise ApplicationError(
            "bad_request", " ".join(exc.messages), details={"fields": {"password": exc.messages}}
        ) from exc
    user.set_password(password)
    taken = ApplicationError(
        "bad_request",
        "That username is taken.",
        details={"fields": {"username": ["That username is taken."]}},
    )
    # Look-alike names ("Alice" beside "alice") are refused, as Django's own forms do.
    if User.objects.filter(username__iexact=username).exists():
        raise taken
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:
        raise taken from exc
    return user


def user_set_time_zone(*, user: User, time_zone: str) -> None:
    """The zone whose midnight resets the user's daily and monthly usage quotas."""
    try:
        validate_time_zone(time_zone)
    except ValidationError as exc:
        raise ApplicationError(
            "bad_request", " ".join(exc.messages), details={"fields": {"time_zone": exc.messages}}
        ) from exc
    user.time_zone = time_zone
    user.save(update_fields=["time_zone"])


def ws_ticket_issue(*, user: User) -> tuple[str, int]:
    """A single-use ticket for `?ticket=` on the websocket URL; harmless if logged."""
    ticket = secrets.token_urlsafe(32)
    ttl = settings.PARLEY_WS_TICKET_TTL_S
    cache.set(_TICKET_PREFIX + ticket, user.pk, timeout=ttl)
    return ticket, ttl


def ws_ticket_consume(*, ticket: str) -> int | None:
    """The ticket's user id, once: whoever deletes the key first wins, so two sockets
    racing with one ticket get one user between them."""
    if not ticket or len(ticket) > 128:
        return None
    key = _TICKET_PREFIX + ticket
    user_id = cache.get(key)
    if user_id is None or not cache.delete(key):
        return None
    return int(user_id)

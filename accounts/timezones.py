"""IANA time zone names: the user's zone decides when their usage periods reset."""

from __future__ import annotations

from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from django.core.exceptions import ValidationError

DEFAULT_TIME_ZONE = "UTC"
# Files in the zoneinfo directory that are not zones a person lives in.
_NOT_ZONES = {"localtime", "posixrules", "Factory"}


@cache
def time_zone_names() -> frozenset[str]:
    return frozenset(available_timezones() - _NOT_ZONES)


def validate_time_zone(value: str) -> None:
    if value not in time_zone_names():
        raise ValidationError(
            "%(value)s is not an IANA time zone name (like Europe/Paris).",
            code="invalid_time_zone",
            params={"value": value},
        )


def zone_of(name: str) -> ZoneInfo:
    """The zone, or UTC for a name that is not (any more) a valid one."""
    try:
        return ZoneInfo(name if name in time_zone_names() else DEFAULT_TIME_ZONE)
    except (ValueError, OSError):
        return ZoneInfo(DEFAULT_TIME_ZONE)

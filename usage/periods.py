"""Quota periods in the user's time zone: a day starts at local midnight, a month at
local midnight on its first day. Counters are keyed by the local start date, so a
period resets at the boundary in the user's own zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from usage.models import Period


@dataclass(frozen=True)
class Window:
    period: str
    start: date  # local date the period starts on
    resets_at: datetime  # aware, in the user's zone: when the next period starts


def window_of(*, period: str, zone: ZoneInfo, now: datetime) -> Window:
    today = now.astimezone(zone).date()
    if period == Period.MONTH:
        start = today.replace(day=1)
        following = (start + timedelta(days=32)).replace(day=1)
    else:
        start = today
        following = today + timedelta(days=1)
    # A midnight skipped by a DST change resolves to the instant the day really starts.
    resets_at = datetime.combine(following, time.min, tzinfo=zone)
    return Window(period=period, start=start, resets_at=resets_at)

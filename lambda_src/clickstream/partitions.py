"""Raw object keys: events/YYYY/MM/DD/HH/events-<uuid>.json, by server receive hour (UTC)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

RAW_PREFIX = "events/"
HOUR = timedelta(hours=1)
_KEY_HOUR = re.compile(r"^events/(\d{4})/(\d{2})/(\d{2})/(\d{2})/")


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour that holds ``moment``."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_prefix(hour: datetime) -> str:
    """``events/YYYY/MM/DD/HH/`` for the UTC hour that holds ``hour``."""
    return floor_hour(hour).strftime(f"{RAW_PREFIX}%Y/%m/%d/%H/")


def object_key(received_at: datetime, object_id: str) -> str:
    """The key of a raw object written at ``received_at``."""
    return f"{hour_prefix(received_at)}events-{object_id}.json"


def hour_of_key(key: str) -> datetime | None:
    """The partition hour a raw object key names, or None for a key outside the layout."""
    match = _KEY_HOUR.match(key)
    if not match:
        return None
    year, month, day, hour = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        return None


def hours_between(first: datetime, last: datetime) -> Iterator[datetime]:
    """Every UTC hour from the one holding ``first`` to the one holding ``last``, inclusive."""
    hour, last_hour = floor_hour(first), floor_hour(last)
    while hour <= last_hour:
        yield hour
        hour += HOUR

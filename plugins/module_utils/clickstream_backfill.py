# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the clickstream_backfill module: windows, chunks, results. No AWS, no database."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

HOUR = timedelta(hours=1)
# A larger window is refused by default: a guard against a typo loading a year.
MAX_WINDOW_HOURS = 744
COUNTS = (
    "objects",
    "events_loaded",
    "events_updated",
    "duplicates_skipped",
    "rejected_lines",
    "missing_objects",
)
# Retries, per chunk and in the totals: invocations Lambda throttled, and runs that found the
# warehouse's run lock held.
RETRY_COUNTS = ("throttle_retries", "lock_retries")


class BackfillError(Exception):
    """The backfill cannot go on; the message says why and what to do."""


def parse_hour(text: str, name: str) -> datetime:
    """An ISO-8601 time (``2025-12-01T00`` names an hour), as the UTC hour that holds it."""
    if not isinstance(text, str) or not text.strip():
        raise BackfillError(f"{name} is empty: give an ISO-8601 hour such as 2025-12-01T00")
    value = text.strip()
    if len(value) == 13:  # 2025-12-01T00
        value += ":00"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BackfillError(
            f"{name}={text!r} is not an ISO-8601 time such as 2025-12-01T00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_hours(start: datetime, end: datetime, max_hours: int) -> list[datetime]:
    """Every hour from start to end inclusive; an error for a reversed or too large window."""
    if end < start:
        raise BackfillError(
            f"the window is reversed: end {end:%Y-%m-%dT%H} is before start {start:%Y-%m-%dT%H}"
        )
    count = int((end - start) / HOUR) + 1
    if count > max_hours:
        raise BackfillError(
            f"the window has {count} hours, more than max_window_hours={max_hours}: "
            "split it, or raise max_window_hours"
        )
    return [start + index * HOUR for index in range(count)]


def chunks(hours: list[datetime], chunk_hours: int) -> list[tuple[datetime, datetime]]:
    """Consecutive (first hour, last hour) pairs of at most ``chunk_hours`` hours, in order."""
    if chunk_hours < 1:
        raise BackfillError(f"chunk_hours must be at least 1, not {chunk_hours}")
    return [
        (hours[index], hours[min(index + chunk_hours, len(hours)) - 1])
        for index in range(0, len(hours), chunk_hours)
    ]


def hour_text(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%dT%H")


def span_text(first: datetime, last: datetime) -> str:
    """``2025-12-01T00`` for one hour, ``2025-12-01T00..2025-12-01T23`` for several."""
    return hour_text(first) if first == last else f"{hour_text(first)}..{hour_text(last)}"


def loaded_line(span: str, counts: dict[str, Any], seconds: float) -> str:
    """What loading ``span`` did, a chunk's or a window's counts, as one line for a terminal: the
    backfill playbook's item label and `make etl`'s line per hour."""
    return (
        f"{span}: {counts['objects']} objects, {counts['events_loaded']} events loaded, "
        f"{counts['events_updated']} updated, {counts['duplicates_skipped']} duplicates, "
        f"{counts['rejected_lines']} rejected, {seconds:.1f} s"
    )


def planned_line(span: str, plan: dict[str, int]) -> str:
    """What a run would load in ``span`` (``plan_totals``), as one line for a terminal."""
    return f"{span}: {plan['objects']} objects, {plan['loaded']} loaded, {plan['to_load']} to load"


def window_request(first: datetime, last: datetime, force: bool, dry_run: bool = False) -> dict:
    """The ETL's window invocation for the hours first..last."""
    request: dict[str, Any] = {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "force": force,
    }
    if dry_run:
        request["dry_run"] = True
    return request


def invocation_result(function_error: str | None, payload: bytes) -> dict[str, Any]:
    """The ETL's answer to a synchronous invocation; BackfillError when the function failed."""
    try:
        document = json.loads(payload.decode("utf-8")) if payload else None
    except (UnicodeDecodeError, ValueError):
        document = None
    if function_error:
        detail = document if isinstance(document, dict) else {}
        message = detail.get("errorMessage") or payload.decode("utf-8", "replace")[:500]
        kind = detail.get("errorType") or function_error
        raise BackfillError(f"the ETL function failed: {kind}: {message}")
    if not isinstance(document, dict):
        raise BackfillError(f"the ETL function answered something unexpected: {payload[:200]!r}")
    return document


def require_succeeded(report: dict[str, Any]) -> dict[str, Any]:
    """A window run's report if the run succeeded; BackfillError with its status and detail if
    not."""
    status = report.get("status")
    if status != "succeeded":
        raise BackfillError(
            f"the run ended {status}: {report.get('detail') or 'no detail'}"
            + (
                " (it ran out of time: load fewer hours per invocation)"
                if report.get("pending_objects")
                else ""
            )
        )
    return report


def throttle_delay(
    retry: int, base_seconds: float, max_seconds: float, draw=random.uniform
) -> float:
    """Seconds to wait before throttle retry number ``retry`` (0 first): exponential backoff
    with full jitter, a random wait up to base * 2**retry, capped at max_seconds. Jitter keeps
    callers throttled together from coming back together (AWS Architecture Blog, "Exponential
    Backoff And Jitter")."""
    return draw(0.0, min(max_seconds, base_seconds * 2**retry))


def throttled_through(function_name: str, retries: int, waited_seconds: float) -> str:
    """The failure of an invocation Lambda throttled on every attempt."""
    return (
        f"Lambda throttled {function_name} (TooManyRequestsException) through {retries} "
        f"throttle_retries ({waited_seconds:.1f} s of backoff): its reserved concurrency is in use "
        "(the hourly run holds it) or 0. Run again later, or raise throttle_retries or "
        "throttle_max_delay"
    )


def chunk_result(
    first: datetime,
    last: datetime,
    report: dict[str, Any],
    throttle_retries: int = 0,
    lock_retries: int = 0,
) -> dict[str, Any]:
    """One chunk's line of the module's results."""
    result = {"start": hour_text(first), "end": hour_text(last), "status": report.get("status")}
    result.update({name: int(report.get(name) or 0) for name in COUNTS})
    result["duration_seconds"] = report.get("duration_seconds")
    result.update(throttle_retries=throttle_retries, lock_retries=lock_retries)
    return result


def totals(results: list[dict[str, Any]]) -> dict[str, int]:
    names = COUNTS + RETRY_COUNTS
    summed = {name: sum(result.get(name, 0) for result in results) for name in names}
    summed["chunks"] = len(results)
    return summed


def plan_totals(hours: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "hours": len(hours),
        "objects": sum(hour["objects"] for hour in hours),
        "loaded": sum(hour["loaded"] for hour in hours),
        "to_load": sum(hour["to_load"] for hour in hours),
    }

"""Lambda ETL: loads raw clickstream objects from S3 into the PostgreSQL warehouse.

Invocations:
- scheduled (the EventBridge rule, or ``{}``): load every raw object not loaded yet;
- window (``{"start": ISO-8601, "end": ISO-8601, "force": false}``): load the hour partitions
  from start to end; ``force`` reloads objects already loaded (the backfill module sends this);
  with ``"dry_run": true`` it loads nothing and returns, per hour, the objects found and how many
  are loaded already (the backfill module's check mode).

Environment: RAW_BUCKET, DWH_HOST, DWH_PORT, DWH_USER, DWH_DATABASE, and DWH_PASSWORD_PARAM (an
SSM SecureString parameter name) or, outside AWS, DWH_PASSWORD. Optional: ETL_LOOKBACK_HOURS,
ETL_INITIAL_LOOKBACK_HOURS, ETL_TIME_RESERVE_SECONDS.

Returns the run report and logs it as one JSON line with CloudWatch embedded metrics; before it,
one JSON line per hour partition as its objects finish loading ("ETL hour loaded": the hour's
counts, its seconds, the objects left), so the logs show how far a long run is. A run that
cannot reach the warehouse raises (so the invocation counts as failed and alarms fire); the next
run catches up, because the ledger says what is loaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from clickstream import loader
from clickstream.logs import embedded_metrics, get_logger, log
from clickstream.warehouse import (
    ConfigurationError,
    WarehouseSettings,
    connect,
    resolve_password,
)

LOGGER = get_logger("clickstream.etl")
FUNCTION_DIMENSION = {"Function": "etl"}
# Stop starting new transactions when less than this is left of the Lambda's time.
DEFAULT_TIME_RESERVE_SECONDS = 60


@dataclass(frozen=True)
class WindowRequest:
    start: datetime
    end: datetime
    force: bool
    dry_run: bool = False


def parse_invocation(event: Any) -> WindowRequest | None:
    """None for a scheduled run, a WindowRequest for a window run; ValueError if malformed."""
    if not isinstance(event, Mapping):
        raise ValueError("the invocation event must be a JSON object")
    if "start" not in event and "end" not in event:
        return None  # {} or an EventBridge scheduled event
    if "start" not in event or "end" not in event:
        raise ValueError("a window run needs both 'start' and 'end' (ISO-8601)")
    start, end = (_parse_moment(event[name], name) for name in ("start", "end"))
    if end < start:
        raise ValueError(f"'end' ({event['end']}) is before 'start' ({event['start']})")
    flags = {name: event.get(name, False) for name in ("force", "dry_run")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"'{name}' must be true or false")
    return WindowRequest(start, end, **flags)


def _parse_moment(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be an ISO-8601 string, got {value!r}")
    text = value if len(value) != 13 else value + ":00"  # "2025-12-01T00": an hour
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"'{name}' is not ISO-8601: {value!r}") from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@cache
def _s3_client():
    # One pooled connection per object the loader reads at a time.
    return boto3.client("s3", config=Config(max_pool_connections=loader.FETCH_CONCURRENCY))


@cache
def _ssm_client():
    return boto3.client("ssm")


def _int_setting(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(environ.get(name, default))
    except ValueError as error:
        raise ConfigurationError(f"{name} must be a whole number: {error}") from error


def _plan(connection, bucket: str, request: WindowRequest) -> dict[str, Any]:
    """A dry run: what a window run would load, per hour; reads only."""
    hours = loader.plan_window(
        connection, _s3_client(), bucket, start=request.start, end=request.end, force=request.force
    )
    plan = {"dry_run": True, "forced": request.force, "hours": [h.as_dict() for h in hours]}
    log(LOGGER, logging.INFO, "ETL dry run", objects_to_load=sum(h.to_load for h in hours))
    return plan


def _log_hour(hour: loader.HourLoaded) -> None:
    # A constant message, like the run's line: a log query follows a run by its run_id.
    log(LOGGER, logging.INFO, "ETL hour loaded", **hour.as_dict())


def handler(event: Any, context: Any) -> dict[str, Any]:
    environ = os.environ
    request = parse_invocation(event)
    bucket = environ.get("RAW_BUCKET")
    if not bucket:
        raise ConfigurationError("missing environment variable: RAW_BUCKET")
    settings = WarehouseSettings.from_environment(environ)
    deadline = None
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        reserve = _int_setting(environ, "ETL_TIME_RESERVE_SECONDS", DEFAULT_TIME_RESERVE_SECONDS)
        deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - reserve

    try:
        connection = connect(settings, resolve_password(settings, _ssm_client), "clickstream-etl")
        try:
            if request is None:
                report = loader.run_scheduled(
                    connection,
                    _s3_client(),
                    bucket,
                    lookback_hours=_int_setting(
                        environ, "ETL_LOOKBACK_HOURS", loader.DEFAULT_LOOKBACK_HOURS
                    ),
                    initial_lookback_hours=_int_setting(
                        environ,
                        "ETL_INITIAL_LOOKBACK_HOURS",
                        loader.DEFAULT_INITIAL_LOOKBACK_HOURS,
                    ),
                    deadline=deadline,
                    progress=_log_hour,
                )
            elif request.dry_run:
                return _plan(connection, bucket, request)
            else:
                report = loader.run_window(
                    connection,
                    _s3_client(),
                    bucket,
                    start=request.start,
                    end=request.end,
                    force=request.force,
                    deadline=deadline,
                    progress=_log_hour,
                )
        finally:
            connection.close()
    except Exception as error:
        failure_metrics = embedded_metrics({"RunFailed": (1, "Count")}, FUNCTION_DIMENSION)
        log(
            LOGGER,
            logging.ERROR,
            "ETL run failed",
            error=f"{type(error).__name__}: {error}",
            **failure_metrics,
        )
        raise

    summary = report.as_dict()
    metrics = {
        "ObjectsLoaded": (report.objects, "Count"),
        "EventsLoaded": (report.events_loaded, "Count"),
        "DuplicatesSkipped": (report.duplicates_skipped, "Count"),
        "RejectedLines": (report.rejected_lines, "Count"),
        "IsolatedLines": (report.isolated_lines, "Count"),
        "AbandonedRuns": (report.abandoned_runs, "Count"),
        "PendingObjects": (report.pending_objects, "Count"),
        "LagSeconds": (report.lag_seconds or 0.0, "Seconds"),
        "RunFailed": (0, "Count"),
    }
    # A constant message, the outcome in "status": log queries filter on fields, not on text.
    log(
        LOGGER,
        logging.INFO,
        "ETL run finished",
        **summary,
        **embedded_metrics(metrics, FUNCTION_DIMENSION),
    )
    return summary

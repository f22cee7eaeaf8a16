"""Load raw objects into the warehouse: the one load implementation.

Lambda ETL (scheduled and window runs), the backfill module and the tests all come through
``run_scheduled`` / ``run_window``. What it guarantees:

- Exactly once: a raw object is loaded when its row is in ``etl_loaded_objects``; that row is
  committed in the same transaction as the object's events and rejects, so a crash at any point
  leaves all of an object or none of it, and the next run picks up what is missing.
- No duplicates: events are staged with COPY, then inserted skipping event_ids already present
  (``force`` rewrites them instead, so a mapping fix reaches old rows, still without duplicates).
- Nothing lost: a line that breaks the contract goes to ``etl_rejects`` with its reason and text;
  its neighbours load.
- One run at a time: a session advisory lock; a second concurrent run returns ``skipped``.
- No bucket rescans: a scheduled run lists only the hour partitions from the newest loaded one
  (minus a lookback for late objects) to now.
- Incremental aggregates: loads mark the hours and sessions they touched; the run then
  recomputes only those (``refresh_dirty_aggregates()`` in the migrations).
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from psycopg2 import sql
from psycopg2.extras import execute_values

from clickstream import raw_store
from clickstream.mapping import WAREHOUSE_COLUMNS, RejectedLine, parse_raw_line
from clickstream.partitions import floor_hour, hours_between
from clickstream.raw_store import RawObject

# pg_try_advisory_lock key shared by every loader: "clickstream etl" as a stable integer.
RUN_LOCK_KEY = 0x636C69636B65746C
DEFAULT_LOOKBACK_HOURS = 3
DEFAULT_INITIAL_LOOKBACK_HOURS = 24
# A transaction holds whole objects up to about this many lines, bounding memory and the work a
# crash can roll back; objects are never split across transactions.
CHUNK_TARGET_LINES = 50_000
FETCH_CONCURRENCY = 16

_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, WAREHOUSE_COLUMNS))
_UPDATED_COLUMNS = [column for column in WAREHOUSE_COLUMNS if column != "event_id"]
_CREATE_STAGING = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS etl_staging "
    "(LIKE public.clickstream_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY_TO_STAGING = sql.SQL("COPY etl_staging ({}) FROM STDIN WITH (FORMAT csv)").format(_COLUMNS)
# Duplicates inside one batch need no DISTINCT: DO NOTHING also skips rows this INSERT added.
_INSERT_NEW_EVENTS = sql.SQL(
    "INSERT INTO public.clickstream_events ({columns}) "
    "SELECT {columns} FROM etl_staging ON CONFLICT (event_id) DO NOTHING"
).format(columns=_COLUMNS)
# A forced reload rewrites rows whose mapping changed; xmax = 0 tells inserted from updated.
_UPSERT_EVENTS = sql.SQL("""
WITH upserted AS (
    INSERT INTO public.clickstream_events AS existing ({columns})
    SELECT DISTINCT ON (event_id) {columns} FROM etl_staging ORDER BY event_id, received_at
    ON CONFLICT (event_id) DO UPDATE SET ({updated}) = ({excluded})
    WHERE ({existing}) IS DISTINCT FROM ({excluded})
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted
""").format(
    columns=_COLUMNS,
    updated=sql.SQL(", ").join(map(sql.Identifier, _UPDATED_COLUMNS)),
    excluded=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in _UPDATED_COLUMNS),
    existing=sql.SQL(", ").join(sql.Identifier("existing", c) for c in _UPDATED_COLUMNS),
)
_MARK_DIRTY = """
INSERT INTO public.etl_dirty_hours (hour_start)
SELECT DISTINCT date_trunc('hour', event_timestamp) FROM etl_staging
ON CONFLICT DO NOTHING;
INSERT INTO public.etl_dirty_sessions (session_id)
SELECT DISTINCT session_id FROM etl_staging WHERE session_id IS NOT NULL
ON CONFLICT DO NOTHING;
"""
_RECORD_REJECTS = """
INSERT INTO public.etl_rejects (object_key, line_number, reason, raw_text, run_id) VALUES %s
ON CONFLICT (object_key, line_number) DO UPDATE
SET reason = EXCLUDED.reason, raw_text = EXCLUDED.raw_text, run_id = EXCLUDED.run_id,
    rejected_at = now()
"""
_RECORD_LOADED_OBJECTS = """
INSERT INTO public.etl_loaded_objects
    (object_key, partition_hour, etag, size_bytes, lines, rejected_lines, run_id) VALUES %s
ON CONFLICT (object_key) DO UPDATE
SET etag = EXCLUDED.etag, size_bytes = EXCLUDED.size_bytes, lines = EXCLUDED.lines,
    rejected_lines = EXCLUDED.rejected_lines, run_id = EXCLUDED.run_id, loaded_at = now()
"""


@dataclass
class RunReport:
    """What a run did; returned by the Lambda, logged as one JSON line, kept in etl_runs."""

    run_id: str
    trigger: str
    forced: bool
    window_start: str | None = None
    window_end: str | None = None
    status: str = "running"
    hours_listed: int = 0
    objects: int = 0
    events_loaded: int = 0
    events_updated: int = 0
    duplicates_skipped: int = 0
    rejected_lines: int = 0
    missing_objects: int = 0
    pending_objects: int = 0
    lag_seconds: float | None = None
    aggregates_refreshed: dict[str, int] = field(default_factory=dict)
    detail: str | None = None
    duration_seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _PreparedChunk:
    """A transaction's worth of objects, parsed: CSV rows for COPY, rejects, ledger rows."""

    csv_rows: io.StringIO
    rejects: list[tuple]
    ledger_rows: list[tuple]
    missing: int


def run_scheduled(
    connection,
    s3_client,
    bucket: str,
    *,
    now: datetime | None = None,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    initial_lookback_hours: int = DEFAULT_INITIAL_LOOKBACK_HOURS,
    deadline: float | None = None,
) -> RunReport:
    """Load every raw object not loaded yet, from the newest loaded hour (minus a lookback) on.

    ``deadline`` is a time.monotonic() value after which no new transaction starts (the run is
    then ``incomplete`` and the next one carries on).
    """
    now = now or datetime.now(UTC)

    def hours_to_list() -> list[datetime]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(partition_hour) FROM public.etl_loaded_objects")
            newest_loaded = cursor.fetchone()[0]
        connection.commit()
        if newest_loaded is None:
            first = now - timedelta(hours=initial_lookback_hours)
        else:
            first = newest_loaded - timedelta(hours=lookback_hours)
        return list(hours_between(first, now))

    report = RunReport(run_id=str(uuid.uuid4()), trigger="schedule", forced=False)
    return _run(connection, s3_client, bucket, report, hours_to_list, deadline, now)


def run_window(
    connection,
    s3_client,
    bucket: str,
    *,
    start: datetime,
    end: datetime,
    force: bool = False,
    deadline: float | None = None,
) -> RunReport:
    """Load the objects of the hour partitions from ``start`` to ``end`` (inclusive hours).

    Objects already in the ledger are skipped unless ``force``, which reloads them.
    """
    if end < start:
        raise ValueError(
            f"the window ends ({end.isoformat()}) before it starts ({start.isoformat()})"
        )
    report = RunReport(
        run_id=str(uuid.uuid4()),
        trigger="window",
        forced=force,
        window_start=floor_hour(start).isoformat(),
        window_end=floor_hour(end).isoformat(),
    )
    return _run(
        connection,
        s3_client,
        bucket,
        report,
        lambda: list(hours_between(start, end)),
        deadline,
        datetime.now(UTC),
    )


def unloaded_objects(
    connection, s3_client, bucket: str, hours: list[datetime], *, force: bool = False
) -> list[RawObject]:
    """The raw objects of ``hours`` that are not in the load ledger (all of them with force)."""
    if not hours:
        return []
    listed = [item for hour in hours for item in raw_store.list_hour(s3_client, bucket, hour)]
    if force or not listed:
        return listed
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT object_key FROM public.etl_loaded_objects "
            "WHERE partition_hour BETWEEN %s AND %s",
            (min(hours), max(hours)),
        )
        loaded = {key for (key,) in cursor.fetchall()}
    connection.commit()
    return [item for item in listed if item.key not in loaded]


def _run(connection, s3_client, bucket, report, hours_to_list, deadline, now) -> RunReport:
    started = time.monotonic()
    with _exclusive_run(connection) as acquired:
        if not acquired:
            report.status = "skipped"
            report.detail = "another ETL run holds the warehouse lock; this run did nothing"
            return report
        _record_run(connection, report, started=True)
        try:
            hours = hours_to_list()
            report.hours_listed = len(hours)
            objects = unloaded_objects(connection, s3_client, bucket, hours, force=report.forced)
            if objects:
                oldest = min(item.last_modified for item in objects)
                report.lag_seconds = max(0.0, (now - oldest).total_seconds())
            _load_objects(connection, s3_client, bucket, objects, report, deadline)
            report.aggregates_refreshed = refresh_aggregates(connection)
            report.status = "incomplete" if report.pending_objects else "succeeded"
        except Exception as error:
            report.status = "failed"
            report.detail = f"{type(error).__name__}: {error}"
            raise
        finally:
            report.duration_seconds = round(time.monotonic() - started, 3)
            _record_run(connection, report, started=False)
    return report


@contextmanager
def _exclusive_run(connection) -> Iterator[bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,))
        acquired = cursor.fetchone()[0]
        cursor.execute(_CREATE_STAGING)
    connection.commit()
    try:
        yield acquired
    finally:
        if acquired and not connection.closed:
            connection.rollback()
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))
            connection.commit()


def _record_run(connection, report: RunReport, *, started: bool) -> None:
    """Keep the run in etl_runs. A failure here (the database went away) never hides the cause."""
    if connection.closed:
        return
    try:
        connection.rollback()
        with connection.cursor() as cursor:
            if started:
                cursor.execute(
                    "INSERT INTO public.etl_runs (run_id, trigger, window_start, window_end, "
                    "forced, status) VALUES (%s, %s, %s, %s, %s, 'running')",
                    (report.run_id, report.trigger, report.window_start, report.window_end,
                     report.forced),
                )  # fmt: skip
            else:
                cursor.execute(
                    "UPDATE public.etl_runs SET status = %s, finished_at = now(), objects = %s, "
                    "events_loaded = %s, events_updated = %s, duplicates_skipped = %s, "
                    "rejected_lines = %s, pending_objects = %s, lag_seconds = %s, detail = %s "
                    "WHERE run_id = %s",
                    (report.status, report.objects, report.events_loaded, report.events_updated,
                     report.duplicates_skipped, report.rejected_lines, report.pending_objects,
                     report.lag_seconds, report.detail, report.run_id),
                )  # fmt: skip
        connection.commit()
    except Exception:
        if started:
            raise
        # Ending the record is best effort: the error that stopped the run is what matters.


def refresh_aggregates(connection) -> dict[str, int]:
    """Recompute the sessions and rollups that loads marked dirty; one transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM public.refresh_dirty_aggregates()")
        hours, days, sessions = cursor.fetchone()
    connection.commit()
    return {"hours": hours, "days": days, "sessions": sessions}


def _load_objects(connection, s3_client, bucket, objects, report, deadline) -> None:
    def read(item: RawObject) -> bytes | None:
        return raw_store.read_object(s3_client, bucket, item.key)

    for chunk in _chunks(_fetch_in_order(objects, read)):
        if deadline is not None and time.monotonic() > deadline:
            report.pending_objects = len(objects) - report.objects - report.missing_objects
            return
        _load_chunk(connection, _prepare_chunk(chunk, report.run_id), report)


def _fetch_in_order(
    objects: list[RawObject], read: Callable[[RawObject], bytes | None]
) -> Iterator[tuple[RawObject, bytes | None]]:
    """(object, body) in listing order, reading up to FETCH_CONCURRENCY objects ahead."""
    with ThreadPoolExecutor(max_workers=FETCH_CONCURRENCY) as pool:
        in_flight: deque = deque()
        remaining = iter(objects)
        for item in remaining:
            in_flight.append((item, pool.submit(read, item)))
            if len(in_flight) >= FETCH_CONCURRENCY:
                break
        while in_flight:
            item, future = in_flight.popleft()
            next_item = next(remaining, None)
            if next_item is not None:
                in_flight.append((next_item, pool.submit(read, next_item)))
            yield item, future.result()


def _chunks(
    fetched: Iterable[tuple[RawObject, bytes | None]],
) -> Iterator[list[tuple[RawObject, bytes | None]]]:
    chunk: list[tuple[RawObject, bytes | None]] = []
    lines = 0
    for item, body in fetched:
        chunk.append((item, body))
        lines += body.count(b"\n") + 1 if body else 0
        if lines >= CHUNK_TARGET_LINES:
            yield chunk
            chunk, lines = [], 0
    if chunk:
        yield chunk


def _prepare_chunk(chunk: list[tuple[RawObject, bytes | None]], run_id: str) -> _PreparedChunk:
    csv_rows = io.StringIO()
    writer = csv.writer(csv_rows, lineterminator="\n")
    rejects: list[tuple] = []
    ledger_rows: list[tuple] = []
    missing = 0
    for item, body in chunk:
        if body is None:  # expired between listing and reading: nothing to load, nothing to mark
            missing += 1
            continue
        line_count = rejected = 0
        for line_number, raw_line in enumerate(body.split(b"\n"), start=1):
            if not raw_line.strip():
                continue
            line_count += 1
            parsed = _parse_line(raw_line, line_number)
            if isinstance(parsed, RejectedLine):
                rejected += 1
                rejects.append((item.key, line_number, parsed.reason, parsed.raw_text, run_id))
            else:
                writer.writerow(parsed)
        ledger_rows.append(
            (item.key, item.hour, item.etag, item.size, line_count, rejected, run_id)
        )
    csv_rows.seek(0)
    return _PreparedChunk(csv_rows, rejects, ledger_rows, missing)


def _parse_line(raw_line: bytes, line_number: int):
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        text = raw_line.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        return RejectedLine(line_number, f"not valid UTF-8: {error}", text)
    parsed = parse_raw_line(line, line_number)
    if isinstance(parsed, RejectedLine) and "\x00" in parsed.raw_text:
        # PostgreSQL text cannot hold U+0000; keep the line, visibly marked where it was.
        return RejectedLine(line_number, parsed.reason, parsed.raw_text.replace("\x00", "\ufffd"))
    return parsed


def _load_chunk(connection, prepared: _PreparedChunk, report: RunReport) -> None:
    """One transaction: stage, merge, mark dirty, keep rejects, record the objects."""
    try:
        with connection.cursor() as cursor:
            cursor.copy_expert(_COPY_TO_STAGING, prepared.csv_rows)
            staged = cursor.rowcount
            if report.forced:
                cursor.execute(_UPSERT_EVENTS)
                inserted, updated = cursor.fetchone()
            else:
                cursor.execute(_INSERT_NEW_EVENTS)
                inserted, updated = cursor.rowcount, 0
            cursor.execute(_MARK_DIRTY)
            if prepared.rejects:
                execute_values(cursor, _RECORD_REJECTS, prepared.rejects, page_size=500)
            if prepared.ledger_rows:
                execute_values(cursor, _RECORD_LOADED_OBJECTS, prepared.ledger_rows, page_size=1000)
        connection.commit()
    except Exception:
        if not connection.closed:
            connection.rollback()
        raise
    report.objects += len(prepared.ledger_rows)
    report.missing_objects += prepared.missing
    report.events_loaded += inserted
    report.events_updated += updated
    report.duplicates_skipped += staged - inserted - updated
    report.rejected_lines += len(prepared.rejects)

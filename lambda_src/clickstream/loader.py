"""Load raw objects into the warehouse: the one load implementation.

Lambda ETL (scheduled and window runs), the backfill module and the tests all come through
``run_scheduled`` / ``run_window``. What it guarantees:

- Exactly once: a raw object is loaded when its row is in ``etl_loaded_objects``; that row is
  committed in the same transaction as the object's events and rejects, so a crash at any point
  leaves all of an object or none of it, and the next run picks up what is missing.
- No duplicates: the events of a chunk whose event_id is already present, or repeated within
  the chunk, are skipped, and the rest are COPYed in (``force`` stages the chunk and rewrites
  existing rows instead, so a mapping fix reaches old rows, still without duplicates).
- Nothing lost: a line that breaks the contract goes to ``etl_rejects`` with its reason and text;
  its neighbours load.
- One run at a time: a session advisory lock; a second concurrent run returns ``skipped``.
- No bucket rescans: a scheduled run lists only the hour partitions from the newest loaded one
  (minus a lookback for late objects) to now.
- Incremental aggregates: loads mark the hours they touched; the run then recomputes only those
  hours, their days and their sessions (``refresh_dirty_aggregates()`` in the migrations).
"""

from __future__ import annotations

import csv
import io
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg2.errors
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
# crash can roll back (objects are never split across transactions); small enough that parsing
# the next chunk overlaps merging this one.
CHUNK_TARGET_LINES = 10_000
COPY_READ_SIZE = 1 << 20
FETCH_CONCURRENCY = 16
STAGING_MEMORY = "256MB"

_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, WAREHOUSE_COLUMNS))
_UPDATED_COLUMNS = [column for column in WAREHOUSE_COLUMNS if column != "event_id"]
_CREATE_STAGING = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS etl_staging "
    "(LIKE public.clickstream_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY_TO_STAGING = sql.SQL("COPY etl_staging ({}) FROM STDIN WITH (FORMAT csv)").format(_COLUMNS)
_COPY_TO_EVENTS = sql.SQL(
    "COPY public.clickstream_events ({}) FROM STDIN WITH (FORMAT csv)"
).format(_COLUMNS)
# One primary-key probe per candidate (LATERAL ... LIMIT 1): a plain "= ANY" or a join is planned
# as a scan of the whole table while its statistics still describe it before this load.
_EXISTING_EVENT_IDS = (
    "SELECT candidate.event_id::text FROM unnest(%s::uuid[]) AS candidate (event_id), "
    "LATERAL (SELECT 1 FROM public.clickstream_events AS e "
    "WHERE e.event_id = candidate.event_id LIMIT 1) AS found"
)
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
_MARK_HOURS_DIRTY = """
INSERT INTO public.etl_dirty_hours (hour_start) VALUES %s ON CONFLICT DO NOTHING
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
    # Wall time of each phase: listing the partitions, loading the objects, refreshing aggregates.
    phase_seconds: dict[str, float] = field(default_factory=dict)
    detail: str | None = None
    duration_seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _PreparedChunk:
    """A transaction's worth of objects, parsed, ready for the warehouse.

    ``rows`` are the chunk's events, each once (the first of a repeated event_id), and
    ``csv_rows`` the same rows as COPY input.
    """

    rows: list[tuple]
    csv_rows: io.StringIO
    repeated_in_chunk: int
    dirty_hours: set[str]
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
    _require_ordered(start, end)
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


@dataclass(frozen=True)
class HourPlan:
    """What a window run would do in one hour partition: objects there, and already loaded."""

    hour: str
    objects: int
    loaded: int
    to_load: int

    def as_dict(self) -> dict:
        return asdict(self)


def plan_window(
    connection, s3_client, bucket: str, *, start: datetime, end: datetime, force: bool = False
) -> list[HourPlan]:
    """Per hour of the window: the raw objects found and how many the ledger holds. Reads only."""
    _require_ordered(start, end)
    hours = list(hours_between(start, end))
    listed = _list_hours(s3_client, bucket, hours)
    loaded_keys = _loaded_keys(connection, hours)
    plans = []
    for hour, objects in listed.items():
        loaded = sum(1 for item in objects if item.key in loaded_keys)
        to_load = len(objects) if force else len(objects) - loaded
        plans.append(HourPlan(hour.isoformat(), len(objects), loaded, to_load))
    return plans


def _require_ordered(start: datetime, end: datetime) -> None:
    if end < start:
        raise ValueError(
            f"the window ends ({end.isoformat()}) before it starts ({start.isoformat()})"
        )


def unloaded_objects(
    connection, s3_client, bucket: str, hours: list[datetime], *, force: bool = False
) -> list[RawObject]:
    """The raw objects of ``hours`` that are not in the load ledger (all of them with force)."""
    if not hours:
        return []
    listed = [
        item for objects in _list_hours(s3_client, bucket, hours).values() for item in objects
    ]
    if force or not listed:
        return listed
    loaded_keys = _loaded_keys(connection, hours)
    return [item for item in listed if item.key not in loaded_keys]


def _list_hours(s3_client, bucket: str, hours: list[datetime]) -> dict[datetime, list[RawObject]]:
    """Each hour's raw objects, the partitions listed in parallel (one LIST is a round trip)."""
    with ThreadPoolExecutor(max_workers=FETCH_CONCURRENCY) as pool:
        per_hour = pool.map(lambda hour: raw_store.list_hour(s3_client, bucket, hour), hours)
        return dict(zip(hours, per_hour, strict=True))


def _loaded_keys(connection, hours: list[datetime]) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT object_key FROM public.etl_loaded_objects "
            "WHERE partition_hour BETWEEN %s AND %s",
            (min(hours), max(hours)),
        )
        loaded = {key for (key,) in cursor.fetchall()}
    connection.commit()
    return loaded


def _run(connection, s3_client, bucket, report, hours_to_list, deadline, now) -> RunReport:
    started = time.monotonic()
    with _exclusive_run(connection) as acquired:
        if not acquired:
            report.status = "skipped"
            report.detail = "another ETL run holds the warehouse lock; this run did nothing"
            return report
        _record_run(connection, report, started=True)
        try:
            with _timed(report, "list"):
                hours = hours_to_list()
                report.hours_listed = len(hours)
                objects = unloaded_objects(
                    connection, s3_client, bucket, hours, force=report.forced
                )
            if objects:
                oldest = min(item.last_modified for item in objects)
                report.lag_seconds = max(0.0, (now - oldest).total_seconds())
            with _timed(report, "load"):
                _load_objects(connection, s3_client, bucket, objects, report, deadline)
            with _timed(report, "refresh"):
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
def _timed(report: RunReport, phase: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        report.phase_seconds[phase] = round(time.monotonic() - started, 3)


@contextmanager
def _exclusive_run(connection) -> Iterator[bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,))
        acquired = cursor.fetchone()[0]
        cursor.execute("SELECT to_regclass('pg_temp.etl_staging') IS NULL")
        if cursor.fetchone()[0]:
            # A chunk's staging table must stay in memory; settable only before a session's
            # first use of temporary tables, so once, when the staging table is created.
            cursor.execute(f"SET temp_buffers = '{STAGING_MEMORY}'")
        cursor.execute(_CREATE_STAGING)
    connection.commit()
    try:
        yield acquired
    finally:
        if acquired and not connection.closed:
            try:
                connection.rollback()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))
                connection.commit()
            except psycopg2.Error:
                pass  # the connection is gone, and its session lock with it: nothing to release


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

    prepared_chunks = (
        _prepare_chunk(chunk, report.run_id) for chunk in _chunks(_fetch_in_order(objects, read))
    )
    # Parsing the next chunk (Python, this process) overlaps merging this one (PostgreSQL).
    for prepared in _read_ahead(prepared_chunks):
        if deadline is not None and time.monotonic() > deadline:
            report.pending_objects = len(objects) - report.objects - report.missing_objects
            return
        _load_chunk(connection, prepared, report)


def _read_ahead(items: Iterator[_PreparedChunk], depth: int = 1) -> Iterator[_PreparedChunk]:
    """Yield ``items`` while a background thread produces up to ``depth`` of them ahead.

    The producer's exceptions are raised here; leaving the loop early stops the producer.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(message: tuple) -> bool:
        while not stop.is_set():
            try:
                handoff.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("done", None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            offer(("error", error))

    producer = threading.Thread(target=produce, name="clickstream-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        producer.join()


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
    rows: list[tuple] = []
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
                rows.append(parsed)
        ledger_rows.append(
            (item.key, item.hour, item.etag, item.size, line_count, rejected, run_id)
        )
    unique_rows = _first_of_each_event(rows)
    return _PreparedChunk(
        rows=unique_rows,
        csv_rows=_csv_of(unique_rows),
        repeated_in_chunk=len(rows) - len(unique_rows),
        dirty_hours={_utc_hour(row[1]) for row in unique_rows},
        rejects=rejects,
        ledger_rows=ledger_rows,
        missing=missing,
    )


def _first_of_each_event(rows: list[tuple]) -> list[tuple]:
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row[0] not in seen:
            seen.add(row[0])
            unique.append(row)
    return unique


def _csv_of(rows: Iterable[tuple]) -> io.StringIO:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    buffer.seek(0)
    return buffer


def _utc_hour(timestamp: str) -> str:
    """'2025-12-01T10' for any contract timestamp in that UTC hour."""
    if timestamp.endswith("Z"):
        return timestamp[:13]
    return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%dT%H")


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
    """One transaction: the chunk's new events, its dirty hours, rejects and ledger rows."""
    try:
        with connection.cursor() as cursor:
            if report.forced:
                inserted, updated = _upsert_through_staging(cursor, prepared)
            else:
                inserted, updated = _copy_new_events(connection, cursor, prepared), 0
            _record_chunk(cursor, prepared)
        connection.commit()
    except Exception:
        if not connection.closed:
            connection.rollback()
        raise
    report.objects += len(prepared.ledger_rows)
    report.missing_objects += prepared.missing
    report.events_loaded += inserted
    report.events_updated += updated
    report.duplicates_skipped += (
        prepared.repeated_in_chunk + len(prepared.rows) - inserted - updated
    )
    report.rejected_lines += len(prepared.rejects)


def _copy_new_events(connection, cursor, prepared: _PreparedChunk) -> int:
    """COPY the events not in the warehouse yet straight into it; return how many.

    Safe without ON CONFLICT because loads hold the run lock. Should a row have been written
    outside it meanwhile, the unique key refuses the COPY and the chunk goes through staging.
    """
    cursor.execute("SAVEPOINT before_copy")
    cursor.execute(_EXISTING_EVENT_IDS, ([row[0] for row in prepared.rows],))
    existing = {event_id for (event_id,) in cursor.fetchall()}
    new_rows = prepared.csv_rows
    if existing:
        new_rows = _csv_of(row for row in prepared.rows if row[0] not in existing)
    try:
        cursor.copy_expert(_COPY_TO_EVENTS, new_rows, size=COPY_READ_SIZE)
    except psycopg2.errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT before_copy")
        prepared.csv_rows.seek(0)
        cursor.copy_expert(_COPY_TO_STAGING, prepared.csv_rows, size=COPY_READ_SIZE)
        cursor.execute(_INSERT_NEW_EVENTS)
    return cursor.rowcount


def _upsert_through_staging(cursor, prepared: _PreparedChunk) -> tuple[int, int]:
    cursor.copy_expert(_COPY_TO_STAGING, prepared.csv_rows, size=COPY_READ_SIZE)
    cursor.execute(_UPSERT_EVENTS)
    inserted, updated = cursor.fetchone()
    return inserted, updated


def _record_chunk(cursor, prepared: _PreparedChunk) -> None:
    if prepared.dirty_hours:
        hours = [(f"{hour}:00:00+00",) for hour in sorted(prepared.dirty_hours)]
        execute_values(cursor, _MARK_HOURS_DIRTY, hours, page_size=1000)
    if prepared.rejects:
        execute_values(cursor, _RECORD_REJECTS, prepared.rejects, page_size=500)
    if prepared.ledger_rows:
        execute_values(cursor, _RECORD_LOADED_OBJECTS, prepared.ledger_rows, page_size=1000)

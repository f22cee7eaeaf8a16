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
  its neighbours load. The COPY encoding is total (every character a text column can hold is
  quoted as data), and should PostgreSQL still refuse a row, the chunk isolates it under
  savepoints (bisection) and keeps it as a reject with PostgreSQL's reason: one bad line never
  holds back another.
- One run at a time: a session advisory lock; a second concurrent run returns ``skipped``. The run
  that holds it marks runs left ``running`` by a process that died as ``abandoned``.
- No bucket rescans: a scheduled run lists only the hour partitions from the newest loaded one
  (minus a lookback for late objects) to now, and never from later than now: a partition from
  the future cannot make the schedule list nothing. Window runs into the future are refused.
- Force means "rewrite what changed": a forced reload updates only rows whose mapping changed,
  and only from the copy of the event that was loaded (the first receive wins); a retried copy
  in another object is a duplicate, never a rewrite.
- Incremental aggregates: loads mark the hours they touched; the run then recomputes only those
  hours, their days and their sessions (``refresh_dirty_aggregates()`` in the migrations).
"""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import execute_values

from clickstream import raw_store
from clickstream.mapping import (
    EVENT_ID,
    EVENT_TIMESTAMP,
    WAREHOUSE_COLUMNS,
    RejectedLine,
    parse_raw_line,
)
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
# The staging table checks what the events table checks (types, NOT NULL, CHECK constraints), so
# that a refused row is found by the staging COPY and isolated; no unique key, since a forced
# reload stages every copy of an event.
_CREATE_STAGING = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS etl_staging "
    "(LIKE public.clickstream_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
    "ON COMMIT DELETE ROWS"
)
_COPY_TO_STAGING = sql.SQL("COPY etl_staging ({}) FROM STDIN WITH (FORMAT csv)").format(_COLUMNS)
_COPY_TO_EVENTS = sql.SQL(
    "COPY public.clickstream_events ({}) FROM STDIN WITH (FORMAT csv)"
).format(_COLUMNS)
# What PostgreSQL may refuse in one row of a COPY (a value out of a column's range, say) and not
# in its neighbours: the chunk isolates such rows instead of failing. Class 22 is every data
# exception; a unique violation is no row's fault (see _copy_new_events).
_ROW_ERRORS = (psycopg2.DataError, psycopg2.errors.NotNullViolation, psycopg2.errors.CheckViolation)
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
# Each staged event's stored copy, if any, probed by primary key (see _EXISTING_EVENT_IDS).
_STORED_COPY = """
LEFT JOIN LATERAL (
    SELECT e.received_at, e.event_timestamp FROM public.clickstream_events AS e
    WHERE e.event_id = staged.event_id LIMIT 1
) AS stored ON true
"""
# A forced reload that moves an event to another hour must refresh the hour it leaves, too.
_MARK_HOURS_LEFT_DIRTY = sql.SQL("""
INSERT INTO public.etl_dirty_hours (hour_start)
SELECT DISTINCT date_trunc('hour', stored.event_timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
FROM etl_staging AS staged {stored_copy}
WHERE stored.received_at = staged.received_at AND stored.event_timestamp <> staged.event_timestamp
ON CONFLICT DO NOTHING
""").format(stored_copy=sql.SQL(_STORED_COPY))
# A forced reload rewrites rows whose mapping changed, from the copy of the event that was
# loaded (same received_at: the first receive wins); of an event staged more than once, that
# copy is the one kept, else the earliest received. xmax = 0 tells inserted from updated.
_UPSERT_EVENTS = sql.SQL("""
WITH chosen AS (
    SELECT DISTINCT ON (staged.event_id) {staged_columns}
    FROM etl_staging AS staged {stored_copy}
    ORDER BY staged.event_id, (staged.received_at = stored.received_at) IS TRUE DESC,
             staged.received_at
), upserted AS (
    INSERT INTO public.clickstream_events AS existing ({columns})
    SELECT {columns} FROM chosen
    ON CONFLICT (event_id) DO UPDATE SET ({updated}) = ({excluded})
    WHERE existing.received_at = excluded.received_at
      AND ({existing}) IS DISTINCT FROM ({excluded})
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted
""").format(
    staged_columns=sql.SQL(", ").join(sql.Identifier("staged", c) for c in WAREHOUSE_COLUMNS),
    stored_copy=sql.SQL(_STORED_COPY),
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
    # Lines PostgreSQL refused that the load isolated into etl_rejects (counted in rejected_lines).
    isolated_lines: int = 0
    # Per warehouse column, values stored as NULL because they did not parse (order facts).
    unparsable_values: dict[str, int] = field(default_factory=dict)
    # Runs found still 'running' from a process that died, marked 'abandoned' by this one.
    abandoned_runs: int = 0
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

    ``rows`` are the rows of every line that mapped, repeats included (a forced reload stages
    them all and keeps the right copy), ``origins`` where each came from (object key, line), and
    ``unique`` the first row of each event_id, with ``csv_rows`` the same as COPY input.
    ``bodies`` are the objects' bytes, by key: a row PostgreSQL refuses is kept as a reject
    with its line's text.
    """

    rows: list[tuple]
    origins: list[tuple[str, int]]
    unique: list[tuple]
    unique_origins: list[tuple[str, int]]
    csv_rows: io.StringIO
    dirty_hours: set[str]
    rejects: list[tuple]
    ledger_rows: list[tuple]
    missing: int
    unparsable: Counter
    bodies: dict[str, bytes]
    run_id: str


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
            # Bounded by now: a partition from the future (a wrong receive clock once) must not
            # make every later run list hours after now, find nothing and report success.
            first = min(newest_loaded, floor_hour(now)) - timedelta(hours=lookback_hours)
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

    Objects already in the ledger are skipped unless ``force``, which reloads them. A window
    that is reversed or ends after the current hour is refused (ValueError).
    """
    now = datetime.now(UTC)
    _require_past_window(start, end, now)
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
        now,
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
    _require_past_window(start, end, datetime.now(UTC))
    hours = list(hours_between(start, end))
    listed = _list_hours(s3_client, bucket, hours)
    loaded_keys = _loaded_keys(connection, hours)
    plans = []
    for hour, objects in listed.items():
        loaded = sum(1 for item in objects if item.key in loaded_keys)
        to_load = len(objects) if force else len(objects) - loaded
        plans.append(HourPlan(hour.isoformat(), len(objects), loaded, to_load))
    return plans


def _require_past_window(start: datetime, end: datetime, now: datetime) -> None:
    if end < start:
        raise ValueError(
            f"the window ends ({end.isoformat()}) before it starts ({start.isoformat()})"
        )
    if floor_hour(end) > floor_hour(now):
        raise ValueError(
            f"the window ends in the future ({floor_hour(end).isoformat()}, now is "
            f"{now.isoformat(timespec='seconds')}): no partition after the current hour is loaded"
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
        report.abandoned_runs = _mark_dead_runs_abandoned(connection, report.run_id)
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


def _mark_dead_runs_abandoned(connection, run_id: str) -> int:
    """Mark runs still 'running' as abandoned: the caller holds the run lock, so none is alive."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE public.etl_runs SET status = 'abandoned', finished_at = now(), "
            "detail = concat_ws('; ', detail, 'the run ended without finishing (killed, timed "
            "out or disconnected); marked by run ' || %s) WHERE status = 'running'",
            (run_id,),
        )
        abandoned = cursor.rowcount
    connection.commit()
    return abandoned


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
                    (
                        report.run_id,
                        report.trigger,
                        report.window_start,
                        report.window_end,
                        report.forced,
                    ),
                )
            else:
                cursor.execute(
                    "UPDATE public.etl_runs SET status = %s, finished_at = now(), objects = %s, "
                    "events_loaded = %s, events_updated = %s, duplicates_skipped = %s, "
                    "rejected_lines = %s, pending_objects = %s, lag_seconds = %s, detail = %s, "
                    "isolated_lines = %s, unparsable_values = %s WHERE run_id = %s",
                    (
                        report.status,
                        report.objects,
                        report.events_loaded,
                        report.events_updated,
                        report.duplicates_skipped,
                        report.rejected_lines,
                        report.pending_objects,
                        report.lag_seconds,
                        report.detail,
                        report.isolated_lines,
                        json.dumps(report.unparsable_values),
                        report.run_id,
                    ),
                )
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
    origins: list[tuple[str, int]] = []
    rejects: list[tuple] = []
    ledger_rows: list[tuple] = []
    bodies: dict[str, bytes] = {}
    unparsable: Counter = Counter()
    missing = 0
    for item, body in chunk:
        if body is None:  # expired between listing and reading: nothing to load, nothing to mark
            missing += 1
            continue
        bodies[item.key] = body
        line_count = rejected = 0
        for line_number, raw_line in enumerate(body.split(b"\n"), start=1):
            if not raw_line.strip():
                continue
            line_count += 1
            parsed = _parse_line(raw_line, line_number, unparsable)
            if isinstance(parsed, RejectedLine):
                rejected += 1
                rejects.append((item.key, line_number, parsed.reason, parsed.raw_text, run_id))
            else:
                rows.append(parsed)
                origins.append((item.key, line_number))
        ledger_rows.append(
            (item.key, item.hour, item.etag, item.size, line_count, rejected, run_id)
        )
    unique_indexes = _first_of_each_event(rows)
    unique = [rows[index] for index in unique_indexes]
    return _PreparedChunk(
        rows=rows,
        origins=origins,
        unique=unique,
        unique_origins=[origins[index] for index in unique_indexes],
        csv_rows=_csv_of(unique),
        dirty_hours={_utc_hour(row[EVENT_TIMESTAMP]) for row in unique},
        rejects=rejects,
        ledger_rows=ledger_rows,
        missing=missing,
        unparsable=unparsable,
        bodies=bodies,
        run_id=run_id,
    )


def _first_of_each_event(rows: list[tuple]) -> list[int]:
    """The indexes of the first row of each event_id."""
    seen: set[str] = set()
    unique = []
    for index, row in enumerate(rows):
        if row[EVENT_ID] not in seen:
            seen.add(row[EVENT_ID])
            unique.append(index)
    return unique


def _csv_of(rows: Iterable[tuple]) -> io.StringIO:
    """The rows as COPY's CSV input, total over every text: with a CR LF line terminator, the
    csv module quotes every field holding a CR or a LF (it quotes any character of the
    terminator), so a lone carriage return in a URL is data, never the end of a row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    buffer.seek(0)
    return buffer


def _utc_hour(timestamp: str) -> str:
    """'2025-12-01T10' for any contract timestamp in that UTC hour."""
    if timestamp.endswith("Z"):
        return timestamp[:13]
    return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%dT%H")


def _parse_line(raw_line: bytes, line_number: int, unparsable: Counter):
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        return RejectedLine(line_number, f"not valid UTF-8: {error}", _storable_text(raw_line))
    parsed = parse_raw_line(line, line_number, unparsable)
    if isinstance(parsed, RejectedLine) and "\x00" in parsed.raw_text:
        # PostgreSQL text cannot hold U+0000; keep the line, visibly marked where it was.
        return RejectedLine(line_number, parsed.reason, parsed.raw_text.replace("\x00", "\ufffd"))
    return parsed


def _storable_text(raw_line: bytes) -> str:
    """A line's bytes as text PostgreSQL can store: invalid UTF-8 and U+0000 as U+FFFD."""
    return raw_line.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _load_chunk(connection, prepared: _PreparedChunk, report: RunReport) -> None:
    """One transaction: the chunk's new events, its dirty hours, rejects and ledger rows."""
    try:
        with connection.cursor() as cursor:
            if report.forced:
                inserted, updated, isolated = _upsert_through_staging(cursor, prepared)
            else:
                (inserted, isolated), updated = _copy_new_events(cursor, prepared), 0
            _record_chunk(cursor, prepared, isolated)
        connection.commit()
    except Exception:
        if not connection.closed:
            connection.rollback()
        raise
    report.objects += len(prepared.ledger_rows)
    report.missing_objects += prepared.missing
    report.events_loaded += inserted
    report.events_updated += updated
    report.duplicates_skipped += len(prepared.rows) - len(isolated) - inserted - updated
    report.rejected_lines += len(prepared.rejects) + len(isolated)
    report.isolated_lines += len(isolated)
    for column, count in prepared.unparsable.items():
        report.unparsable_values[column] = report.unparsable_values.get(column, 0) + count


def _copy_new_events(cursor, prepared: _PreparedChunk) -> tuple[int, list[tuple]]:
    """COPY the events not in the warehouse yet straight into it; return how many, and the
    rejects of rows PostgreSQL refused.

    Safe without ON CONFLICT because loads hold the run lock. Should a row have been written
    outside it meanwhile, the unique key refuses the COPY and the chunk goes through staging.
    """
    cursor.execute("SAVEPOINT before_copy")
    cursor.execute(_EXISTING_EVENT_IDS, ([row[EVENT_ID] for row in prepared.unique],))
    existing = {event_id for (event_id,) in cursor.fetchall()}
    if existing:
        new = [i for i, row in enumerate(prepared.unique) if row[EVENT_ID] not in existing]
        rows = [prepared.unique[i] for i in new]
        origins = [prepared.unique_origins[i] for i in new]
        encoded = None
    else:  # the usual case: the CSV made while the previous chunk loaded is used as it is
        rows, origins, encoded = prepared.unique, prepared.unique_origins, prepared.csv_rows
    try:
        isolated = _copy_rows(cursor, _COPY_TO_EVENTS, prepared, rows, origins, encoded)
        return len(rows) - len(isolated), isolated
    except psycopg2.errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT before_copy")
        isolated = _copy_rows(
            cursor, _COPY_TO_STAGING, prepared, prepared.unique, prepared.unique_origins
        )
        cursor.execute(_INSERT_NEW_EVENTS)
        return cursor.rowcount, isolated


def _upsert_through_staging(cursor, prepared: _PreparedChunk) -> tuple[int, int, list[tuple]]:
    """Stage every copy of the chunk's events and rewrite what changed; (inserted, updated,
    rejects of rows PostgreSQL refused)."""
    isolated = _copy_rows(cursor, _COPY_TO_STAGING, prepared, prepared.rows, prepared.origins)
    cursor.execute(_MARK_HOURS_LEFT_DIRTY)
    cursor.execute(_UPSERT_EVENTS)
    inserted, updated = cursor.fetchone()
    return inserted, updated, isolated


def _copy_rows(
    cursor,
    statement,
    prepared: _PreparedChunk,
    rows: list[tuple],
    origins: list[tuple[str, int]],
    encoded: io.StringIO | None = None,
) -> list[tuple]:
    """COPY ``rows``; a row PostgreSQL refuses is found by bisection under savepoints and
    returned as a reject (object key, line, reason, text, run), and every other row is copied.

    A refusal is rare (the contract and the mapping bound what reaches here), so the whole
    chunk is tried first and only a failing part is split.
    """
    if not rows:
        return []
    cursor.execute("SAVEPOINT copy_rows")
    try:
        cursor.copy_expert(statement, encoded or _csv_of(rows), size=COPY_READ_SIZE)
    except _ROW_ERRORS as error:
        cursor.execute("ROLLBACK TO SAVEPOINT copy_rows")
        cursor.execute("RELEASE SAVEPOINT copy_rows")
        if len(rows) == 1:
            return [_refused_row_reject(prepared, origins[0], error)]
        half = len(rows) // 2
        return [
            *_copy_rows(cursor, statement, prepared, rows[:half], origins[:half]),
            *_copy_rows(cursor, statement, prepared, rows[half:], origins[half:]),
        ]
    cursor.execute("RELEASE SAVEPOINT copy_rows")
    return []


def _refused_row_reject(
    prepared: _PreparedChunk, origin: tuple[str, int], error: psycopg2.Error
) -> tuple:
    """The reject row of a line whose row PostgreSQL refused, with PostgreSQL's reason."""
    key, line_number = origin
    reason = f"refused by the warehouse ({error.pgcode}): {error.diag.message_primary}"
    if error.diag.context:
        reason += f" ({error.diag.context.strip()})"
    text = _storable_text(prepared.bodies[key].split(b"\n")[line_number - 1])
    return (key, line_number, reason, text, prepared.run_id)


def _record_chunk(cursor, prepared: _PreparedChunk, isolated: list[tuple]) -> None:
    if prepared.dirty_hours:
        hours = [(f"{hour}:00:00+00",) for hour in sorted(prepared.dirty_hours)]
        execute_values(cursor, _MARK_HOURS_DIRTY, hours, page_size=1000)
    rejects = prepared.rejects + isolated
    if rejects:
        execute_values(cursor, _RECORD_REJECTS, rejects, page_size=500)
    ledger_rows = prepared.ledger_rows
    if isolated:  # the ledger counts an object's isolated lines among its rejected ones
        isolated_per_object = Counter(reject[0] for reject in isolated)
        ledger_rows = [
            (*row[:5], row[5] + isolated_per_object[row[0]], row[6]) for row in ledger_rows
        ]
    if ledger_rows:
        execute_values(cursor, _RECORD_LOADED_OBJECTS, ledger_rows, page_size=1000)

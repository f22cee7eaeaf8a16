"""The load's writes to PostgreSQL: the run lock and record, a chunk's transaction, and the
refresh of aggregates. Every SQL statement of the load lives here; psycopg2 COPY does the bulk.

A chunk (``clickstream.load_batch.PreparedChunk``) is one transaction: its new events, its dirty
hours, rejects and ledger rows commit together, so a crash leaves all of it or none of it. A row
PostgreSQL refuses is isolated by bisection under savepoints and kept as a reject.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import execute_values

from clickstream.load_batch import (
    PreparedChunk,
    csv_of,
    first_copy_of_each_receive,
    storable_text,
)
from clickstream.mapping import EVENT_ID, WAREHOUSE_COLUMNS

if TYPE_CHECKING:
    from clickstream.loader import RunReport

# pg_try_advisory_lock key shared by every loader: "clickstream etl" as a stable integer.
RUN_LOCK_KEY = 0x636C69636B65746C
COPY_READ_SIZE = 1 << 20
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


@dataclass(frozen=True)
class ChunkResult:
    """What a chunk's transaction did: events inserted and rewritten, and the rejects of rows
    PostgreSQL refused (object key, line, reason, text, run)."""

    inserted: int
    updated: int
    isolated: list[tuple]


@contextmanager
def exclusive_run(connection) -> Iterator[bool]:
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


def mark_dead_runs_abandoned(connection, run_id: str) -> int:
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


def record_run(connection, report: RunReport, *, started: bool) -> None:
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


def loaded_keys(connection, hours: list[datetime]) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT object_key FROM public.etl_loaded_objects "
            "WHERE partition_hour BETWEEN %s AND %s",
            (min(hours), max(hours)),
        )
        loaded = {key for (key,) in cursor.fetchall()}
    connection.commit()
    return loaded


def load_chunk(connection, prepared: PreparedChunk, *, forced: bool) -> ChunkResult:
    """One transaction: the chunk's new events (all of them rewritten where changed when
    ``forced``), its dirty hours, rejects and ledger rows."""
    try:
        with connection.cursor() as cursor:
            if forced:
                inserted, updated, isolated = _upsert_through_staging(cursor, prepared)
            else:
                (inserted, isolated), updated = _copy_new_events(cursor, prepared), 0
            _record_chunk(cursor, prepared, isolated)
        connection.commit()
    except Exception:
        if not connection.closed:
            connection.rollback()
        raise
    return ChunkResult(inserted, updated, isolated)


def _copy_new_events(cursor, prepared: PreparedChunk) -> tuple[int, list[tuple]]:
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


def _upsert_through_staging(cursor, prepared: PreparedChunk) -> tuple[int, int, list[tuple]]:
    """Stage every receive of the chunk's events and rewrite what changed; (inserted, updated,
    rejects of rows PostgreSQL refused)."""
    rows, origins = first_copy_of_each_receive(prepared)
    isolated = _copy_rows(cursor, _COPY_TO_STAGING, prepared, rows, origins)
    cursor.execute(_MARK_HOURS_LEFT_DIRTY)
    cursor.execute(_UPSERT_EVENTS)
    inserted, updated = cursor.fetchone()
    return inserted, updated, isolated


def _copy_rows(
    cursor,
    statement,
    prepared: PreparedChunk,
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
        cursor.copy_expert(statement, encoded or csv_of(rows), size=COPY_READ_SIZE)
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
    prepared: PreparedChunk, origin: tuple[str, int], error: psycopg2.Error
) -> tuple:
    """The reject row of a line whose row PostgreSQL refused, with PostgreSQL's reason."""
    key, line_number = origin
    reason = f"refused by the warehouse ({error.pgcode}): {error.diag.message_primary}"
    if error.diag.context:
        reason += f" ({error.diag.context.strip()})"
    text = storable_text(prepared.bodies[key].split(b"\n")[line_number - 1])
    return (key, line_number, reason, text, prepared.run_id)


def _record_chunk(cursor, prepared: PreparedChunk, isolated: list[tuple]) -> None:
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

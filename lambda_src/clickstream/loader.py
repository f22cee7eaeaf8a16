"""Load raw objects into the warehouse: the one load implementation, its run orchestration.

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
- Progress as it goes: a transaction never holds objects of two hour partitions, so each hour's
  figures are known when its last object commits; ``progress``, when given, is called then with
  the hour's share of the report (``HourLoaded``). It changes nothing the run does or reports.

This module runs a load: what to list, the lock and the run's record, the time budget and the
report. ``clickstream.load_batch`` prepares each chunk (pure Python) and
``clickstream.warehouse_writer`` writes it (every SQL statement of the load).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from clickstream import load_batch, raw_store
from clickstream import warehouse_writer as writer
from clickstream.load_batch import PreparedChunk
from clickstream.partitions import floor_hour, hours_between
from clickstream.raw_store import RawObject

# The run lock's key, for whoever must wait for loads (the erasure): defined by the writer.
RUN_LOCK_KEY = writer.RUN_LOCK_KEY
DEFAULT_LOOKBACK_HOURS = 3
DEFAULT_INITIAL_LOOKBACK_HOURS = 24
FETCH_CONCURRENCY = 16


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


@dataclass
class HourLoaded:
    """An hour partition whose objects this run has all loaded (or found gone), for ``progress``:
    the hour's share of the report's counts, and how far the run is."""

    run_id: str
    hour: str
    objects: int = 0
    missing_objects: int = 0
    events_loaded: int = 0
    events_updated: int = 0
    duplicates_skipped: int = 0
    rejected_lines: int = 0
    isolated_lines: int = 0
    # From the previous hour's last commit (the load's start, for the first hour) to this one's.
    seconds: float = 0.0
    # Since the run started; and the objects of later hours, still to load.
    elapsed_seconds: float = 0.0
    objects_remaining: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


Progress = Callable[[HourLoaded], None]


def run_scheduled(
    connection,
    s3_client,
    bucket: str,
    *,
    now: datetime | None = None,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    initial_lookback_hours: int = DEFAULT_INITIAL_LOOKBACK_HOURS,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Load every raw object not loaded yet, from the newest loaded hour (minus a lookback) on.

    ``deadline`` is a time.monotonic() value after which no new transaction starts (the run is
    then ``incomplete`` and the next one carries on). ``progress`` is called as each hour with
    objects to load is done (see ``HourLoaded``).
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
    return _run(connection, s3_client, bucket, report, hours_to_list, deadline, now, progress)


def run_window(
    connection,
    s3_client,
    bucket: str,
    *,
    start: datetime,
    end: datetime,
    force: bool = False,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Load the objects of the hour partitions from ``start`` to ``end`` (inclusive hours).

    Objects already in the ledger are skipped unless ``force``, which reloads them. A window
    that is reversed or ends after the current hour is refused (ValueError). ``deadline`` and
    ``progress`` as in ``run_scheduled``.
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
        progress,
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
    loaded_keys = writer.loaded_keys(connection, hours)
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
    loaded_keys = writer.loaded_keys(connection, hours)
    return [item for item in listed if item.key not in loaded_keys]


def _list_hours(s3_client, bucket: str, hours: list[datetime]) -> dict[datetime, list[RawObject]]:
    """Each hour's raw objects, the partitions listed in parallel (one LIST is a round trip)."""
    with ThreadPoolExecutor(max_workers=FETCH_CONCURRENCY) as pool:
        per_hour = pool.map(lambda hour: raw_store.list_hour(s3_client, bucket, hour), hours)
        return dict(zip(hours, per_hour, strict=True))


def _run(
    connection, s3_client, bucket, report, hours_to_list, deadline, now, progress
) -> RunReport:
    started = time.monotonic()
    with writer.exclusive_run(connection) as acquired:
        if not acquired:
            report.status = "skipped"
            report.detail = "another ETL run holds the warehouse lock; this run did nothing"
            return report
        report.abandoned_runs = writer.mark_dead_runs_abandoned(connection, report.run_id)
        writer.record_run(connection, report, started=True)
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
                hour_progress = _HourProgress(report.run_id, objects, progress, started)
                _load_objects(
                    connection, s3_client, bucket, objects, report, deadline, hour_progress
                )
            with _timed(report, "refresh"):
                report.aggregates_refreshed = writer.refresh_aggregates(connection)
            report.status = "incomplete" if report.pending_objects else "succeeded"
        except Exception as error:
            report.status = "failed"
            report.detail = f"{type(error).__name__}: {error}"
            raise
        finally:
            report.duration_seconds = round(time.monotonic() - started, 3)
            writer.record_run(connection, report, started=False)
    return report


@contextmanager
def _timed(report: RunReport, phase: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        report.phase_seconds[phase] = round(time.monotonic() - started, 3)


def _load_objects(connection, s3_client, bucket, objects, report, deadline, hour_progress) -> None:
    def read(item: RawObject) -> bytes | None:
        return raw_store.read_object(s3_client, bucket, item.key)

    prepared_chunks = (
        load_batch.prepare_chunk(chunk, report.run_id)
        for chunk in load_batch.chunks(_fetch_in_order(objects, read))
    )
    for prepared in _prepared_ahead(prepared_chunks):
        if deadline is not None and time.monotonic() > deadline:
            report.pending_objects = len(objects) - report.objects - report.missing_objects
            return
        result = writer.load_chunk(connection, prepared, forced=report.forced)
        counts = _chunk_counts(prepared, result)
        _add_counts(report, counts)
        for column, count in prepared.unparsable.items():
            report.unparsable_values[column] = report.unparsable_values.get(column, 0) + count
        hour_progress.add(counts)


def _chunk_counts(prepared: PreparedChunk, result: writer.ChunkResult) -> dict[str, int]:
    """What a committed chunk adds to the run's report and to its hour's progress."""
    isolated = len(result.isolated)
    return {
        "objects": len(prepared.ledger_rows),
        "missing_objects": prepared.missing,
        "events_loaded": result.inserted,
        "events_updated": result.updated,
        "duplicates_skipped": len(prepared.rows) - isolated - result.inserted - result.updated,
        "rejected_lines": len(prepared.rejects) + isolated,
        "isolated_lines": isolated,
    }


def _add_counts(target: RunReport | HourLoaded, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        setattr(target, name, getattr(target, name) + count)


class _HourProgress:
    """Adds each committed chunk to its hour and calls ``progress`` once the hour is done.

    Chunks come in listing order and never span two hours (load_batch.chunks): a chunk's hour is
    the hour of the first object not counted yet, and that hour is done when the next object to
    count is of another hour, or none is left.
    """

    def __init__(
        self, run_id: str, objects: list[RawObject], progress: Progress | None, run_started: float
    ) -> None:
        self.run_id, self.objects, self.progress = run_id, objects, progress
        self.run_started = run_started
        # Made as the load starts: the first hour's time leaves the listing out.
        self.hour_started = time.monotonic()
        self.counted = 0
        self.hour: HourLoaded | None = None

    def add(self, counts: dict[str, int]) -> None:
        if self.progress is None:
            return
        hour = self.objects[self.counted].hour
        if self.hour is None:
            self.hour = HourLoaded(self.run_id, hour.isoformat())
        _add_counts(self.hour, counts)
        self.counted += counts["objects"] + counts["missing_objects"]
        if self.counted < len(self.objects) and self.objects[self.counted].hour == hour:
            return
        now = time.monotonic()
        self.hour.seconds = round(now - self.hour_started, 3)
        self.hour.elapsed_seconds = round(now - self.run_started, 3)
        self.hour.objects_remaining = len(self.objects) - self.counted
        self.progress(self.hour)
        self.hour, self.hour_started = None, now


def _prepared_ahead(prepared_chunks: Iterator[PreparedChunk]) -> Iterator[PreparedChunk]:
    """Yield the chunks while a worker prepares the next one: parsing (Python) overlaps the
    merge of the chunk before it (PostgreSQL, which releases the GIL while it waits).

    The generator is only ever advanced by the one worker, one step at a time. Leaving the loop
    early (the time budget, an error) closes it, which stops its reads.
    """
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickstream-prepare")
    try:
        pending = worker.submit(next, prepared_chunks, None)
        while (prepared := pending.result()) is not None:
            pending = worker.submit(next, prepared_chunks, None)
            yield prepared
    finally:
        worker.shutdown(wait=True)  # the step under way ends before the generator is closed
        prepared_chunks.close()


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

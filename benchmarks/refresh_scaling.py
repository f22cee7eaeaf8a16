"""Refresh cost vs table size: refreshing a small batch must cost the same in a large warehouse.

    .venv/bin/python benchmarks/refresh_scaling.py                        # 0, 100k and 1M events
    .venv/bin/python benchmarks/refresh_scaling.py --sizes 0,1000000,3000000 --repeat 5

For each size N: a fresh warehouse in a PostgreSQL of its own (on loopback, with the postgresql
role's planner settings) gets N events of the synthetic shop, --events-per-day of them a day, each
day through an ETL window run (benchmarks/shop_through_etl.py), then ANALYZE as autovacuum would.
Then --repeat batches of --batch events, each in a new UTC hour after the history, each one raw
object loaded by an ETL window run of its own, whose refresh phase
(RunReport.phase_seconds['refresh']: refresh_dirty_aggregates()) is what is measured:

- "same day": hours right after the history, in its last day (shop time zone), whose daily
  rollups are recomputed whole: that part grows with the events of a day, not of the table;
- "new day": hours of the next day.

Prints the median and the largest refresh time of each kind per size. Flat columns are the goal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import zoneinfo
from datetime import UTC, datetime, timedelta

from recording import add_output_option, recorded
from shop_through_etl import (
    EVENTS_PER_SESSION,
    POSTGRES_SETTINGS,
    RawBucket,
    first_batch_of_hour,
    new_warehouse,
    raw_bucket,
)

from tests.fixtures.postgres import remove_cluster, start_throwaway_cluster
from tools.synthetic_shop import SHOP_TIME_ZONE, Shop

FIRST_DAY = datetime(2025, 6, 2)  # a Monday, midnight in the shop's time zone
HOUR = timedelta(hours=1)
# Per size: events in the table, of them in its last day, refresh seconds of each kind.
SizeResult = tuple[int, int, dict[str, list[float]]]


def load_history(bucket: RawBucket, connect, events: int, per_day: int, seed: int) -> datetime:
    """At least ``events`` events from FIRST_DAY on, whole hours, a day per ETL run; returns the
    end of the last hour."""
    zone = zoneinfo.ZoneInfo(SHOP_TIME_ZONE)
    hour = FIRST_DAY.replace(tzinfo=zone).astimezone(UTC)
    shop, generated, began = Shop(seed=seed), 0, time.monotonic()
    day: list[list[dict]] = []
    while generated < events:
        sessions = list(shop.sessions_between(hour, hour + HOUR, per_day / EVENTS_PER_SESSION))
        day.extend(sessions)
        generated += sum(len(session) for session in sessions)
        hour += HOUR
        if hour.astimezone(zone).hour == 0 or generated >= events:
            bucket.load(connect, bucket.put_sessions(day))
            day = []
            sys.stderr.write(f"\r  {generated:,} events loaded ({time.monotonic() - began:.0f} s)")
    sys.stderr.write("\n")
    return hour


def refresh_seconds(bucket: RawBucket, connect, hour: datetime, size: int, seed: int) -> float:
    """Load ``size`` events of a busy hour as one raw object; the run's refresh phase."""
    sessions = Shop(seed=seed).sessions_between(hour, hour + HOUR, sessions_per_day=50_000)
    events = first_batch_of_hour(sessions, hour, size)
    keys = bucket.put_batches([(datetime.fromisoformat(events[-1]["eventTimestamp"]), events)])
    report = bucket.load(connect, keys)
    assert report.events_loaded == len(events), report
    return report.phase_seconds["refresh"]


def measure(bucket: RawBucket, connect, history_end: datetime, arguments) -> dict[str, list]:
    zone = zoneinfo.ZoneInfo(SHOP_TIME_ZONE)
    first_hour = (history_end + HOUR - timedelta(microseconds=1)).replace(
        minute=0, second=0, microsecond=0
    )
    next_midnight = datetime.combine(
        (first_hour + arguments.repeat * HOUR).astimezone(zone).date() + timedelta(days=1),
        datetime.min.time(),
        zone,
    ).astimezone(UTC)
    kinds = {"same day": first_hour, "new day": next_midnight}
    seeds = iter(range(1000, 2000))
    return {
        kind: [
            refresh_seconds(bucket, connect, start + n * HOUR, arguments.batch, next(seeds))
            for n in range(arguments.repeat)
        ]
        for kind, start in kinds.items()
    }


def events_of_the_day(connect, moment: datetime) -> int:
    """Events already loaded on the day (shop time zone) of ``moment``."""
    connection = connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM clickstream_events "
                "WHERE (event_timestamp AT TIME ZONE %s)::date = (%s AT TIME ZONE %s)::date",
                (SHOP_TIME_ZONE, moment, SHOP_TIME_ZONE),
            )
            return cursor.fetchone()[0]
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,100000,1000000", help="events in the table")
    parser.add_argument("--events-per-day", type=int, default=80_000)
    parser.add_argument("--batch", type=int, default=500, help="events per measured batch")
    parser.add_argument("--repeat", type=int, default=3, help="batches of each kind")
    parser.add_argument("--seed", type=int, default=7)
    add_output_option(parser)
    arguments = parser.parse_args()
    with recorded(arguments.output):
        print_table(arguments, measure_sizes(arguments))
    return 0


def measure_sizes(arguments: argparse.Namespace) -> list[SizeResult]:
    cluster = start_throwaway_cluster(**POSTGRES_SETTINGS)
    results = []
    try:
        with raw_bucket() as bucket:
            for size in (int(size) for size in arguments.sizes.split(",")):
                sys.stderr.write(f"warehouse of {size:,} events\n")
                database = f"bench_refresh_{size}"
                connect = new_warehouse(cluster, database)
                history_end = load_history(
                    bucket, connect, size, arguments.events_per_day, arguments.seed
                )
                # What autovacuum does in time on a real server.
                cluster.execute_autocommit("ANALYZE", database)
                counted, same_day = _count_events(connect), events_of_the_day(connect, history_end)
                timings = measure(bucket, connect, history_end, arguments)
                results.append((counted, same_day, timings))
                cluster.execute_autocommit(f"DROP DATABASE {database}")
    finally:
        remove_cluster(cluster)
    return results


def print_table(arguments: argparse.Namespace, results: list[SizeResult]) -> None:
    print(
        f"\nrefresh of {arguments.batch} events in a new hour, {arguments.repeat} batches each; "
        f"history at {arguments.events_per_day:,} events a day (ms)"
    )
    header = f"{'p50':>8} {'max':>7}"
    print(f"{'events in table':>16} {'in its last day':>16}   {'same day':^16}   {'new day':^16}")
    print(f"{'':>16} {'':>16}   {header}   {header}")
    for counted, same_day, timings in results:
        cells = "   ".join(
            f"{statistics.median(seconds) * 1000:8.0f} {max(seconds) * 1000:7.0f}"
            for seconds in timings.values()
        )
        print(f"{counted:>16,} {same_day:>16,}   {cells}")


def _count_events(connect) -> int:
    connection = connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM clickstream_events")
            return cursor.fetchone()[0]
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic shop traffic loaded into a warehouse the way production loads it.

The benchmarks that need a large warehouse (dashboard_queries.py, refresh_scaling.py) go through
this: the shop's events (tools/synthetic_shop.py) become raw records as the ingest writes them
(clickstream.mapping.new_raw_record), in NDJSON objects of at most 500 events per UTC hour
(synthetic_shop.hourly_batches, what the tracker's batches make), in a moto S3 server on loopback;
then the ETL's own window run (clickstream.loader.run_window) loads them: validation, mapping,
dedup, ledger, and the incremental refresh of sessions and rollups. Each window's objects are
deleted once loaded, so that the emulator's memory stays bounded however many events go through.

Run as a script, it is the ETL's throughput on that traffic: N events over --days days, a window
run per day, into a fresh warehouse; it prints the wall time, events/s and the seconds of each
phase of the runs (list, load, refresh) summed.

    .venv/bin/python benchmarks/shop_through_etl.py --events 1000000 --days 7
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY / "lambda_src"), str(REPOSITORY)]

from recording import add_output_option, recorded  # noqa: E402

from clickstream import loader, migrations  # noqa: E402
from clickstream.mapping import new_raw_record  # noqa: E402
from clickstream.partitions import floor_hour, hour_of_key, object_key  # noqa: E402
from clickstream.raw_format import CONTENT_TYPE, encode_raw_object  # noqa: E402
from tests.fixtures.aws import REGION, MotoServer, aws_environment, stack_bucket_name  # noqa: E402
from tests.fixtures.postgres import (  # noqa: E402
    PostgresCluster,
    remove_cluster,
    start_throwaway_cluster,
)
from tests.fixtures.processes import free_loopback_port, port_answers, wait_until  # noqa: E402
from tools.synthetic_shop import SHOP_TIME_ZONE, Shop, event_time, hourly_batches  # noqa: E402

BUCKET = stack_bucket_name("raw")
PUT_CONCURRENCY = 8
EVENTS_PER_SESSION = 7.4  # what the synthetic shop averages; sizes sessions per day from N
FIRST_DAY = date(2025, 6, 1)
# What the postgresql role sets on a host of 8 GB (roles/postgresql/templates/clickstream.conf.j2)
# and what matters for plans: the benchmarks' throwaway clusters run with these.
POSTGRES_SETTINGS = {
    "shared_buffers": "1GB",
    "effective_cache_size": "4GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "4GB",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "default_statistics_target": "200",
}


@dataclass(frozen=True)
class RawBucket:
    """The raw bucket in a moto S3 server of our own."""

    moto: MotoServer
    # The server's process, whose CPU time etl_throughput.py reports: it shares the machine.
    server_pid: int

    def put_batches(self, batches: Iterable[tuple[datetime, list[dict]]]) -> list[str]:
        """One raw object per (receive time, events) batch, as the ingest writes it; the keys."""
        s3 = self.moto.client("s3")

        def put(batch: tuple[datetime, list[dict]]) -> str:
            received_at, events = batch
            records = [
                new_raw_record(event, received_at=received_at, request_id=None, user_agent="bench")
                for event in events
            ]
            key = object_key(received_at, uuid.uuid4().hex)
            s3.put_object(
                Bucket=BUCKET, Key=key, Body=encode_raw_object(records), ContentType=CONTENT_TYPE
            )
            return key

        with ThreadPoolExecutor(max_workers=PUT_CONCURRENCY) as pool:
            return list(pool.map(put, batches))

    def put_sessions(self, sessions: Iterable[list[dict]]) -> list[str]:
        return self.put_batches(hourly_batches(iter(sessions)))

    def load(self, connect: Callable[[], object], keys: list[str]) -> loader.RunReport:
        """The ETL's window run over the hours of ``keys`` (a connection of its own, as each
        Lambda invocation has), then the objects deleted."""
        hours = [hour_of_key(key) for key in keys]
        connection = connect()
        try:
            report = loader.run_window(
                connection, self.moto.client("s3"), BUCKET, start=min(hours), end=max(hours)
            )
        finally:
            connection.close()
        self.delete(keys)
        return report

    def delete(self, keys: list[str]) -> None:
        s3 = self.moto.client("s3")
        for first in range(0, len(keys), 1000):
            s3.delete_objects(
                Bucket=BUCKET,
                Delete={"Objects": [{"Key": key} for key in keys[first : first + 1000]]},
            )


@contextmanager
def raw_bucket() -> Iterator[RawBucket]:
    """A moto S3 server on a free loopback port with the raw bucket; stopped afterwards."""
    port = free_loopback_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_answers(port), "moto server")
        moto = MotoServer(f"http://127.0.0.1:{port}")
        os.environ.update(aws_environment(moto.endpoint_url))  # boto3's credentials and region
        moto.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield RawBucket(moto, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def first_batch_of_hour(sessions: Iterable[list[dict]], hour: datetime, size: int) -> list[dict]:
    """Up to ``size`` events of ``sessions`` that fall in the UTC hour ``hour``, in time order."""
    start = floor_hour(hour)
    events = sorted(
        (e for session in sessions for e in session if floor_hour(event_time(e)) == start),
        key=event_time,
    )
    return events[:size]


def new_warehouse(cluster: PostgresCluster, database: str) -> Callable[[], object]:
    """A migrated clickstream_dw named ``database`` reporting in the shop's time zone; returns
    how to connect to it (as the superuser: the benchmarks measure, they test no privileges)."""
    cluster.execute_autocommit(f"CREATE DATABASE {database}")
    connection = cluster.connect(database)
    try:
        migrations.apply_migrations(connection)
    finally:
        connection.close()
    cluster.execute_autocommit(
        f"UPDATE warehouse_settings SET value = '{SHOP_TIME_ZONE}' "
        "WHERE name = 'reporting_time_zone'",
        database,
    )
    return lambda: cluster.connect(database)


@dataclass(frozen=True)
class DaysLoaded:
    """What load_days did: the events loaded, the wall time, each run phase's seconds summed."""

    events: int
    seconds: float
    phase_seconds: dict[str, float]


def load_days(
    bucket: RawBucket,
    connect: Callable[[], object],
    events: int,
    days: int,
    seed: int,
    first_day: date = FIRST_DAY,
) -> DaysLoaded:
    """About ``events`` events of the synthetic shop over ``days`` days (shop time zone) from
    ``first_day``, a day per ETL window run, as a day's backfill would load them."""
    zone = zoneinfo.ZoneInfo(SHOP_TIME_ZONE)
    start = datetime.combine(first_day, datetime.min.time(), zone).astimezone(UTC)
    sessions_per_day = events / days / EVENTS_PER_SESSION
    shop = Shop(seed=seed)
    loaded, phases, began = 0, Counter(), time.monotonic()
    for day in range(days):
        day_start = start + timedelta(days=day)
        sessions = shop.sessions_between(day_start, day_start + timedelta(days=1), sessions_per_day)
        report = bucket.load(connect, bucket.put_sessions(sessions))
        loaded += report.events_loaded
        phases.update(report.phase_seconds)
        elapsed = time.monotonic() - began
        sys.stderr.write(
            f"\rloaded {loaded:,} events, day {day + 1}/{days}, {loaded / elapsed:,.0f}/s "
        )
    sys.stderr.write("\n")
    return DaysLoaded(loaded, time.monotonic() - began, dict(phases))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    add_output_option(parser)
    arguments = parser.parse_args()
    with recorded(arguments.output):
        cluster = start_throwaway_cluster(**POSTGRES_SETTINGS)
        try:
            with raw_bucket() as bucket:
                connect = new_warehouse(cluster, "bench_shop")
                result = load_days(
                    bucket, connect, arguments.events, arguments.days, arguments.seed
                )
        finally:
            remove_cluster(cluster)
        phases = ", ".join(
            f"{name} {seconds:,.1f}" for name, seconds in result.phase_seconds.items()
        )
        print(f"\n{'events':>10} {'days':>5} {'seconds':>9} {'events/s':>9}   phases summed (s)")
        print(
            f"{result.events:>10,} {arguments.days:>5} {result.seconds:>9.1f} "
            f"{result.events / result.seconds:>9,.0f}   {phases}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

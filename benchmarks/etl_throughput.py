"""ETL throughput and an hour's batch: raw COPY vs the ETL vs per-row INSERT, on this machine.

    make bench                      # N = 1,000,000 events, HOURLY = 360,000
    .venv/bin/python benchmarks/etl_throughput.py --events 200000 --hourly-events 100000
    .venv/bin/python benchmarks/etl_throughput.py --events 2000 --insert-sample 200 \\
        --hourly-events 2000        # seconds: the smoke test's size (tests/test_benchmarks.py)

Starts its own PostgreSQL (Debian's server, default durability settings) and moto S3 server on
loopback, then measures, over the same N generated events (a week of traffic):

  (a) COPY of the N prepared rows into an empty copy of clickstream_events (same indexes): the
      limit of this machine;
  (b) the ETL end to end (loader.run_window) over the events as raw NDJSON objects in S3, with
      EVENTS_PER_OBJECT events per object: fetch, validate, map, stage, merge with dedup, ledger,
      sessions and rollups;
  (h) an hour's batch: H events (100 a second by default) received within one UTC hour partition,
      the hour after (b)'s week, loaded and refreshed by a window run into (b)'s warehouse, which
      so already holds the N events. This run is the ETL Lambda's own handler in a process of its
      own, as the local Lambda runtime runs a function (tools/local_platform/runtime.py), so that
      its peak resident memory (VmHWM) is the ETL's alone. Targets: under a minute, and under
      1 GB (the function's memory, lambdas_etl_memory_mb; what OOM-kills it);
  (c) per-row INSERT with a commit per row, the baseline of the issue; and for reference (c')
      per-row INSERT in one transaction and (d) what the original ETL's last version did,
      200-row INSERT ... ON CONFLICT DO NOTHING per transaction. These run on a sample of
      --insert-sample rows: their rates do not depend on N. Note that loopback makes every
      round trip far cheaper than Lambda to EC2 across subnets, which flatters (c) and (c').

Prints events/s for each, the ratios against the targets (b >= 0.5 a, b faster than d,
b >= 30 c), (h)'s seconds and memory against theirs, and the phase seconds of both ETL runs. The
figures are printed, not asserted: whether a target is met depends on the machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from recording import add_output_option, recorded

# Before the repository's own modules: it puts lambda_src and the repository on sys.path.
from shop_through_etl import BUCKET, REPOSITORY, RawBucket, raw_bucket

from clickstream import loader, migrations
from clickstream.mapping import WAREHOUSE_COLUMNS, new_raw_record, warehouse_row
from clickstream.partitions import object_key
from clickstream.raw_format import encode_raw_object
from tests.fixtures.aws import aws_environment
from tests.fixtures.postgres import PostgresCluster, remove_cluster
from tools.local_platform.runtime import Deployment, FunctionError, Worker

EVENTS_PER_OBJECT = 500  # the ingest's batch limit: what our own tracker's batches approach
FIRST_HOUR = datetime(2025, 12, 1, tzinfo=UTC)
WEEK, HOUR = timedelta(days=7), timedelta(hours=1)
HOURLY_TARGET_SECONDS = 60
# 1 GB. It is also all the memory the function is deployed with (below), past which Lambda kills
# it: a target with no margin unless lambdas_etl_memory_mb is raised.
MEMORY_TARGET_MB = 1024
# The ETL function as inventories/aws/group_vars/all/lambdas.yml deploys it (lambdas_etl_*).
ETL_TIMEOUT_SECONDS, ETL_MEMORY_MB = 900, 1024
ETL_DATABASE = "bench_etl"
PRODUCTS = [
    {
        "id": f"p-{number}",
        "name": f"{brand} {category} {number}",
        "category": category,
        "brand": brand,
        "price": float(random.Random(number).randrange(500_000, 60_000_000, 10_000)),
        "discountPrice": None,
        "urlPath": f"/products/p-{number}",
    }
    for number, (category, brand) in enumerate(
        (c, b)
        for c in ("laptop", "monitor", "keyboard", "mouse", "headphone", "accessory")
        for b in ("Dell", "HP", "Lenovo", "Asus", "Logitech")
    )
]
SESSION_STEPS = ["page_view", "product_view", "product_view", "add_to_cart_click", "checkout_start"]


def generated_records(
    count: int, seed: int = 7, first: datetime = FIRST_HOUR, span: timedelta = WEEK
) -> list[dict]:
    """``count`` raw records: sessions of a few events received evenly over ``span`` from
    ``first``, in time order."""
    rng = random.Random(seed)
    records: list[dict] = []
    moment = first
    spacing = span / count
    while len(records) < count:
        session, client = str(uuid.UUID(int=rng.getrandbits(128))), f"client-{rng.randrange(count)}"
        product = rng.choice(PRODUCTS)
        steps = SESSION_STEPS[: rng.randint(1, len(SESSION_STEPS))]
        if steps[-1] == "checkout_start" and rng.random() < 0.6:
            steps.append("checkout_complete")
        for name in steps:
            event = {
                "eventId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "eventName": name,
                "pageUrl": f"https://shop.example.com{product['urlPath']}",
                "referrer": "https://shop.example.com/",
                "userId": None,
                "userLoginState": "anonymous",
                "clientId": client,
                "sessionId": session,
                "isFirstVisit": False,
                "product": product if name != "page_view" else None,
            }
            records.append(
                new_raw_record(event, received_at=moment, request_id=None, user_agent="bench")
            )
            moment += spacing
    return records[:count]


def csv_of_rows(records: list[dict]) -> io.StringIO:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(warehouse_row(r) for r in records)
    buffer.seek(0)
    return buffer


def fresh_database(cluster: PostgresCluster, name: str):
    cluster.execute_autocommit(f"DROP DATABASE IF EXISTS {name}")
    cluster.execute_autocommit(f"CREATE DATABASE {name}")
    connection = cluster.connect(name)
    migrations.apply_migrations(connection)
    connection.close()
    # A new session for the measurement: the ETL sets temp_buffers, which PostgreSQL allows only
    # before a session's first temporary table, and the migrations used some.
    return cluster.connect(name)


def measure_copy(cluster: PostgresCluster, records: list[dict]) -> float:
    connection = fresh_database(cluster, "bench_copy")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE copy_target (LIKE clickstream_events INCLUDING ALL)")
    connection.commit()
    buffer = csv_of_rows(records)  # prepared rows: preparing them is not part of (a)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.copy_expert(
            f"COPY copy_target ({', '.join(WAREHOUSE_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
            buffer,
        )
    connection.commit()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def measure_row_inserts(
    cluster: PostgresCluster,
    records: list[dict],
    rows_per_transaction: int,
    rows_per_statement: int = 1,
) -> float:
    """INSERT ... ON CONFLICT DO NOTHING of ``rows_per_statement`` rows per statement, committing
    every ``rows_per_transaction`` rows; returns the seconds taken."""
    connection = fresh_database(cluster, "bench_insert")
    rows = [warehouse_row(r) for r in records]
    placeholders = f"({', '.join(['%s'] * len(WAREHOUSE_COLUMNS))})"

    def statement(count: int) -> str:
        return (
            f"INSERT INTO clickstream_events ({', '.join(WAREHOUSE_COLUMNS)}) "
            f"VALUES {', '.join([placeholders] * count)} ON CONFLICT (event_id) DO NOTHING"
        )

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for first in range(0, len(rows), rows_per_statement):
            batch = rows[first : first + rows_per_statement]
            cursor.execute(statement(len(batch)), [value for row in batch for value in row])
            if (first + len(batch)) % rows_per_transaction == 0:
                connection.commit()
    connection.commit()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


@dataclass(frozen=True)
class Uploaded:
    """Raw objects put in the bucket: their keys, and the first and last receive times."""

    keys: list[str]
    first: datetime
    last: datetime


def upload_objects(s3, records: list[dict]) -> Uploaded:
    batches = [
        records[i : i + EVENTS_PER_OBJECT] for i in range(0, len(records), EVENTS_PER_OBJECT)
    ]

    def put(batch: list[dict]) -> str:
        key = object_key(datetime.fromisoformat(batch[0]["received_at"]), uuid.uuid4().hex)
        s3.put_object(Bucket=BUCKET, Key=key, Body=encode_raw_object(batch))
        return key

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(put, batches))
    return Uploaded(
        keys,
        datetime.fromisoformat(records[0]["received_at"]),
        datetime.fromisoformat(records[-1]["received_at"]),
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_etl(
    cluster: PostgresCluster, bucket: RawBucket, uploaded: Uploaded
) -> tuple[float, loader.RunReport, float]:
    """Seconds of the ETL run, its report, and the CPU seconds the S3 emulator spent serving it."""
    connection = fresh_database(cluster, ETL_DATABASE)
    moto_cpu_before = cpu_seconds(bucket.server_pid)
    started = time.perf_counter()
    report = loader.run_window(
        connection, bucket.moto.client("s3"), BUCKET, start=uploaded.first, end=uploaded.last
    )
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed, report, cpu_seconds(bucket.server_pid) - moto_cpu_before


@dataclass(frozen=True)
class HourlyRun:
    """(h): the invocation's wall time, the ETL process's peak resident memory, its report."""

    seconds: float
    peak_rss_mb: float
    report: dict  # the handler's answer, RunReport.as_dict()


def measure_hourly_batch(
    cluster: PostgresCluster, bucket: RawBucket, uploaded: Uploaded, log_path: Path
) -> HourlyRun:
    """The ETL Lambda's handler, in a worker process of its own, loads the hour of ``uploaded``
    into (b)'s warehouse: the invocation's wall time and the worker's peak resident memory."""
    settings = {
        "RAW_BUCKET": BUCKET,
        "DWH_HOST": "127.0.0.1",
        "DWH_PORT": str(cluster.port),
        "DWH_USER": "postgres",
        "DWH_PASSWORD": cluster.superuser_password,
        "DWH_DATABASE": ETL_DATABASE,
    }
    deployment = Deployment(
        name="clickstream-bench-etl",
        arn="",
        handler="etl.handler.handler",  # the zip's handler.py: lambda_src/etl/handler.py
        runtime="python3.12",
        timeout_seconds=ETL_TIMEOUT_SECONDS,
        memory_mb=ETL_MEMORY_MB,
        code_sha256="",
        environment=tuple(settings.items()),
        role="",
    )
    worker = Worker(
        deployment,
        REPOSITORY / "lambda_src",
        aws_environment(bucket.moto.endpoint_url),
        log_path,
    )
    try:
        window = {"start": uploaded.first.isoformat(), "end": uploaded.last.isoformat()}
        started = time.perf_counter()
        try:
            report = worker.invoke(window, request_id=str(uuid.uuid4()))
        except FunctionError as error:
            log = log_path.read_text(errors="replace")[-4000:]
            raise SystemExit(f"the ETL handler failed: {error.payload}\n{log}") from error
        seconds = time.perf_counter() - started
        # Read before the worker exits: the high-water mark of its resident set, in kB.
        status = Path(f"/proc/{worker.process.pid}/status").read_text()
        peak_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
    finally:
        worker.stop()
    return HourlyRun(seconds, peak_kb / 1024, report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="N: the week of (a), (b)")
    parser.add_argument(
        "--insert-sample", type=int, default=100_000, help="rows of (c), (c') and (d)"
    )
    parser.add_argument(
        "--hourly-events",
        type=int,
        default=360_000,
        help="H: the hour's batch of (h); the default is 100 events a second",
    )
    add_output_option(parser)
    arguments = parser.parse_args()
    with recorded(arguments.output):
        print_results(measure(arguments))
    return 0


@dataclass(frozen=True)
class Results:
    events: int
    copy_seconds: float
    etl_seconds: float
    etl_report: loader.RunReport
    moto_cpu_seconds: float
    hourly_events: int
    hourly: HourlyRun
    sample: int
    baselines: list[tuple[str, float]]  # (path, seconds) of (c), (c') and (d)


def measure(arguments: argparse.Namespace) -> Results:
    count = arguments.events
    root = Path(tempfile.mkdtemp(prefix="clickstream-bench-pg-"))
    cluster = PostgresCluster(root=root).start()
    try:
        with raw_bucket() as bucket:
            s3 = bucket.moto.client("s3")
            progress(f"generating {count:,} events ...")
            records = generated_records(count)
            week = upload_objects(s3, records)
            progress(f"uploaded {len(week.keys):,} raw objects of up to {EVENTS_PER_OBJECT} events")
            copy_seconds = measure_copy(cluster, records)
            etl_seconds, report, moto_cpu = measure_etl(cluster, bucket, week)
            assert report.events_loaded == count, report

            # The emulator keeps objects in memory: only the hour's batch from here on.
            bucket.delete(week.keys)
            progress(f"the hour's batch: {arguments.hourly_events:,} events ...")
            hour_records = generated_records(
                arguments.hourly_events, seed=8, first=FIRST_HOUR + WEEK, span=HOUR
            )
            hour = upload_objects(s3, hour_records)
            del hour_records
            hourly = measure_hourly_batch(cluster, bucket, hour, root / "etl-worker.log")

            sample = records[: min(count, arguments.insert_sample)]
            baselines = [
                ("(c) per-row INSERT, a commit per row", measure_row_inserts(cluster, sample, 1)),
                (
                    "(c') per-row INSERT, one transaction",
                    measure_row_inserts(cluster, sample, len(sample)),
                ),
                (
                    "(d) original ETL: 200-row INSERTs",
                    measure_row_inserts(cluster, sample, 200, 200),
                ),
            ]
    finally:
        remove_cluster(cluster)
    return Results(
        count,
        copy_seconds,
        etl_seconds,
        report,
        moto_cpu,
        arguments.hourly_events,
        hourly,
        len(sample),
        baselines,
    )


def print_results(results: Results) -> None:
    count, report, hourly = results.events, results.etl_report, results.hourly
    copy_rate, etl_rate = count / results.copy_seconds, count / results.etl_seconds
    print()
    print(f"{'path':<48} {'events':>10} {'seconds':>9} {'events/s':>11} {'ETL is':>8}")
    rows = [
        ("(a) raw COPY into an empty copy of the table", count, results.copy_seconds),
        ("(b) ETL end to end from S3 objects", count, results.etl_seconds),
        ("(h) an hour's batch, ETL handler in a process", results.hourly_events, hourly.seconds),
    ] + [(name, results.sample, seconds) for name, seconds in results.baselines]
    for name, events, seconds in rows:
        rate = events / seconds
        print(f"{name:<48} {events:>10,} {seconds:>9.2f} {rate:>11,.0f} {etl_rate / rate:>7.2f}x")
    (_, per_row_seconds), _, (_, original_seconds) = results.baselines
    per_row_rate, original_rate = (
        results.sample / per_row_seconds,
        results.sample / original_seconds,
    )
    print()
    print(f"ETL / raw COPY                   = {etl_rate / copy_rate:7.2f}   (target >= 0.5)")
    print(
        f"ETL / (d) original ETL           = {etl_rate / original_rate:7.2f}   "
        "(target > 1: the ETL beats (d)'s 200-row INSERTs)"
    )
    print(f"ETL / per-row INSERT, (c)        = {etl_rate / per_row_rate:7.1f}   (target >= 30)")
    print(
        f"(h) seconds for the hour's batch = {hourly.seconds:7.1f}   "
        f"(target < {HOURLY_TARGET_SECONDS}) {verdict(hourly.seconds < HOURLY_TARGET_SECONDS)}"
    )
    print(
        f"(h) ETL process peak RSS, MB     = {hourly.peak_rss_mb:7,.0f}   "
        f"(target < {MEMORY_TARGET_MB:,}) {verdict(hourly.peak_rss_mb < MEMORY_TARGET_MB)}"
    )
    print()
    print(
        f"(b) ETL run: {report.objects:,} objects, {report.events_loaded:,} events loaded, "
        f"aggregates refreshed {report.aggregates_refreshed}"
    )
    print(f"(b) ETL phases (s): {report.phase_seconds}")
    print(
        f"(h) ETL run into (b)'s warehouse of {count:,} events: {hourly.report['status']}, "
        f"{hourly.report['objects']:,} objects, {hourly.report['events_loaded']:,} events "
        f"loaded, aggregates refreshed {hourly.report['aggregates_refreshed']}"
    )
    print(f"(h) ETL phases (s): {hourly.report['phase_seconds']}")
    print(
        "CPU the moto S3 server spent serving (b) on the same "
        f"{os.cpu_count()} cores: {results.moto_cpu_seconds:.1f} s"
    )


def verdict(met: bool) -> str:
    return "ok" if met else "MISSED"


def progress(message: str) -> None:
    """To stderr: what is printed to stdout is the results (--output)."""
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""ETL throughput: raw COPY vs the ETL end to end vs per-row INSERT, on this machine.

    make bench                      # N = 1,000,000 events
    .venv/bin/python benchmarks/etl_throughput.py --events 200000

Starts its own PostgreSQL (Debian's server, default durability settings) and moto S3 server on
loopback, then measures, over the same N generated events:

  (a) COPY of the N prepared rows into an empty copy of clickstream_events (same indexes): the
      limit of this machine;
  (b) the ETL end to end (loader.run_window) over the events as raw NDJSON objects in S3, with
      EVENTS_PER_OBJECT events per object: fetch, validate, map, stage, merge with dedup, ledger,
      sessions and rollups;
  (c) per-row INSERT with a commit per row, the baseline of the issue; and for reference (c')
      per-row INSERT in one transaction and (d) what the original ETL's last version did,
      200-row INSERT ... ON CONFLICT DO NOTHING per transaction. These run on a sample of
      --insert-sample rows: their rates do not depend on N. Note that loopback makes every
      round trip far cheaper than Lambda to EC2 across subnets, which flatters (c) and (c').

Prints events/s for each and the ratios against the targets (b >= 0.5 a, b >= 30 c).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY / "lambda_src"), str(REPOSITORY)]

import boto3  # noqa: E402

from clickstream import loader, migrations  # noqa: E402
from clickstream.mapping import WAREHOUSE_COLUMNS, new_raw_record, warehouse_row  # noqa: E402
from clickstream.partitions import object_key  # noqa: E402
from clickstream.raw_format import encode_raw_object  # noqa: E402
from tests.fixtures.aws import REGION, aws_environment, stack_bucket_name  # noqa: E402
from tests.fixtures.postgres import PostgresCluster, remove_cluster  # noqa: E402
from tests.fixtures.processes import free_loopback_port, port_answers, wait_until  # noqa: E402

EVENTS_PER_OBJECT = 500  # the ingest's batch limit: what our own tracker's batches approach
BUCKET = stack_bucket_name("raw")
FIRST_HOUR = datetime(2025, 12, 1, tzinfo=UTC)
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


def generated_records(count: int, seed: int = 7) -> list[dict]:
    """``count`` raw records: sessions of a few events spread over a week, in time order."""
    rng = random.Random(seed)
    records: list[dict] = []
    moment = FIRST_HOUR
    spacing = timedelta(days=7) / count
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


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_loopback_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_answers(port), "moto server")
    return process, f"http://127.0.0.1:{port}"


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


def upload_objects(s3, records: list[dict]) -> tuple[int, datetime, datetime]:
    batches = [
        records[i : i + EVENTS_PER_OBJECT] for i in range(0, len(records), EVENTS_PER_OBJECT)
    ]

    def put(batch: list[dict]) -> None:
        received = datetime.fromisoformat(batch[0]["received_at"])
        s3.put_object(
            Bucket=BUCKET, Key=object_key(received, uuid.uuid4().hex), Body=encode_raw_object(batch)
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, batches))
    first = datetime.fromisoformat(records[0]["received_at"])
    last = datetime.fromisoformat(records[-1]["received_at"])
    return len(batches), first, last


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_etl(
    cluster: PostgresCluster, s3, first: datetime, last: datetime, moto_pid: int
) -> tuple[float, loader.RunReport, float]:
    """Seconds of the ETL run, its report, and the CPU seconds the S3 emulator spent serving it."""
    connection = fresh_database(cluster, "bench_etl")
    moto_cpu_before = cpu_seconds(moto_pid)
    started = time.perf_counter()
    report = loader.run_window(connection, s3, BUCKET, start=first, end=last)
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed, report, cpu_seconds(moto_pid) - moto_cpu_before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--insert-sample", type=int, default=100_000)
    arguments = parser.parse_args()
    count = arguments.events

    import tempfile

    cluster = PostgresCluster(root=Path(tempfile.mkdtemp(prefix="clickstream-bench-pg-"))).start()
    moto, endpoint = start_moto()
    try:
        print(f"generating {count:,} events ...", flush=True)
        records = generated_records(count)
        s3 = boto3.client("s3", region_name=REGION, **_credentials(endpoint))
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        objects, first, last = upload_objects(s3, records)
        print(f"uploaded {objects:,} raw objects of up to {EVENTS_PER_OBJECT} events", flush=True)

        copy_seconds = measure_copy(cluster, records)
        etl_seconds, report, moto_cpu = measure_etl(cluster, s3, first, last, moto.pid)
        sample = records[: min(count, arguments.insert_sample)]
        baselines = [
            ("(c) per-row INSERT, a commit per row", measure_row_inserts(cluster, sample, 1)),
            (
                "(c') per-row INSERT, one transaction",
                measure_row_inserts(cluster, sample, len(sample)),
            ),
            ("(d) original ETL: 200-row INSERTs", measure_row_inserts(cluster, sample, 200, 200)),
        ]
    finally:
        moto.terminate()
        remove_cluster(cluster)

    assert report.events_loaded == count, report
    copy_rate, etl_rate = count / copy_seconds, count / etl_seconds
    print()
    print(f"{'path':<46} {'events':>10} {'seconds':>9} {'events/s':>11} {'ETL is':>8}")
    rows = [
        ("(a) raw COPY into an empty copy of the table", count, copy_seconds),
        ("(b) ETL end to end from S3 objects", count, etl_seconds),
    ] + [(name, len(sample), seconds) for name, seconds in baselines]
    for name, events, seconds in rows:
        rate = events / seconds
        print(f"{name:<46} {events:>10,} {seconds:>9.2f} {rate:>11,.0f} {etl_rate / rate:>7.2f}x")
    per_row_rate = len(sample) / baselines[0][1]
    print()
    print(f"ETL / raw COPY                  = {etl_rate / copy_rate:6.2f}   (target >= 0.5)")
    print(f"ETL / per-row INSERT, (c)       = {etl_rate / per_row_rate:6.1f}   (target >= 30)")
    print(f"ETL run: {report.objects:,} objects, {report.events_loaded:,} events loaded, "
          f"aggregates refreshed {report.aggregates_refreshed}")  # fmt: skip
    print(f"ETL phases (s): {report.phase_seconds}")
    print(f"CPU the moto S3 server spent serving the ETL on the same 2 cores: {moto_cpu:.1f} s")
    return 0


def _credentials(endpoint: str) -> dict[str, str]:
    environment = aws_environment(endpoint)
    return {
        "endpoint_url": endpoint,
        "aws_access_key_id": environment["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": environment["AWS_SECRET_ACCESS_KEY"],
    }


if __name__ == "__main__":
    sys.exit(main())

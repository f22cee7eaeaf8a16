"""The load path: raw objects in (moto) S3 → rows in a real PostgreSQL, exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from clickstream import load_batch, loader, raw_store, warehouse_writer
from clickstream.mapping import WAREHOUSE_COLUMNS
from clickstream.partitions import hour_prefix, hours_between
from clickstream.raw_store import RawObject
from tests.fixtures.aws import aws_environment
from tests.raw_events import put_raw_bytes, put_raw_object, raw_record, tracker_event

REPOSITORY = Path(__file__).resolve().parents[1]
HOUR_1 = datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
NOW = HOUR_1 + timedelta(minutes=50)


def scheduled(warehouse, aws, bucket, now=NOW, **options):
    connection = warehouse.etl_connection()
    try:
        return loader.run_scheduled(connection, aws.client("s3"), bucket, now=now, **options)
    finally:
        connection.close()


def window(warehouse, aws, bucket, start, end, force=False, **options):
    connection = warehouse.etl_connection()
    try:
        return loader.run_window(
            connection, aws.client("s3"), bucket, start=start, end=end, force=force, **options
        )
    finally:
        connection.close()


def events_in(hour: datetime, count: int, session: str = "session-1") -> list[dict]:
    return [
        raw_record(tracker_event(sessionId=session), hour + timedelta(seconds=index))
        for index in range(count)
    ]


def put_one_object_per_minute(s3, bucket, objects: int, events_each: int) -> None:
    """``objects`` raw objects in HOUR_1, a minute apart, each one session of ``events_each``."""
    for minute in range(objects):
        received = HOUR_1 + timedelta(minutes=minute)
        put_raw_object(s3, bucket, events_in(received, events_each, session=f"s{minute}"), received)


def test_every_field_of_a_raw_event_lands_in_its_column(warehouse, aws, raw_bucket):
    event = tracker_event(
        eventId="6f1c7f8e-2f55-4c1e-9a1b-0d9b3c1e2a77",
        eventTimestamp="2025-12-01T10:14:59.500Z",
        userId="user_2abc",
        userLoginState="logged_in",
        identitySource="clerk_google",
        isFirstVisit=True,
    )
    received = HOUR_1 + timedelta(minutes=15)
    put_raw_object(aws.client("s3"), raw_bucket, [raw_record(event, received)], received)

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.status, report.objects, report.events_loaded) == ("succeeded", 1, 1)
    row = warehouse.query(f"SELECT {', '.join(WAREHOUSE_COLUMNS)} FROM clickstream_events")[0]
    assert dict(zip(WAREHOUSE_COLUMNS, row, strict=True)) == {
        "event_id": "6f1c7f8e-2f55-4c1e-9a1b-0d9b3c1e2a77",
        "event_timestamp": datetime(2025, 12, 1, 10, 14, 59, 500000, tzinfo=UTC),
        "event_name": "product_view",
        "user_id": "user_2abc",
        "user_login_state": "logged_in",
        "identity_source": "clerk_google",
        "client_id": "client-1",
        "session_id": "session-1",
        "is_first_visit": True,
        "context_product_id": "p-100",
        "context_product_name": "Dell XPS 13",
        "context_product_category": "laptop",
        "context_product_brand": "Dell",
        "context_product_price": Decimal("32990000.00"),
        "context_product_discount_price": Decimal("29990000.00"),
        "context_product_url_path": "/products/dell-xps-13",
        "page_url": "https://shop.example.com/products/dell-xps-13",
        "referrer": "https://shop.example.com/",
        "received_at": received,
        "client_event_id": "6f1c7f8e-2f55-4c1e-9a1b-0d9b3c1e2a77",
        "client_timestamp": datetime(2025, 12, 1, 10, 14, 59, 500000, tzinfo=UTC),
        "client_sent_at": None,
        "user_agent": "ua",
        "element": None,
        "order_id": None,
        "cart_id": None,
        "order_total": None,
        "item_count": None,
    }


def test_a_second_run_loads_nothing_new(warehouse, aws, raw_bucket):
    s3 = aws.client("s3")
    for minute in (5, 25):
        received = HOUR_1 + timedelta(minutes=minute)
        put_raw_object(s3, raw_bucket, events_in(received, 3), received)
    first = scheduled(warehouse, aws, raw_bucket)
    second = scheduled(warehouse, aws, raw_bucket)
    assert (first.objects, first.events_loaded) == (2, 6)
    assert (second.status, second.objects, second.events_loaded) == ("succeeded", 0, 0)
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 6


def test_the_same_event_in_two_objects_lands_once(warehouse, aws, raw_bucket):
    s3 = aws.client("s3")
    record = raw_record(tracker_event(eventId=str(uuid.uuid4())), HOUR_1)
    put_raw_object(s3, raw_bucket, [record], HOUR_1)
    put_raw_object(s3, raw_bucket, [record, raw_record(tracker_event(), HOUR_1)], HOUR_1)

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.events_loaded, report.duplicates_skipped) == (2, 1)
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 2


def test_an_event_retried_after_a_load_is_skipped_as_a_duplicate(warehouse, aws, raw_bucket):
    s3 = aws.client("s3")
    record = raw_record(tracker_event(eventId=str(uuid.uuid4())), HOUR_1)
    put_raw_object(s3, raw_bucket, [record], HOUR_1)
    scheduled(warehouse, aws, raw_bucket)
    put_raw_object(s3, raw_bucket, [record], HOUR_1 + timedelta(minutes=30))
    report = scheduled(warehouse, aws, raw_bucket)
    assert (report.objects, report.events_loaded, report.duplicates_skipped) == (1, 0, 1)


def test_malformed_lines_go_to_rejects_and_their_neighbours_load(warehouse, aws, raw_bucket):
    good = [json.dumps(r).encode() for r in events_in(HOUR_1, 2)]
    bad_contract = json.dumps(raw_record(tracker_event(eventName="Not A Name"), HOUR_1)).encode()
    body = b"\n".join(
        [good[0], b"{this is not json", bad_contract, b"\xff\xfe not utf-8", good[1], b""]
    )
    key = put_raw_bytes(aws.client("s3"), raw_bucket, body, HOUR_1)

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.events_loaded, report.rejected_lines) == (2, 3)
    rejects = warehouse.query(
        "SELECT object_key, line_number, reason, raw_text FROM etl_rejects ORDER BY line_number"
    )
    assert [(r[0], r[1]) for r in rejects] == [(key, 2), (key, 3), (key, 4)]
    assert "invalid JSON" in rejects[0][2]
    assert rejects[0][3] == "{this is not json"
    assert "/event/eventName" in rejects[1][2]
    assert "not valid UTF-8" in rejects[2][2]
    assert warehouse.query("SELECT lines, rejected_lines FROM etl_loaded_objects") == [(5, 3)]


def test_an_object_whose_load_crashed_before_commit_is_loaded_whole_next_time(
    warehouse, aws, raw_bucket
):
    put_raw_object(aws.client("s3"), raw_bucket, events_in(HOUR_1, 5), HOUR_1)
    # A real crash: the loader process is SIGKILLed after COPY and INSERT, before COMMIT.
    crashing_run = f"""
import json, os, signal, sys
from datetime import datetime
from clickstream import loader, warehouse, warehouse_writer
def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
warehouse_writer.execute_values = crash
settings = warehouse.WarehouseSettings(**json.loads(sys.argv[1]))
connection = warehouse.connect(settings, settings.password, "crash-test")
import boto3
loader.run_scheduled(connection, boto3.client("s3"), "{raw_bucket}",
                     now=datetime.fromisoformat("{NOW.isoformat()}"))
"""
    settings = warehouse.etl_settings()
    completed = subprocess.run(
        [sys.executable, "-c", crashing_run, json.dumps(settings.__dict__)],
        env={**os.environ, **aws_environment(aws.endpoint_url), "PYTHONPATH": _pythonpath()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == -9, completed.stderr
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 0
    assert warehouse.scalar("SELECT count(*) FROM etl_loaded_objects") == 0

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.objects, report.events_loaded) == (1, 5)
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 5
    # The killed run's record does not stay 'running' forever: the next run marks it.
    assert report.abandoned_runs == 1
    assert warehouse.query("SELECT status FROM etl_runs ORDER BY started_at") == [
        ("abandoned",),
        ("succeeded",),
    ]


def test_a_run_interrupted_between_objects_keeps_what_it_committed_and_the_next_completes(
    warehouse, aws, raw_bucket, monkeypatch
):
    s3 = aws.client("s3")
    put_one_object_per_minute(s3, raw_bucket, 6, 10)
    monkeypatch.setattr(load_batch, "CHUNK_TARGET_LINES", 10)  # one object per transaction
    transactions = []
    original_load_chunk = warehouse_writer.load_chunk

    def kill_the_connection_before_the_third_transaction(connection, prepared, **options):
        transactions.append(prepared)
        if len(transactions) == 3:
            warehouse.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = 'clickstream_etl' AND pid <> pg_backend_pid()"
            )
        return original_load_chunk(connection, prepared, **options)

    monkeypatch.setattr(
        warehouse_writer, "load_chunk", kill_the_connection_before_the_third_transaction
    )
    with pytest.raises(psycopg2.OperationalError):
        scheduled(warehouse, aws, raw_bucket)
    assert warehouse.scalar("SELECT count(*) FROM etl_loaded_objects") == 2
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 20

    monkeypatch.setattr(warehouse_writer, "load_chunk", original_load_chunk)
    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.objects, report.events_loaded) == (4, 40)
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 60


def test_two_concurrent_runs_never_load_anything_twice(warehouse, aws, raw_bucket):
    s3 = aws.client("s3")
    put_one_object_per_minute(s3, raw_bucket, 20, 25)
    start = threading.Barrier(2)
    reports = []

    def run():
        start.wait()
        reports.append(scheduled(warehouse, aws, raw_bucket))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sum(report.objects for report in reports) == 20
    assert sum(report.events_loaded for report in reports) == 500
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 500
    assert warehouse.scalar("SELECT count(*) FROM etl_loaded_objects") == 20


def test_a_run_while_another_holds_the_lock_does_nothing_and_says_so(warehouse, aws, raw_bucket):
    put_raw_object(aws.client("s3"), raw_bucket, events_in(HOUR_1, 1), HOUR_1)
    holder = warehouse.admin_connection()
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (loader.RUN_LOCK_KEY,))
        report = scheduled(warehouse, aws, raw_bucket)
    finally:
        holder.close()
    assert report.status == "skipped"
    assert "another ETL run" in report.detail
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 0


def test_a_scheduled_run_lists_only_the_hours_since_the_newest_loaded_one(
    warehouse, aws, raw_bucket
):
    s3 = aws.client("s3")
    put_raw_object(s3, raw_bucket, events_in(HOUR_1, 1), HOUR_1)
    scheduled(warehouse, aws, raw_bucket)
    later = HOUR_1 + timedelta(hours=6, minutes=10)
    listed = []
    s3.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: listed.append(params["Prefix"]),
    )
    connection = warehouse.etl_connection()
    try:
        loader.run_scheduled(connection, s3, raw_bucket, now=later, lookback_hours=3)
    finally:
        connection.close()
    expected = [hour_prefix(h) for h in hours_between(HOUR_1 - timedelta(hours=3), later)]
    # The partitions are listed in parallel, so in no particular order: each once.
    assert sorted(listed) == expected


def test_a_late_object_within_the_lookback_is_loaded(warehouse, aws, raw_bucket):
    s3 = aws.client("s3")
    put_raw_object(
        s3, raw_bucket, events_in(HOUR_1 + timedelta(hours=2), 1), HOUR_1 + timedelta(hours=2)
    )
    scheduled(warehouse, aws, raw_bucket, now=HOUR_1 + timedelta(hours=2, minutes=5))
    put_raw_object(s3, raw_bucket, events_in(HOUR_1, 1), HOUR_1)  # arrives late, in an old hour
    report = scheduled(
        warehouse, aws, raw_bucket, now=HOUR_1 + timedelta(hours=3), lookback_hours=3
    )
    assert (report.objects, report.events_loaded) == (1, 1)


def test_the_lag_of_the_oldest_unloaded_object_is_reported(warehouse, aws, raw_bucket):
    received = datetime.now(UTC)
    put_raw_object(aws.client("s3"), raw_bucket, events_in(received, 1), received)
    listing = aws.client("s3").list_objects_v2(Bucket=raw_bucket)
    last_modified = listing["Contents"][0]["LastModified"]
    report = scheduled(warehouse, aws, raw_bucket, now=last_modified + timedelta(minutes=42))
    assert report.lag_seconds == pytest.approx(42 * 60, abs=1)


def test_a_window_run_loads_only_its_hours_and_force_reloads_without_duplicates(
    warehouse, aws, raw_bucket
):
    s3 = aws.client("s3")
    for hours in range(4):
        received = HOUR_1 + timedelta(hours=hours)
        put_raw_object(s3, raw_bucket, events_in(received, 2, session=f"s{hours}"), received)

    first = window(
        warehouse, aws, raw_bucket, HOUR_1 + timedelta(hours=1), HOUR_1 + timedelta(hours=2)
    )
    again = window(
        warehouse, aws, raw_bucket, HOUR_1 + timedelta(hours=1), HOUR_1 + timedelta(hours=2)
    )
    warehouse.query(
        "UPDATE clickstream_events SET event_name = 'tampered' WHERE session_id = 's1' RETURNING 1"
    )
    forced = window(
        warehouse,
        aws,
        raw_bucket,
        HOUR_1 + timedelta(hours=1),
        HOUR_1 + timedelta(hours=2),
        force=True,
    )

    assert (first.objects, first.events_loaded) == (2, 4)
    assert (again.objects, again.events_loaded) == (0, 0)
    assert (
        forced.objects,
        forced.events_loaded,
        forced.events_updated,
        forced.duplicates_skipped,
    ) == (
        2,
        0,
        2,
        2,
    )
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 4
    assert (
        warehouse.scalar("SELECT count(*) FROM clickstream_events WHERE event_name = 'tampered'")
        == 0
    )


def test_a_window_that_ends_before_it_starts_is_refused(warehouse, aws, raw_bucket):
    with pytest.raises(ValueError, match="before it starts"):
        window(warehouse, aws, raw_bucket, HOUR_1, HOUR_1 - timedelta(hours=1))


def test_every_run_is_recorded_with_its_counts(warehouse, aws, raw_bucket):
    put_raw_object(aws.client("s3"), raw_bucket, events_in(HOUR_1, 3), HOUR_1)
    report = scheduled(warehouse, aws, raw_bucket)
    assert warehouse.query(
        "SELECT run_id::text, trigger, status, objects, events_loaded FROM etl_runs"
    ) == [(report.run_id, "schedule", "succeeded", 1, 3)]


def _pythonpath() -> str:
    return os.pathsep.join([str(REPOSITORY / "lambda_src"), str(REPOSITORY)])


def test_an_event_written_outside_the_run_lock_is_skipped_not_fatal(
    warehouse, aws, raw_bucket, monkeypatch
):
    records = events_in(HOUR_1, 3)
    put_raw_object(aws.client("s3"), raw_bucket, records, HOUR_1)
    warehouse.query(
        "INSERT INTO clickstream_events (event_id, event_timestamp, event_name, received_at) "
        "VALUES (%s, now(), 'written_elsewhere', now()) RETURNING 1",
        (records[1]["event_id"],),
    )
    # As if the row had been written after the loader looked for existing event ids.
    monkeypatch.setattr(
        warehouse_writer, "_EXISTING_EVENT_IDS", "SELECT NULL::text WHERE %s::text[] IS NULL"
    )

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.status, report.events_loaded, report.duplicates_skipped) == ("succeeded", 2, 1)
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 3


def test_a_run_out_of_time_stops_between_transactions_and_the_next_carries_on(
    warehouse, aws, raw_bucket, monkeypatch
):
    s3 = aws.client("s3")
    put_one_object_per_minute(s3, raw_bucket, 3, 4)
    monkeypatch.setattr(load_batch, "CHUNK_TARGET_LINES", 4)  # one object per transaction
    connection = warehouse.etl_connection()
    try:
        out_of_time = loader.run_scheduled(
            connection, s3, raw_bucket, now=NOW, deadline=time.monotonic() - 1
        )
    finally:
        connection.close()
    assert (out_of_time.status, out_of_time.objects, out_of_time.pending_objects) == (
        "incomplete",
        0,
        3,
    )

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.status, report.objects, report.events_loaded) == ("succeeded", 3, 12)


def test_an_object_gone_between_listing_and_reading_is_counted_not_fatal(
    warehouse, aws, raw_bucket, monkeypatch
):
    put_raw_object(aws.client("s3"), raw_bucket, events_in(HOUR_1, 2), HOUR_1)
    listed_for_real = raw_store.list_hour

    def listing_with_an_expired_object(s3_client, bucket, hour):
        found = listed_for_real(s3_client, bucket, hour)
        if hour == HOUR_1:
            gone = RawObject(hour_prefix(HOUR_1) + "events-expired.json", HOUR_1, 10, "x", NOW)
            found.append(gone)
        return found

    monkeypatch.setattr(raw_store, "list_hour", listing_with_an_expired_object)

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.status, report.objects, report.missing_objects, report.events_loaded) == (
        "succeeded",
        1,
        1,
        2,
    )


def test_a_transaction_never_holds_objects_of_two_hours():
    fetched = [
        (RawObject(f"object-{index}", HOUR_1 + timedelta(hours=index // 2), 3, "etag", NOW), b"{}")
        for index in range(5)
    ]
    assert [[item.key for item, _ in chunk] for chunk in load_batch.chunks(fetched)] == [
        ["object-0", "object-1"],
        ["object-2", "object-3"],
        ["object-4"],
    ]


def test_progress_comes_once_per_hour_loaded_with_that_hours_share_of_the_report(
    warehouse, aws, raw_bucket, monkeypatch
):
    s3 = aws.client("s3")
    monkeypatch.setattr(load_batch, "CHUNK_TARGET_LINES", 3)  # one object per transaction
    # The first hour: three objects, so three transactions. The second: nothing. The third: an
    # event of the first hour again, a new one, and an object that is not JSON.
    repeated = raw_record(tracker_event(eventId=str(uuid.uuid4())), HOUR_1)
    put_raw_object(s3, raw_bucket, [repeated, *events_in(HOUR_1, 2)], HOUR_1)
    for minute in (10, 20):
        received = HOUR_1 + timedelta(minutes=minute)
        put_raw_object(s3, raw_bucket, events_in(received, 3, session=f"s{minute}"), received)
    third_hour = HOUR_1 + timedelta(hours=2)
    put_raw_object(s3, raw_bucket, [repeated, raw_record(tracker_event(), third_hour)], third_hour)
    put_raw_bytes(s3, raw_bucket, b"{broken\n", third_hour)
    hours: list[loader.HourLoaded] = []

    report = window(warehouse, aws, raw_bucket, HOUR_1, third_hour, progress=hours.append)

    assert [
        (h.hour, h.objects, h.events_loaded, h.duplicates_skipped, h.rejected_lines) for h in hours
    ] == [(HOUR_1.isoformat(), 3, 9, 0, 0), (third_hour.isoformat(), 2, 1, 1, 1)]
    assert [h.objects_remaining for h in hours] == [2, 0]
    assert {h.run_id for h in hours} == {report.run_id}
    # The hours add up to the run's report.
    for name in (
        "objects",
        "missing_objects",
        "events_loaded",
        "events_updated",
        "duplicates_skipped",
        "rejected_lines",
        "isolated_lines",
    ):
        assert sum(getattr(h, name) for h in hours) == getattr(report, name), name
    assert (report.status, report.objects, report.events_loaded) == ("succeeded", 5, 10)
    assert 0 <= hours[0].seconds <= hours[0].elapsed_seconds <= hours[1].elapsed_seconds
    assert hours[1].elapsed_seconds <= report.duration_seconds


def test_a_window_plan_counts_objects_and_loaded_ones_per_hour_and_changes_nothing(
    warehouse, aws, raw_bucket
):
    s3 = aws.client("s3")
    for hours, objects in ((0, 2), (1, 1), (2, 0), (3, 3)):
        received = HOUR_1 + timedelta(hours=hours)
        for _ in range(objects):
            put_raw_object(s3, raw_bucket, events_in(received, 1), received)
    window(warehouse, aws, raw_bucket, HOUR_1, HOUR_1 + timedelta(hours=1))
    connection = warehouse.etl_connection()
    try:
        plan = loader.plan_window(
            connection, s3, raw_bucket, start=HOUR_1, end=HOUR_1 + timedelta(hours=3)
        )
        forced = loader.plan_window(
            connection, s3, raw_bucket, start=HOUR_1, end=HOUR_1 + timedelta(hours=3), force=True
        )
    finally:
        connection.close()
    assert [(p.objects, p.loaded, p.to_load) for p in plan] == [
        (2, 2, 0),
        (1, 1, 0),
        (0, 0, 0),
        (3, 0, 3),
    ]
    assert [p.to_load for p in forced] == [2, 1, 0, 3]
    assert plan[3].hour == (HOUR_1 + timedelta(hours=3)).isoformat()
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 3


# --- no input can stop the load ---------------------------------------------------------------

# Texts that COPY's CSV reader would take for syntax if the encoding were not total: a lone
# carriage return (the original outage), line feeds, the end-of-data marker alone on a line,
# quotes, delimiters, backslashes and what text format would read as NULL.
HOSTILE_TEXTS = ["a\rb", "a\nb", "a\r\nb", "\r", "\\.", "a\n\\.\nb", '"q,"', "x\\N", "\t;\x7f"]
TRACKER_TEXT_FIELDS = ("pageUrl", "referrer", "clientId", "sessionId", "userId")
PRODUCT_TEXT_FIELDS = ("id", "name", "category", "brand", "urlPath")


def test_control_characters_in_every_text_column_load_exactly_and_block_nothing(
    warehouse, aws, raw_bucket
):
    received = HOUR_1 + timedelta(minutes=1)
    # The body of the bug report's curl, as the ingest stores it.
    curl_event = {
        "eventName": "page_view",
        "pageUrl": "https://shop.example.vn/a\rb",
        "clientId": "c1",
        "sessionId": "s1",
        "isFirstVisit": True,
    }
    hostile = [raw_record(curl_event, received)]
    for text in HOSTILE_TEXTS:
        event = tracker_event(**dict.fromkeys(TRACKER_TEXT_FIELDS, text))
        event["product"] = {**dict.fromkeys(PRODUCT_TEXT_FIELDS, text), "price": 1}
        event["element"] = {"text": text, "dataset": {text: text}}
        hostile.append(raw_record(event, received))
    s3 = aws.client("s3")
    put_raw_object(s3, raw_bucket, hostile, received)
    clean = events_in(received, 3, session="clean")
    put_raw_object(s3, raw_bucket, clean, received)

    report = scheduled(warehouse, aws, raw_bucket)
    again = scheduled(warehouse, aws, raw_bucket)

    assert (report.status, report.events_loaded, report.rejected_lines) == (
        "succeeded",
        len(hostile) + len(clean),
        0,
    )
    assert again.status == "succeeded"
    assert (
        warehouse.scalar(
            "SELECT page_url FROM clickstream_events WHERE event_id = %s", (hostile[0]["event_id"],)
        )
        == "https://shop.example.vn/a\rb"
    )
    for record, text in zip(hostile[1:], HOSTILE_TEXTS, strict=True):
        stored = warehouse.query(
            "SELECT page_url, referrer, client_id, session_id, user_id, context_product_id, "
            "context_product_name, context_product_category, context_product_brand, "
            "context_product_url_path, element FROM clickstream_events WHERE event_id = %s",
            (record["event_id"],),
        )[0]
        assert stored[:-1] == (text,) * 10
        assert stored[-1] == {"text": text, "dataset": {text: text}}


def _admin_execute(warehouse, statement: str) -> None:
    """As the database owner, outside the ETL's privileges (a constraint, a ledger row)."""
    connection = warehouse.admin_connection()
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@pytest.mark.parametrize("force", [False, True], ids=["load", "forced reload"])
@pytest.mark.parametrize(
    "refusal",
    [
        "ADD CONSTRAINT no_poison CHECK (page_url IS DISTINCT FROM 'poison')",
        "ALTER COLUMN context_product_name TYPE varchar(12)",
    ],
    ids=["check violation", "data exception"],
)
def test_a_row_the_warehouse_refuses_is_isolated_into_rejects_and_its_neighbours_load(
    warehouse, aws, raw_bucket, refusal, force
):
    _admin_execute(warehouse, f"ALTER TABLE clickstream_events {refusal}")
    records = events_in(HOUR_1, 40)
    refused = (
        tracker_event(pageUrl="poison")
        if "CHECK" in refusal
        else tracker_event(product={"id": "p-1", "name": "a name longer than twelve"})
    )
    records[7], records[23] = raw_record(refused, HOUR_1), raw_record(refused, HOUR_1)
    key = put_raw_object(aws.client("s3"), raw_bucket, records, HOUR_1)

    if force:
        report = window(warehouse, aws, raw_bucket, HOUR_1, HOUR_1, force=True)
    else:
        report = scheduled(warehouse, aws, raw_bucket)

    assert (report.status, report.events_loaded, report.rejected_lines) == ("succeeded", 38, 2)
    assert report.isolated_lines == 2
    rejects = warehouse.query(
        "SELECT object_key, line_number, reason, raw_text FROM etl_rejects ORDER BY line_number"
    )
    assert [(r[0], r[1]) for r in rejects] == [(key, 8), (key, 24)]
    assert all(r[2].startswith("refused by the warehouse (") for r in rejects), rejects
    assert [json.loads(r[3])["event_id"] for r in rejects] == [
        records[7]["event_id"],
        records[23]["event_id"],
    ]
    assert warehouse.query("SELECT lines, rejected_lines FROM etl_loaded_objects") == [(40, 2)]
    assert warehouse.query("SELECT isolated_lines FROM etl_runs") == [(2,)]


def test_a_forced_reload_of_unchanged_data_rewrites_nothing_and_keeps_the_first_receive(
    warehouse, aws, raw_bucket
):
    s3 = aws.client("s3")
    retried = tracker_event(eventId=str(uuid.uuid4()))
    first_copy = raw_record(retried, HOUR_1 + timedelta(minutes=5))
    put_raw_object(s3, raw_bucket, [first_copy, *events_in(HOUR_1, 3)], HOUR_1)
    scheduled(warehouse, aws, raw_bucket)
    # The client retried: the same event again, received 20 minutes later, in another object.
    second_copy = raw_record(retried, HOUR_1 + timedelta(minutes=25))
    put_raw_object(s3, raw_bucket, [second_copy], HOUR_1 + timedelta(minutes=25))
    scheduled(warehouse, aws, raw_bucket)
    before = warehouse.query("SELECT * FROM clickstream_events ORDER BY event_id")

    reloads = [window(warehouse, aws, raw_bucket, HOUR_1, HOUR_1, force=True) for _ in range(3)]

    assert [(r.events_loaded, r.events_updated, r.duplicates_skipped) for r in reloads] == [
        (0, 0, 5)
    ] * 3
    assert warehouse.query("SELECT * FROM clickstream_events ORDER BY event_id") == before
    assert warehouse.scalar(
        "SELECT received_at FROM clickstream_events WHERE event_id = %s",
        (first_copy["event_id"],),
    ) == HOUR_1 + timedelta(minutes=5)


def test_a_forced_reload_that_moves_an_event_refreshes_the_hour_it_leaves(
    warehouse, aws, raw_bucket
):
    put_raw_object(aws.client("s3"), raw_bucket, events_in(HOUR_1, 2), HOUR_1)
    scheduled(warehouse, aws, raw_bucket)
    later = HOUR_1 + timedelta(hours=3)
    # Stand-in for a mapping fix: the stored event time is wrong, and the rollups follow it.
    warehouse.query(
        "UPDATE clickstream_events SET event_timestamp = event_timestamp + interval '3 hours' "
        "RETURNING 1"
    )
    warehouse.query("SELECT mark_range_dirty(%s, %s)", (later, later + timedelta(hours=1)))
    warehouse.query("SELECT * FROM refresh_dirty_aggregates()")
    assert (
        warehouse.scalar(
            "SELECT coalesce(sum(events), 0) FROM rollup_activity_hourly WHERE hour_start = %s",
            (later,),
        )
        == 2
    )

    report = window(warehouse, aws, raw_bucket, HOUR_1, HOUR_1, force=True)

    assert report.events_updated == 2
    assert (
        warehouse.scalar(
            "SELECT coalesce(sum(events), 0) FROM rollup_activity_hourly WHERE hour_start = %s",
            (later,),
        )
        == 0
    )
    assert (
        warehouse.scalar(
            "SELECT coalesce(sum(events), 0) FROM rollup_activity_hourly WHERE hour_start = %s",
            (HOUR_1,),
        )
        == 2
    )


def test_a_partition_from_the_future_cannot_stop_the_schedule(warehouse, aws, raw_bucket):
    # A raw object once written under events/2099/... and loaded: the newest loaded partition.
    _admin_execute(
        warehouse,
        "INSERT INTO etl_loaded_objects (object_key, partition_hour, size_bytes, lines, "
        "rejected_lines, run_id) VALUES ('events/2099/01/01/00/events-x.json', "
        "'2099-01-01T00:00Z', 1, 1, 0, gen_random_uuid())",
    )
    put_raw_object(aws.client("s3"), raw_bucket, events_in(HOUR_1, 4), HOUR_1)

    report = scheduled(warehouse, aws, raw_bucket)

    assert (report.status, report.events_loaded) == ("succeeded", 4)
    assert report.hours_listed == loader.DEFAULT_LOOKBACK_HOURS + 1


def test_a_window_that_ends_in_the_future_is_refused(warehouse, aws, raw_bucket):
    next_hour = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(ValueError, match="ends in the future"):
        window(warehouse, aws, raw_bucket, HOUR_1, next_hour)
    connection = warehouse.etl_connection()
    try:
        with pytest.raises(ValueError, match="ends in the future"):
            loader.plan_window(
                connection, aws.client("s3"), raw_bucket, start=HOUR_1, end=next_hour
            )
    finally:
        connection.close()


def test_unparsable_order_facts_are_counted_in_the_run(warehouse, aws, raw_bucket):
    checkout = tracker_event(
        "checkout_complete", element={"dataset": {"orderId": "o-1", "total": "n/a"}}
    )
    put_raw_object(aws.client("s3"), raw_bucket, [raw_record(checkout, HOUR_1)], HOUR_1)
    report = scheduled(warehouse, aws, raw_bucket)
    assert (report.events_loaded, report.unparsable_values) == (1, {"order_total": 1})
    assert warehouse.query("SELECT unparsable_values FROM etl_runs") == [({"order_total": 1},)]
    assert warehouse.query("SELECT order_id, order_total FROM clickstream_events") == [
        ("o-1", None)
    ]


def test_a_forced_reload_keeps_the_stored_copy_of_an_event_repeated_within_one_request(
    warehouse, aws, raw_bucket
):
    # One request holding each event twice (a tracker that resent its queue within a batch):
    # both copies share the receive time, and the load stores the first.
    firsts = events_in(HOUR_1, 40)
    repeats = [
        {**r, "event": {**r["event"], "pageUrl": "https://x.example/repeat"}} for r in firsts
    ]
    put_raw_object(aws.client("s3"), raw_bucket, firsts + repeats, HOUR_1)
    scheduled(warehouse, aws, raw_bucket)
    before = warehouse.query("SELECT * FROM clickstream_events ORDER BY event_id")

    reloads = [window(warehouse, aws, raw_bucket, HOUR_1, HOUR_1, force=True) for _ in range(3)]

    assert [(r.events_loaded, r.events_updated) for r in reloads] == [(0, 0)] * 3
    assert warehouse.query("SELECT * FROM clickstream_events ORDER BY event_id") == before
    repeated_url = "SELECT count(*) FROM clickstream_events WHERE page_url = %s"
    assert warehouse.scalar(repeated_url, ("https://x.example/repeat",)) == 0

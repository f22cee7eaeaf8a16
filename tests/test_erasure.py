"""Erasing one person ("right to be forgotten"): the rule that says which raw lines are theirs,
the raw objects in (moto) S3, the warehouse (migration 0010) and playbooks/erase_user.yml.

Alice and Bob use the shop; Alice asks to be forgotten. After the erasure the warehouse must be
exactly what loading only Bob's events would have made, no row or raw object version may name
Alice, and nothing (a second erasure, a forced reload) may bring her back.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from psycopg2 import errors

from clickstream import erasure, loader
from clickstream.erasure import Person, erase_lines, erase_raw_objects, hours_to_scan
from clickstream.partitions import object_key
from clickstream.raw_format import CONTENT_TYPE, encode_raw_object
from tests.fixtures.ansible import extra_vars, run_playbook
from tests.fixtures.aws import REGION, aws_environment
from tests.fixtures.warehouse import TEMPLATE_DATABASE, Warehouse
from tests.raw_events import raw_record, tracker_event

ALICE = {"user_id": "user-alice-5f0c", "client_id": "client-alice-9e2d"}
BOB = {"user_id": "user-bob-71aa", "client_id": "client-bob-3b8f"}
DAY_1 = datetime(2025, 12, 1, 9, 10, tzinfo=UTC)
DAY_2 = datetime(2025, 12, 2, 8, 30, tzinfo=UTC)
NOW = datetime(2025, 12, 2, 21, 0, tzinfo=UTC)
LAPTOP = {"id": "p-1", "name": "Dell XPS 13", "category": "laptop", "brand": "Dell", "price": 30e6}
MOUSE = {"id": "p-2", "name": "MX Master", "category": "mouse", "brand": "Logitech", "price": 2e6}
KEY_KINDS = ["user_id", "client_id"]
# What the_shops_raw_objects() holds of Alice: three sessions (5 + 2 + 3 events) and two lines
# the ETL rejects. Bob has three sessions in the same hours.
ALICES_EVENTS, ALICES_REJECTED_LINES = 10, 2
ALICES_LINES = ALICES_EVENTS + ALICES_REJECTED_LINES
REFERENCE_BUCKET = "clickstream-reference"
# Tables that are not derived from the events: compared (or not) on their own terms.
NOT_AGGREGATES = {
    "clickstream_events",
    "etl_loaded_objects",
    "etl_rejects",
    "etl_runs",
    "etl_dirty_hours",
    "etl_erased_sessions",
    "warehouse_settings",
    "schema_migrations",
    "aggregate_refresh_steps",
    "erasures",
}
# Columns that say when a row was written, not what it holds.
WRITE_TIME_COLUMNS = {"refreshed_at", "loaded_at"}


# --- the shop's raw objects ---------------------------------------------------------------------


def tracker_visit(person, session, start, steps, *, logged_in=True) -> list[bytes]:
    """A session of the shop's tracker: one raw line per (event name, product) step."""
    return [
        encode_raw_object(
            [
                raw_record(
                    tracker_event(
                        name,
                        userId=person["user_id"] if logged_in else None,
                        userLoginState="logged_in" if logged_in else "anonymous",
                        clientId=person["client_id"],
                        sessionId=session,
                        product=product,
                    ),
                    start + timedelta(minutes=minute),
                )
            ]
        )
        for minute, (name, product) in enumerate(steps)
    ]


def warehouse_shaped_visit(person, session, start, steps) -> list[bytes]:
    """A session sent in the warehouse's own field names (user_id, client_id, ...)."""
    return [
        encode_raw_object(
            [
                raw_record(
                    {
                        "event_name": name,
                        "user_id": person["user_id"],
                        "client_id": person["client_id"],
                        "session_id": session,
                        "page_url": "https://shop.example.com/products/mx-master",
                        "context_product_id": product["id"],
                        "context_product_category": product["category"],
                        "context_product_brand": product["brand"],
                    },
                    start + timedelta(minutes=minute),
                )
            ]
        )
        for minute, (name, product) in enumerate(steps)
    ]


def contract_breaking_line(person, received_at) -> bytes:
    record = raw_record(tracker_event(), received_at)
    record["event"] = {
        "eventName": 42,
        "userId": person["user_id"],
        "clientId": person["client_id"],
    }
    return encode_raw_object([record])


BUYING = [
    ("page_view", None),
    ("product_view", LAPTOP),
    ("add_to_cart_click", LAPTOP),
    ("checkout_start", None),
    ("checkout_complete", None),
]
BROWSING = [("page_view", None), ("product_view", LAPTOP), ("product_view", MOUSE)]


@dataclass(frozen=True)
class RawObjectPlan:
    """One raw object: when it was received and its lines, each marked as Alice's or Bob's."""

    received_at: datetime
    lines: list[tuple[str, bytes]]

    def body(self, owners=("alice", "bob")) -> bytes:
        return b"".join(line for owner, line in self.lines if owner in owners)


def the_shops_raw_objects() -> list[RawObjectPlan]:
    mixed_at = DAY_1 + timedelta(minutes=55)
    return [
        RawObjectPlan(
            DAY_1, [("alice", line) for line in tracker_visit(ALICE, "s-alice-1", DAY_1, BUYING)]
        ),
        RawObjectPlan(
            DAY_1 + timedelta(minutes=10),
            [
                ("bob", line)
                for line in tracker_visit(
                    BOB, "s-bob-1", DAY_1 + timedelta(minutes=10), BROWSING, logged_in=False
                )
            ],
        ),
        # Both in one object, with rejected lines of each.
        RawObjectPlan(
            mixed_at,
            [
                *[("bob", line) for line in tracker_visit(BOB, "s-bob-2", mixed_at, BROWSING)],
                *[
                    ("alice", line)
                    for line in warehouse_shaped_visit(
                        ALICE,
                        "s-alice-2",
                        mixed_at,
                        [("product_view", MOUSE), ("add_to_cart_click", MOUSE)],
                    )
                ],
                ("alice", contract_breaking_line(ALICE, mixed_at)),
                ("alice", b'{"cut short": "%s", "%s"\n' % tuple(map(str.encode, ALICE.values()))),
                ("bob", b'not JSON at all, from "%s"\n' % BOB["client_id"].encode()),
            ],
        ),
        RawObjectPlan(
            DAY_2,
            [
                *[("alice", line) for line in tracker_visit(ALICE, "s-alice-3", DAY_2, BROWSING)],
                *[("bob", line) for line in tracker_visit(BOB, "s-bob-3", DAY_2, BUYING)],
            ],
        ),
    ]


def put_plans(s3, bucket, plans, owners=("alice", "bob")) -> dict[str, RawObjectPlan]:
    keys = {}
    for plan in plans:
        body = plan.body(owners)
        if body:
            key = object_key(plan.received_at, uuid.uuid4().hex)
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPE)
            keys[key] = plan
    return keys


def enable_versioning(s3, bucket) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def load_scheduled(warehouse, s3, bucket):
    connection = warehouse.etl_connection()
    try:
        # The first run looks back far enough for DAY_1's first hour, and no further.
        return loader.run_scheduled(connection, s3, bucket, now=NOW, initial_lookback_hours=37)
    finally:
        connection.close()


def reload_forced(warehouse, s3, bucket):
    connection = warehouse.etl_connection()
    try:
        return loader.run_window(
            connection, s3, bucket, start=DAY_1 - timedelta(hours=1), end=NOW, force=True
        )
    finally:
        connection.close()


def every_version(s3, bucket) -> list[dict]:
    listed = s3.list_object_versions(Bucket=bucket)
    return listed.get("Versions", []) + listed.get("DeleteMarkers", [])


def read_version(s3, bucket, version) -> bytes:
    found = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    return found["Body"].read()


# --- the erasure as the playbook runs it ------------------------------------------------------


def identifiers(person: Person) -> tuple[str | None, str | None]:
    """erase_person()'s (p_user_id, p_client_id)."""
    if person.key_kind == "user_id":
        return person.identifier, None
    return None, person.identifier


def raw_hours(warehouse, person) -> list[datetime]:
    rows = warehouse.query("SELECT person_raw_hours(%s, %s)", identifiers(person))
    return [hour for (hour,) in rows]


def erase_in_warehouse(
    warehouse, person, report=None, scan_started_at=None, *, refresh=True
) -> dict:
    """erase_person() (and the refresh) in one transaction, as the playbook's last play."""
    connection = warehouse.admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT erasure_id, events_deleted, rejects_deleted, sessions_queued, raw_hours "
                "FROM erase_person(%s, %s, %s::timestamptz[], %s, %s, %s, %s, %s)",
                (
                    *identifiers(person),
                    report.hours if report else None,
                    scan_started_at,
                    report.objects_rewritten if report else None,
                    report.objects_deleted if report else None,
                    report.versions_deleted if report else None,
                    report.lines_removed if report else None,
                ),
            )
            names = [column.name for column in cursor.description]
            erased = dict(zip(names, cursor.fetchone(), strict=True))
            if refresh:
                cursor.execute("SELECT * FROM refresh_dirty_aggregates()")
        connection.commit()
    finally:
        connection.close()
    return erased


def erase(warehouse, s3, bucket, person):
    """The playbook's three steps: find the hours, rewrite the raw objects, erase the rows."""
    scan_started_at = warehouse.scalar("SELECT now()")
    report = erase_raw_objects(s3, bucket, hours_to_scan(raw_hours(warehouse, person)), person)
    return report, erase_in_warehouse(warehouse, person, report, scan_started_at)


# --- what the warehouse holds -----------------------------------------------------------------


def derived_tables(warehouse) -> list[str]:
    tables = warehouse.query(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
    )
    return [name for (name,) in tables if name not in NOT_AGGREGATES]


def rows_of(warehouse, table: str) -> list[tuple]:
    columns = [
        name
        for (name,) in warehouse.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        if name not in WRITE_TIME_COLUMNS
    ]
    # As text: psycopg2 cannot read the '-infinity' dates of visitor_days.previous_days.
    rows = warehouse.query(f"SELECT {', '.join(f'{c}::text' for c in columns)} FROM public.{table}")
    return sorted(rows, key=repr)


def warehouse_contents(warehouse) -> dict[str, list]:
    """Every event and every derived row (sessions, rollups...), and the rejected lines' texts."""
    contents = {table: rows_of(warehouse, table) for table in derived_tables(warehouse)}
    contents["clickstream_events"] = rows_of(warehouse, "clickstream_events")
    contents["etl_rejects"] = sorted(
        warehouse.query("SELECT reason, raw_text FROM etl_rejects"), key=repr
    )
    return contents


def rows_naming(warehouse, text: str) -> dict[str, int]:
    """Per table (the audit excepted), how many rows hold ``text`` anywhere."""
    tables = warehouse.query(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'erasures'"
    )
    counts = {
        table: warehouse.scalar(
            f"SELECT count(*) FROM public.{table} AS t WHERE strpos(t::text, %s) > 0", (text,)
        )
        for (table,) in tables
    }
    return {table: count for table, count in counts.items() if count}


# --- the rule: which raw lines are the person's ------------------------------------------------


def record_line(event: dict) -> bytes:
    return encode_raw_object([raw_record(event, DAY_1)]).rstrip(b"\n")


ALICE_USER = ALICE["user_id"]
RULE_CASES = [
    pytest.param(record_line(tracker_event(userId=ALICE_USER)), True, id="tracker-userId"),
    pytest.param(
        record_line({"event_name": "page_view", "user_id": ALICE_USER}),
        True,
        id="warehouse-user_id",
    ),
    pytest.param(
        record_line(tracker_event(userId=BOB["user_id"], pageUrl=f"https://x/?u={ALICE_USER}")),
        False,
        id="named-only-in-a-url",
    ),
    pytest.param(
        record_line(tracker_event(userId=BOB["user_id"], note=ALICE_USER)),
        False,
        id="a-record-is-judged-by-its-identity-field-alone",
    ),
    pytest.param(
        record_line(tracker_event(userId=BOB["user_id"], user_id=ALICE_USER)),
        False,
        id="user_id-is-no-identity-field-of-the-tracker-shape",
    ),
    pytest.param(
        record_line({"event_name": "page_view", "userId": ALICE_USER}),
        False,
        id="userId-is-no-identity-field-of-the-warehouse-shape",
    ),
    pytest.param(
        b'{"event": {"eventName": "x", "userId": "\\u0075ser-alice-5f0c"}}', True, id="escaped"
    ),
    pytest.param(
        b'{"event": {"eventName": "x", "userId": "user-alice-5f0c", "k": "\\u0000"}}',
        True,
        id="u0000-elsewhere",
    ),
    pytest.param(b'{"event": {"eventName": "x", "userId": 42}}', False, id="a-number-is-no-id"),
    pytest.param(b'not JSON, but "user-alice-5f0c" is in it', True, id="not-json-quoted"),
    pytest.param(b"not JSON, user-alice-5f0c unquoted", False, id="not-json-unquoted"),
    pytest.param(b'{"event": ["user-alice-5f0c"]}', True, id="no-event-object"),
    pytest.param(
        b'{"event": {"eventName": "x", "userId": "bob", "n": NaN, "k": "user-alice-5f0c"}}',
        True,
        id="nan-is-not-json",
    ),
    pytest.param(b'\xff\xfe "user-alice-5f0c" \x00', True, id="not-utf8"),
    pytest.param(b"[" * 50_000 + b'"user-alice-5f0c"', True, id="nested-too-deep"),
]


@pytest.mark.parametrize(("line", "belongs"), RULE_CASES)
def test_a_raw_line_is_the_persons_by_one_rule_in_python_and_in_the_warehouse(
    warehouse, line, belongs
):
    person = Person("user_id", ALICE_USER)
    # What the loader keeps as a rejected line's raw_text, and so what the warehouse's rule reads.
    stored_text = line.decode("utf-8", errors="replace").replace("\x00", "\ufffd")

    in_python = erase_lines(line + b"\n", person).lines_removed == 1
    in_warehouse = warehouse.scalar(
        "SELECT raw_line_belongs_to(%s, 'user_id', %s)", (stored_text, ALICE_USER)
    )

    assert (in_python, in_warehouse) == (belongs, belongs)


def test_an_erased_line_becomes_an_empty_line_and_the_others_keep_their_bytes():
    kept_1, erased, kept_2 = b'{"a": 1}', record_line(tracker_event(userId=ALICE_USER)), b"junk"
    body = kept_1 + b"\n" + erased + b"\n" + kept_2 + b"\n"

    result = erase_lines(body, Person("user_id", ALICE_USER))

    assert result.body == kept_1 + b"\n\n" + kept_2 + b"\n"
    assert (result.lines_removed, result.is_empty) == (1, False)


def test_an_object_of_only_the_persons_lines_is_left_empty():
    body = record_line(tracker_event(clientId=ALICE["client_id"])) + b"\n"
    result = erase_lines(body, Person("client_id", ALICE["client_id"]))
    assert (result.lines_removed, result.is_empty) == (1, True)


def test_the_hours_to_scan_are_the_given_hours_and_the_window_once_each():
    hours = [datetime(2025, 12, 1, 9, 59, tzinfo=UTC), datetime(2025, 12, 1, 7, tzinfo=UTC)]
    window = (datetime(2025, 12, 1, 8, tzinfo=UTC), datetime(2025, 12, 1, 9, 30, tzinfo=UTC))
    assert hours_to_scan(hours, *window) == [
        datetime(2025, 12, 1, hour, tzinfo=UTC) for hour in (7, 8, 9)
    ]


@pytest.mark.parametrize(("kind", "identifier"), [("email", "a@b"), ("user_id", "")])
def test_a_person_is_a_user_id_or_a_client_id_that_is_not_empty(kind, identifier):
    with pytest.raises(ValueError, match=r"a person is named by|is empty"):
        Person(kind, identifier)


# --- the raw objects ----------------------------------------------------------------------------


@pytest.fixture
def versioned_raw_bucket(aws, raw_bucket) -> str:
    enable_versioning(aws.client("s3"), raw_bucket)
    return raw_bucket


def test_a_rewrite_empties_the_persons_lines_deletes_emptied_objects_and_old_versions(
    aws, versioned_raw_bucket
):
    s3 = aws.client("s3")
    plans = the_shops_raw_objects()
    keys = put_plans(s3, versioned_raw_bucket, plans)
    person = Person("client_id", ALICE["client_id"])
    hours = sorted({plan.received_at for plan in plans})

    report = erase_raw_objects(s3, versioned_raw_bucket, hours_to_scan(hours), person)

    assert (report.objects_scanned, report.objects_rewritten, report.objects_deleted) == (4, 2, 1)
    assert report.lines_removed == ALICES_LINES
    versions = every_version(s3, versioned_raw_bucket)
    assert all(version["IsLatest"] for version in versions), "an old version survived"
    for key, plan in keys.items():
        expected = b"".join(b"\n" if owner == "alice" else line for owner, line in plan.lines)
        if not expected.strip():
            assert key not in {version["Key"] for version in versions}
            continue
        written = s3.get_object(Bucket=versioned_raw_bucket, Key=key)
        assert written["Body"].read() == expected
        assert written["ContentType"] == CONTENT_TYPE


def test_objects_without_the_person_are_not_written_again(aws, versioned_raw_bucket):
    s3 = aws.client("s3")
    keys = put_plans(s3, versioned_raw_bucket, the_shops_raw_objects(), owners=("bob",))
    before = {v["Key"]: v["VersionId"] for v in every_version(s3, versioned_raw_bucket)}

    hours = hours_to_scan([], DAY_1, DAY_2)
    report = erase_raw_objects(s3, versioned_raw_bucket, hours, Person("user_id", ALICE_USER))

    assert (report.changed, report.objects_scanned) == (False, len(keys))
    assert {v["Key"]: v["VersionId"] for v in every_version(s3, versioned_raw_bucket)} == before


def test_a_dry_run_reports_what_a_run_would_do_and_writes_nothing(aws, versioned_raw_bucket):
    s3 = aws.client("s3")
    plans = the_shops_raw_objects()
    put_plans(s3, versioned_raw_bucket, plans)
    person = Person("user_id", ALICE_USER)
    hours = hours_to_scan(plan.received_at for plan in plans)
    before = every_version(s3, versioned_raw_bucket)

    planned = erase_raw_objects(s3, versioned_raw_bucket, hours, person, dry_run=True)

    assert every_version(s3, versioned_raw_bucket) == before
    done = erase_raw_objects(s3, versioned_raw_bucket, hours, person)
    assert planned.as_dict() == done.as_dict()


def test_an_old_version_an_interrupted_run_left_is_deleted_by_the_next_run(
    aws, versioned_raw_bucket
):
    s3 = aws.client("s3")
    alice_line = record_line(tracker_event(userId=ALICE_USER)) + b"\n"
    bob_line = record_line(tracker_event(userId=BOB["user_id"])) + b"\n"
    key = object_key(DAY_1, "interrupted")
    s3.put_object(Bucket=versioned_raw_bucket, Key=key, Body=alice_line + bob_line)
    # The rewrite was written, then the run stopped before deleting the old version.
    s3.put_object(Bucket=versioned_raw_bucket, Key=key, Body=b"\n" + bob_line)

    report = erase_raw_objects(s3, versioned_raw_bucket, [DAY_1], Person("user_id", ALICE_USER))

    assert (report.lines_removed, report.versions_deleted) == (0, 1)
    versions = every_version(s3, versioned_raw_bucket)
    assert [read_version(s3, versioned_raw_bucket, v) for v in versions] == [b"\n" + bob_line]


def test_an_expired_objects_old_version_that_holds_the_person_is_deleted(aws, versioned_raw_bucket):
    s3 = aws.client("s3")
    key = object_key(DAY_1, "expired")
    s3.put_object(
        Bucket=versioned_raw_bucket, Key=key, Body=record_line(tracker_event(userId=ALICE_USER))
    )
    s3.delete_object(Bucket=versioned_raw_bucket, Key=key)  # a delete marker, as an expiry leaves

    report = erase_raw_objects(s3, versioned_raw_bucket, [DAY_1], Person("user_id", ALICE_USER))

    assert report.versions_deleted == 1
    assert [v.get("Size") for v in every_version(s3, versioned_raw_bucket)] == [None]  # the marker


def test_an_unversioned_bucket_is_rewritten_in_place(aws, raw_bucket):
    s3 = aws.client("s3")
    plans = the_shops_raw_objects()
    keys = put_plans(s3, raw_bucket, plans)

    hours = hours_to_scan(plan.received_at for plan in plans)
    report = erase_raw_objects(s3, raw_bucket, hours, Person("user_id", ALICE_USER))

    assert (report.objects_rewritten, report.objects_deleted, report.versions_deleted) == (2, 1, 0)
    remaining = {item["Key"] for item in s3.list_objects_v2(Bucket=raw_bucket)["Contents"]}
    assert remaining == {key for key, plan in keys.items() if plan.body(("bob",))}


# --- the warehouse and the raw bucket together ------------------------------------------------


@pytest.fixture
def reference_warehouse(postgres, migrated_template) -> Iterator[Warehouse]:
    """A second migrated warehouse, to load only Bob's events into."""
    database = f"clickstream_dw_reference_{uuid.uuid4().hex[:12]}"
    postgres.execute_autocommit(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE_DATABASE}")
    yield Warehouse(postgres, database, migrated_template.etl, migrated_template.reader)
    postgres.execute_autocommit(f"DROP DATABASE {database} WITH (FORCE)")


@dataclass
class Erased:
    warehouse: Warehouse
    s3: object
    bucket: str
    person: Person
    keys: dict[str, RawObjectPlan]
    report: erasure.RawErasureReport
    erased: dict
    bobs_warehouse: Warehouse


@pytest.fixture(params=KEY_KINDS)
def alice_erased(request, warehouse, reference_warehouse, aws, versioned_raw_bucket) -> Erased:
    """Alice's and Bob's events loaded by scheduled ETL runs, then Alice erased (by her user_id
    or her client_id); beside it, a warehouse that only ever loaded Bob's events."""
    s3 = aws.client("s3")
    plans = the_shops_raw_objects()
    keys = put_plans(s3, versioned_raw_bucket, plans)
    assert load_scheduled(warehouse, s3, versioned_raw_bucket).status == "succeeded"
    s3.create_bucket(
        Bucket=REFERENCE_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    put_plans(s3, REFERENCE_BUCKET, plans, owners=("bob",))
    assert load_scheduled(reference_warehouse, s3, REFERENCE_BUCKET).status == "succeeded"

    person = Person(request.param, ALICE[request.param])
    report, erased = erase(warehouse, s3, versioned_raw_bucket, person)
    return Erased(
        warehouse, s3, versioned_raw_bucket, person, keys, report, erased, reference_warehouse
    )


def test_the_warehouse_ends_as_if_only_the_others_events_had_been_loaded(alice_erased):
    after = warehouse_contents(alice_erased.warehouse)
    assert {"sessions", "session_products", "session_journeys", "visitor_days"} <= set(after)
    assert after == warehouse_contents(alice_erased.bobs_warehouse)
    erased = alice_erased.erased
    assert (erased["events_deleted"], erased["rejects_deleted"]) == (
        ALICES_EVENTS,
        ALICES_REJECTED_LINES,
    )


def test_no_row_of_any_table_names_the_person(alice_erased):
    for identifier in ALICE.values():
        assert rows_naming(alice_erased.warehouse, identifier) == {}
    assert rows_naming(alice_erased.warehouse, BOB["client_id"])  # the search does find names


def test_the_others_lines_keep_their_bytes_and_no_version_holds_the_person(alice_erased):
    s3, bucket = alice_erased.s3, alice_erased.bucket
    versions = every_version(s3, bucket)
    for version in versions:
        body = read_version(s3, bucket, version)
        assert not any(identifier.encode() in body for identifier in ALICE.values())
    current = {v["Key"]: read_version(s3, bucket, v) for v in versions}
    for key, plan in alice_erased.keys.items():
        expected = b"".join(b"\n" if owner == "alice" else line for owner, line in plan.lines)
        assert current.get(key, b"") == (expected if expected.strip() else b"")


def test_one_audit_row_records_the_erasure_without_the_identifier(alice_erased):
    rows = alice_erased.warehouse.query(
        "SELECT erasure_id, key_kind, key_sha256, events_deleted, rejects_deleted, "
        "raw_objects_rewritten, raw_objects_deleted, raw_versions_deleted, raw_lines_removed, "
        "run_by, status, erasures::text FROM erasures"
    )
    [(erasure_id, kind, digest, events, rejects, *raw_counts, run_by, status, row_text)] = rows
    person, report = alice_erased.person, alice_erased.report
    assert str(erasure_id) == str(alice_erased.erased["erasure_id"])
    identifier_sha256 = hashlib.sha256(person.identifier.encode()).hexdigest()
    assert (kind, digest) == (person.key_kind, identifier_sha256)
    assert (events, rejects) == (ALICES_EVENTS, ALICES_REJECTED_LINES)
    assert raw_counts == [2, 1, report.versions_deleted, ALICES_LINES]
    assert (run_by, status) == ("postgres", "completed")
    assert not any(identifier in row_text for identifier in ALICE.values())


def test_a_second_erasure_finds_nothing_and_changes_nothing(alice_erased):
    s3, bucket = alice_erased.s3, alice_erased.bucket
    versions_before = every_version(s3, bucket)
    contents_before = warehouse_contents(alice_erased.warehouse)

    report, erased = erase(alice_erased.warehouse, s3, bucket, alice_erased.person)

    assert (report.hours, report.changed) == ([], False)
    assert erased == {
        "erasure_id": None,
        "events_deleted": 0,
        "rejects_deleted": 0,
        "sessions_queued": 0,
        "raw_hours": [],
    }
    assert every_version(s3, bucket) == versions_before
    assert warehouse_contents(alice_erased.warehouse) == contents_before
    assert alice_erased.warehouse.scalar("SELECT count(*) FROM erasures") == 1


def test_a_forced_reload_does_not_bring_the_person_back(alice_erased):
    report = reload_forced(alice_erased.warehouse, alice_erased.s3, alice_erased.bucket)

    assert report.status == "succeeded"
    assert report.objects == len(alice_erased.keys) - 1  # the emptied object is gone
    for identifier in ALICE.values():
        assert rows_naming(alice_erased.warehouse, identifier) == {}
    assert warehouse_contents(alice_erased.warehouse) == warehouse_contents(
        alice_erased.bobs_warehouse
    )


# --- the warehouse's functions alone ------------------------------------------------------------


@pytest.fixture
def alice_and_bob_loaded(warehouse, aws, raw_bucket) -> Warehouse:
    s3 = aws.client("s3")
    put_plans(s3, raw_bucket, the_shops_raw_objects())
    assert load_scheduled(warehouse, s3, raw_bucket).status == "succeeded"
    return warehouse


def test_the_raw_hours_are_those_of_the_persons_events_and_rejected_lines(alice_and_bob_loaded):
    hours = raw_hours(alice_and_bob_loaded, Person("client_id", ALICE["client_id"]))
    assert hours == [
        datetime(2025, 12, 1, 9, tzinfo=UTC),
        datetime(2025, 12, 1, 10, tzinfo=UTC),
        datetime(2025, 12, 2, 8, tzinfo=UTC),
    ]


def test_the_next_etl_run_refreshes_what_an_erasure_left_to_refresh(
    alice_and_bob_loaded, aws, raw_bucket
):
    warehouse = alice_and_bob_loaded
    erased = erase_in_warehouse(warehouse, Person("user_id", ALICE_USER), refresh=False)
    assert warehouse.scalar("SELECT count(*) FROM sessions WHERE session_id LIKE 's-alice-%%'")

    # The hourly run, as the ETL writer, takes the queued sessions and the dirty hours.
    load_scheduled(warehouse, aws.client("s3"), raw_bucket)

    assert erased["events_deleted"] == ALICES_EVENTS
    assert warehouse.scalar("SELECT count(*) FROM etl_erased_sessions") == 0
    for identifier in ALICE.values():
        assert set(rows_naming(warehouse, identifier)) <= {"etl_rejects"}  # raw side not run
    assert warehouse.query("SELECT status FROM erasures") == [("warehouse_only",)]


def test_an_erasure_that_would_leave_unrewritten_hours_is_refused_whole(alice_and_bob_loaded):
    warehouse = alice_and_bob_loaded
    report = erasure.RawErasureReport(hours=[datetime(2025, 12, 1, 9, tzinfo=UTC).isoformat()])

    with pytest.raises(psycopg2.errors.RaiseException, match=r"not rewritten .*2025-12-02 08"):
        erase_in_warehouse(warehouse, Person("client_id", ALICE["client_id"]), report)

    events_left = warehouse.scalar(
        "SELECT count(*) FROM clickstream_events WHERE client_id = %s", (ALICE["client_id"],)
    )
    assert events_left == ALICES_EVENTS


def test_an_erasure_refuses_events_loaded_while_the_raw_objects_were_rewritten(
    warehouse, aws, raw_bucket
):
    s3 = aws.client("s3")
    person = Person("user_id", ALICE_USER)
    scan_started_at = warehouse.scalar("SELECT now()")
    report = erase_raw_objects(s3, raw_bucket, [DAY_1], person)
    # Alice, still shopping, sends an event that lands after the listing, and it loads.
    put_plans(s3, raw_bucket, the_shops_raw_objects()[:1])
    load_scheduled(warehouse, s3, raw_bucket)

    with pytest.raises(psycopg2.errors.RaiseException, match="loaded while"):
        erase_in_warehouse(warehouse, person, report, scan_started_at)

    assert raw_hours(warehouse, person) == [datetime(2025, 12, 1, 9, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("user_id", "client_id"), [(None, None), (ALICE_USER, ALICE["client_id"]), ("", None)]
)
def test_erase_person_wants_exactly_one_identifier(warehouse, user_id, client_id):
    with pytest.raises(psycopg2.errors.RaiseException, match=r"one person|is empty"):
        warehouse.query("SELECT * FROM erase_person(%s, %s)", (user_id, client_id))


def test_an_erasure_waits_for_a_running_load(alice_and_bob_loaded):
    warehouse = alice_and_bob_loaded
    load_in_progress = warehouse.etl_connection()
    eraser = warehouse.admin_connection()
    try:
        with load_in_progress.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (loader.RUN_LOCK_KEY,))
            assert cursor.fetchone()[0]
        with eraser.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
            with pytest.raises(errors.LockNotAvailable):
                cursor.execute("SELECT * FROM erase_person(%s, NULL)", (ALICE_USER,))
    finally:
        load_in_progress.close()
        eraser.close()


@pytest.mark.parametrize("login", ["etl_connection", "reader_connection"])
@pytest.mark.parametrize(
    "statement",
    ["SELECT * FROM erase_person('someone', NULL)", "SELECT person_raw_hours('someone', NULL)"],
)
def test_only_the_database_owner_may_erase(warehouse, login, statement):
    connection = getattr(warehouse, login)()
    try:
        with pytest.raises(errors.InsufficientPrivilege), connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


# --- through the playbook -----------------------------------------------------------------------


@pytest.fixture
def erase_playbook(aws, tmp_path):
    """Runs ansible-playbook playbooks/erase_user.yml against moto and the test PostgreSQL."""

    def run(warehouse, bucket, *arguments, **variables):
        defaults = {
            "erase_hosts": "localhost",
            "erase_login_host": "127.0.0.1",
            "erase_login_user": "postgres",
            "erase_login_password": warehouse.cluster.superuser_password,
            "warehouse_port": warehouse.cluster.port,
            "warehouse_database": warehouse.database,
            "storage_raw_bucket_name": bucket,
            "aws_region": REGION,
            "ansible_python_interpreter": sys.executable,
        }
        return run_playbook(
            "playbooks/erase_user.yml", "-i", "inventories/local",
            *extra_vars({**defaults, **variables}), *arguments,
            environment=aws_environment(aws.endpoint_url), temp_dir=tmp_path,
        )  # fmt: skip

    return run


def result_of(playbook_run, task: str) -> dict:
    [result] = [r.result for r in playbook_run.task_results if r.task == task]
    return result


def test_the_playbook_erases_a_person_end_to_end_and_a_second_run_changes_nothing(
    warehouse, aws, versioned_raw_bucket, erase_playbook
):
    s3 = aws.client("s3")
    plans = the_shops_raw_objects()
    put_plans(s3, versioned_raw_bucket, plans)
    # A retried copy of one of Alice's events, received the next evening: the warehouse skipped
    # it as a duplicate, so only the window finds its hour.
    retried = next(line for owner, line in plans[0].lines if owner == "alice")
    retried_key = object_key(DAY_2 + timedelta(hours=11), "retried")
    s3.put_object(Bucket=versioned_raw_bucket, Key=retried_key, Body=retried)
    assert load_scheduled(warehouse, s3, versioned_raw_bucket).duplicates_skipped == 1
    window = {"erase_start": "2025-12-01T00", "erase_end": "2025-12-02T23"}
    contents_before = warehouse_contents(warehouse)
    versions_before = every_version(s3, versioned_raw_bucket)

    checked = erase_playbook(
        warehouse, versioned_raw_bucket, "--check", client_id=ALICE["client_id"], **window
    )
    assert checked.returncode == 0, checked.explain()
    planned = result_of(
        checked, "Rewrite the raw objects of those hours without the person's lines"
    )
    assert (planned["changed"], planned["lines_removed"]) == (True, ALICES_LINES + 1)
    assert warehouse_contents(warehouse) == contents_before
    assert every_version(s3, versioned_raw_bucket) == versions_before

    first = erase_playbook(warehouse, versioned_raw_bucket, client_id=ALICE["client_id"], **window)
    second = erase_playbook(warehouse, versioned_raw_bucket, client_id=ALICE["client_id"], **window)

    assert first.returncode == 0, first.explain()
    report = result_of(first, "Report what the erasure did")["msg"]
    assert {name: value for name, value in report.items() if name != "erasure_id"} == {
        "events_deleted": ALICES_EVENTS,
        "rejects_deleted": ALICES_REJECTED_LINES,
        "sessions_refreshed": 3 + 3,  # Alice's, and Bob's of the same hours
        "raw_objects_rewritten": 2,
        "raw_objects_deleted": 2,  # her own object, and the retried copy's
        "raw_versions_deleted": 2,  # the rewritten objects' old versions
        "raw_lines_removed": ALICES_LINES + 1,
    }
    assert rows_naming(warehouse, ALICE["client_id"]) == {}
    assert not any(
        ALICE["client_id"].encode() in read_version(s3, versioned_raw_bucket, version)
        for version in every_version(s3, versioned_raw_bucket)
    )
    assert first.changed_by_play() != dict.fromkeys(first.play_names, 0)
    assert second.returncode == 0, second.explain()
    assert second.changed_by_play() == dict.fromkeys(second.play_names, 0)
    assert warehouse.scalar("SELECT count(*) FROM erasures") == 1


def test_the_playbook_never_shows_the_identifier(
    warehouse, aws, versioned_raw_bucket, erase_playbook
):
    put_plans(aws.client("s3"), versioned_raw_bucket, the_shops_raw_objects())
    load_scheduled(warehouse, aws.client("s3"), versioned_raw_bucket)

    run = erase_playbook(warehouse, versioned_raw_bucket, user_id=ALICE_USER)

    assert run.returncode == 0, run.explain()
    assert ALICE_USER not in json.dumps(run.report) + run.stderr


def test_when_the_raw_side_fails_the_warehouse_forgets_nothing(
    warehouse, aws, raw_bucket, erase_playbook
):
    put_plans(aws.client("s3"), raw_bucket, the_shops_raw_objects())
    load_scheduled(warehouse, aws.client("s3"), raw_bucket)

    run = erase_playbook(warehouse, "no-such-bucket", user_id=ALICE_USER)

    assert run.returncode != 0
    assert "Erase the person from the warehouse" not in run.play_names
    assert rows_naming(warehouse, ALICE_USER)
    assert warehouse.scalar("SELECT count(*) FROM erasures") == 0


@pytest.mark.parametrize(
    "people", [{}, {"user_id": ALICE_USER, "client_id": ALICE["client_id"]}, {"user_id": ""}]
)
def test_the_playbook_wants_exactly_one_person(warehouse, raw_bucket, erase_playbook, people):
    run = erase_playbook(warehouse, raw_bucket, **people)
    assert run.returncode != 0
    refused = result_of(run, "Require exactly one of user_id and client_id")
    assert "Name one person" in refused["msg"]

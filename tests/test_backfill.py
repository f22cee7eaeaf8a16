"""Backfills: the clickstream_backfill module, alone and through playbooks/backfill.yml.

The integration tests run the real playbook with ansible-playbook against moto S3 and a real
PostgreSQL, in the module's direct mode (the same load code as Lambda ETL). Its lambda mode
cannot run here: moto stores Lambda code but runs it only in Docker, which these machines lack.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clickstream import loader
from plugins.module_utils.clickstream_backfill import (
    BackfillError,
    chunks,
    invocation_result,
    parse_hour,
    totals,
    window_hours,
)
from tests.fixtures.ansible import extra_vars, run_playbook
from tests.fixtures.aws import REGION, aws_environment
from tests.raw_events import put_raw_bytes, put_raw_object, raw_record, tracker_event

REPOSITORY = Path(__file__).resolve().parents[1]
WEEK_START = datetime(2025, 12, 1, tzinfo=UTC)
WEEK_HOURS = 7 * 24
EVENTS_PER_OBJECT = 5
PASSWORD_PARAMETER = "/test/warehouse/etl-writer-password"


# --- the pure logic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hour"),
    [
        ("2025-12-01T07", datetime(2025, 12, 1, 7, tzinfo=UTC)),
        ("2025-12-01T07:45:10", datetime(2025, 12, 1, 7, tzinfo=UTC)),
        ("2025-12-01T14:00+07:00", datetime(2025, 12, 1, 7, tzinfo=UTC)),
        ("2025-12-01T07:00Z", datetime(2025, 12, 1, 7, tzinfo=UTC)),
    ],
)
def test_window_edges_are_read_as_utc_hours(text, hour):
    assert parse_hour(text, "start") == hour


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("", "2025-12-01T00", "start is empty"),
        ("yesterday", "2025-12-01T00", "is not an ISO-8601 time"),
        ("2025-12-02T00", "2025-12-01T00", "the window is reversed"),
        ("2025-01-01T00", "2025-12-31T23", "more than max_window_hours=744"),
    ],
)
def test_a_bad_window_is_refused_with_the_reason(start, end, message):
    with pytest.raises(BackfillError, match=message):
        window_hours(parse_hour(start, "start"), parse_hour(end, "end"), max_hours=744)


def test_a_window_splits_into_ordered_chunks_of_at_most_chunk_hours():
    hours = window_hours(WEEK_START, WEEK_START + timedelta(hours=4), max_hours=744)
    assert chunks(hours, 2) == [
        (hours[0], hours[1]),
        (hours[2], hours[3]),
        (hours[4], hours[4]),
    ]


def test_a_failed_invocation_raises_the_functions_error():
    payload = json.dumps({"errorType": "WarehouseUnavailable", "errorMessage": "no route"})
    with pytest.raises(BackfillError, match="WarehouseUnavailable: no route"):
        invocation_result("Unhandled", payload.encode())


def test_an_invocation_answer_that_is_not_a_report_is_an_error():
    with pytest.raises(BackfillError, match="unexpected"):
        invocation_result(None, b"null")


def test_a_successful_invocation_returns_the_report():
    assert invocation_result(None, b'{"status": "succeeded"}') == {"status": "succeeded"}


def test_totals_add_up_every_chunk():
    results = [
        {"objects": 2, "events_loaded": 10, "events_updated": 0, "duplicates_skipped": 1,
         "rejected_lines": 0, "missing_objects": 0},
        {"objects": 1, "events_loaded": 4, "events_updated": 3, "duplicates_skipped": 0,
         "rejected_lines": 2, "missing_objects": 1},
    ]  # fmt: skip
    assert totals(results) == {
        "objects": 3,
        "events_loaded": 14,
        "events_updated": 3,
        "duplicates_skipped": 1,
        "rejected_lines": 2,
        "missing_objects": 1,
        "chunks": 2,
    }


# --- through the playbook ---------------------------------------------------------------------


@pytest.fixture
def week_of_raw_objects(warehouse, aws, raw_bucket):
    """One object of five events per hour of a week; the first two days already loaded."""
    s3 = aws.client("s3")
    for hour in range(WEEK_HOURS):
        received = WEEK_START + timedelta(hours=hour, minutes=10)
        records = [
            raw_record(tracker_event(sessionId=f"s{hour}"), received + timedelta(seconds=second))
            for second in range(EVENTS_PER_OBJECT)
        ]
        put_raw_object(s3, raw_bucket, records, received)
    connection = warehouse.etl_connection()
    try:
        loader.run_window(
            connection, s3, raw_bucket, start=WEEK_START, end=WEEK_START + timedelta(hours=47)
        )
    finally:
        connection.close()
    aws.client("ssm").put_parameter(
        Name=PASSWORD_PARAMETER, Value=warehouse.etl_password, Type="SecureString"
    )
    return warehouse


@pytest.fixture
def backfill(aws, tmp_path):
    """Runs ansible-playbook playbooks/backfill.yml in direct mode; returns the module's result."""

    def run(warehouse, *, start, end, check=False, **extra) -> dict:
        variables = {
            "backfill_start": start,
            "backfill_end": end,
            "backfill_mode": "direct",
            "backfill_hosts": "localhost",
            "backfill_chunk_hours": 24,
            "backfill_library_path": str(REPOSITORY / "lambda_src"),
            "backfill_dwh_host": "127.0.0.1",
            "warehouse_port": warehouse.cluster.port,
            "warehouse_database": warehouse.database,
            "secrets_etl_writer_password_parameter": PASSWORD_PARAMETER,
            "aws_region": REGION,
            "ansible_python_interpreter": sys.executable,
            **extra,
        }
        playbook_run = run_playbook(
            "playbooks/backfill.yml",
            "-i", "inventories/local", *extra_vars(variables), *(["--check"] if check else []),
            environment=aws_environment(aws.endpoint_url),
            temp_dir=tmp_path,
        )  # fmt: skip
        [result] = [
            task.result
            for task in playbook_run.task_results
            if task.task == "Backfill the window" and task.host == "localhost"
        ]
        return result

    return run


def loaded_events(warehouse) -> int:
    return warehouse.scalar("SELECT count(*) FROM clickstream_events")


def test_check_mode_reports_exactly_the_unloaded_objects_and_changes_nothing(
    week_of_raw_objects, backfill
):
    result = backfill(week_of_raw_objects, start="2025-12-01T00", end="2025-12-07T23", check=True)
    assert result["changed"] is True
    hours = result["hours"]
    assert len(hours) == WEEK_HOURS
    assert [h["to_load"] for h in hours] == [0] * 48 + [1] * (WEEK_HOURS - 48)
    assert result["totals"] == {
        "hours": WEEK_HOURS,
        "objects": WEEK_HOURS,
        "loaded": 48,
        "to_load": 120,
    }
    assert loaded_events(week_of_raw_objects) == 48 * EVENTS_PER_OBJECT


def test_a_backfill_loads_exactly_the_missing_events_and_a_second_run_changes_nothing(
    week_of_raw_objects, backfill
):
    first = backfill(week_of_raw_objects, start="2025-12-01T00", end="2025-12-07T23")
    second = backfill(week_of_raw_objects, start="2025-12-01T00", end="2025-12-07T23")

    assert first["changed"] is True
    assert first["totals"]["objects"] == 120
    assert first["totals"]["events_loaded"] == 120 * EVENTS_PER_OBJECT
    assert [(r["start"], r["end"]) for r in first["results"]][:2] == [
        ("2025-12-01T00", "2025-12-01T23"),
        ("2025-12-02T00", "2025-12-02T23"),
    ]
    assert second["changed"] is False
    assert second["totals"]["objects"] == 0
    assert loaded_events(week_of_raw_objects) == WEEK_HOURS * EVENTS_PER_OBJECT


def test_per_hour_chunks_report_each_hour(week_of_raw_objects, backfill):
    result = backfill(
        week_of_raw_objects, start="2025-12-03T00", end="2025-12-03T05", backfill_chunk_hours=1
    )
    assert [(r["start"], r["objects"], r["events_loaded"]) for r in result["results"]] == [
        (f"2025-12-03T{hour:02d}", 1, EVENTS_PER_OBJECT) for hour in range(6)
    ]


def test_force_reloads_without_changing_the_row_count(week_of_raw_objects, backfill):
    result = backfill(
        week_of_raw_objects, start="2025-12-01T00", end="2025-12-01T23", backfill_force=True
    )
    assert result["changed"] is True
    assert result["totals"]["objects"] == 24
    assert result["totals"]["duplicates_skipped"] == 24 * EVENTS_PER_OBJECT
    assert loaded_events(week_of_raw_objects) == 48 * EVENTS_PER_OBJECT


def test_a_malformed_object_is_reported_and_the_rest_of_the_window_loads(
    week_of_raw_objects, aws, raw_bucket, backfill
):
    put_raw_bytes(
        aws.client("s3"),
        raw_bucket,
        b"{broken\nnot json either\n",
        WEEK_START + timedelta(hours=60),
    )
    result = backfill(week_of_raw_objects, start="2025-12-03T00", end="2025-12-03T23")
    assert result["totals"]["objects"] == 25
    assert result["totals"]["rejected_lines"] == 2
    assert result["totals"]["events_loaded"] == 24 * EVENTS_PER_OBJECT
    assert week_of_raw_objects.scalar("SELECT count(*) FROM etl_rejects") == 2


def test_a_window_larger_than_the_maximum_is_refused(week_of_raw_objects, backfill):
    result = backfill(week_of_raw_objects, start="2025-12-01T00", end="2025-12-07T23",
        backfill_max_window_hours=24,
    )  # fmt: skip
    assert result["failed"] is True
    assert "more than max_window_hours=24" in result["msg"]


def test_a_database_that_stops_mid_window_names_the_hour_to_resume_from(
    week_of_raw_objects, postgres, backfill
):
    warehouse = week_of_raw_objects

    run_over = threading.Event()
    stopped = threading.Event()

    def stop_the_database_once_day_four_is_loaded():
        while not run_over.wait(0.05):
            if warehouse.scalar(
                "SELECT count(*) FROM etl_loaded_objects WHERE partition_hour >= '2025-12-04'"
            ):
                postgres.stop()
                stopped.set()
                return

    stopper = threading.Thread(target=stop_the_database_once_day_four_is_loaded)
    stopper.start()
    try:
        failed = backfill(
            warehouse, start="2025-12-03T00", end="2025-12-07T23", backfill_chunk_hours=1
        )
    finally:
        run_over.set()
        stopper.join()
        if stopped.is_set():
            postgres.start_server()

    assert stopped.is_set(), "the backfill ended before the database could be stopped"
    assert failed["failed"] is True
    resume_from = failed["resume_from"]
    assert "2025-12-04T00" <= resume_from <= "2025-12-07T23"
    assert f"run again with start={resume_from}" in failed["msg"]
    resume_hour = parse_hour(resume_from, "resume_from")
    hours_before = int((resume_hour - datetime(2025, 12, 3, tzinfo=UTC)) / timedelta(hours=1))
    # Every hour before resume_from is loaded. The resume_from hour itself is loaded whole or not
    # at all: the database may stop after its load committed, during the aggregate refresh that
    # follows (its dirty-hour marks committed with it, so the next run refreshes it).
    assert loaded_events(warehouse) in {
        (48 + hours_before) * EVENTS_PER_OBJECT,
        (48 + hours_before + 1) * EVENTS_PER_OBJECT,
    }

    resumed = backfill(warehouse, start=resume_from, end="2025-12-07T23", backfill_chunk_hours=24)

    assert not resumed.get("failed"), resumed.get("msg")
    assert resumed["totals"]["duplicates_skipped"] == 0
    assert loaded_events(warehouse) == WEEK_HOURS * EVENTS_PER_OBJECT


def test_the_refresh_playbook_recomputes_the_rollups_of_a_range(week_of_raw_objects, tmp_path):
    warehouse = week_of_raw_objects
    warehouse.query("UPDATE rollup_funnel_daily SET sessions = 999 RETURNING 1")
    variables = {
        "refresh_start": "2025-12-01T00",
        "refresh_end": "2025-12-01T23",
        "refresh_hosts": "localhost",
        "refresh_login_host": "127.0.0.1",
        "refresh_login_user": "clickstream_etl",
        "refresh_login_password": warehouse.etl_password,
        "warehouse_port": warehouse.cluster.port,
        "warehouse_database": warehouse.database,
        "ansible_python_interpreter": sys.executable,
    }
    playbook_run = run_playbook(
        "playbooks/refresh_rollups.yml", "-i", "inventories/local", *extra_vars(variables),
        environment={}, temp_dir=tmp_path,
    )  # fmt: skip
    assert playbook_run.returncode == 0, playbook_run.explain()
    assert warehouse.query("SELECT day::text, sessions FROM rollup_funnel_daily ORDER BY day") == [
        ("2025-12-01", 24),
        ("2025-12-02", 999),
    ]

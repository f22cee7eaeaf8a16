"""Lambda ETL's handler: invocations, configuration, the SSM password, failures, its log lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from clickstream.warehouse import ConfigurationError, WarehouseUnavailable
from etl import handler as etl_handler
from tests.fixtures.processes import free_loopback_port
from tests.raw_events import put_raw_object, raw_record, tracker_event

HOUR = datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
SCHEDULED_EVENT = {
    "version": "0",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "time": "2025-12-01T11:00:00Z",
    "resources": ["arn:aws:events:ap-southeast-1:123456789012:rule/clickstream-local-etl-hourly"],
    "detail": {},
}
WINDOW_EVENT = {"start": "2025-12-01T10", "end": "2025-12-01T10", "force": False}


def json_log_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def put_events(aws, bucket, count=3):
    records = [raw_record(tracker_event(), HOUR + timedelta(seconds=i)) for i in range(count)]
    put_raw_object(aws.client("s3"), bucket, records, HOUR)


def test_a_window_invocation_loads_its_hours_and_returns_the_counts(
    etl_environment, aws, raw_bucket
):
    put_events(aws, raw_bucket)
    result = etl_handler.handler(WINDOW_EVENT, None)
    assert (result["status"], result["trigger"], result["objects"], result["events_loaded"]) == (
        "succeeded",
        "window",
        1,
        3,
    )


def test_a_scheduled_event_is_a_scheduled_run(etl_environment, aws, raw_bucket, monkeypatch):
    monkeypatch.setenv("ETL_INITIAL_LOOKBACK_HOURS", "1")
    result = etl_handler.handler(SCHEDULED_EVENT, None)
    assert (result["status"], result["trigger"], result["hours_listed"]) == (
        "succeeded",
        "schedule",
        2,
    )


def test_the_run_logs_its_report_as_one_json_line_with_embedded_metrics(
    etl_environment, aws, raw_bucket, capsys
):
    put_events(aws, raw_bucket, count=2)
    etl_handler.handler(WINDOW_EVENT, None)
    [line] = [
        line
        for line in json_log_lines(capsys.readouterr().out)
        if line["message"] == "ETL run finished"
    ]
    assert line["status"] == "succeeded"
    assert (line["EventsLoaded"], line["ObjectsLoaded"], line["RejectedLines"]) == (2, 1, 0)
    metric_names = {m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {
        "EventsLoaded",
        "RejectedLines",
        "IsolatedLines",
        "AbandonedRuns",
        "LagSeconds",
        "RunFailed",
    } <= metric_names


def test_a_long_run_logs_each_hour_as_it_is_loaded_before_its_report(
    etl_environment, aws, raw_bucket, capsys
):
    s3 = aws.client("s3")
    for hours, count in ((0, 3), (2, 1)):
        received = HOUR + timedelta(hours=hours)
        records = [
            raw_record(tracker_event(), received + timedelta(seconds=i)) for i in range(count)
        ]
        put_raw_object(s3, raw_bucket, records, received)
    result = etl_handler.handler({"start": "2025-12-01T10", "end": "2025-12-01T12"}, None)

    lines = json_log_lines(capsys.readouterr().out)
    assert [line["message"] for line in lines] == [
        "ETL hour loaded",
        "ETL hour loaded",
        "ETL run finished",
    ]
    assert [
        (line["hour"], line["objects"], line["events_loaded"], line["objects_remaining"])
        for line in lines[:2]
    ] == [
        ("2025-12-01T10:00:00+00:00", 1, 3, 1),
        ("2025-12-01T12:00:00+00:00", 1, 1, 0),
    ]
    assert {line["run_id"] for line in lines} == {result["run_id"]}
    assert all(line["level"] == "INFO" and "_aws" not in line for line in lines[:2])


def test_the_password_can_come_from_an_ssm_securestring(
    etl_environment, aws, raw_bucket, monkeypatch, capsys
):
    aws.client("ssm").put_parameter(
        Name="/clickstream/dwh/etl_password",
        Value=etl_environment.etl_password,
        Type="SecureString",
    )
    monkeypatch.delenv("DWH_PASSWORD")
    monkeypatch.setenv("DWH_PASSWORD_PARAM", "/clickstream/dwh/etl_password")
    put_events(aws, raw_bucket)
    assert etl_handler.handler(WINDOW_EVENT, None)["events_loaded"] == 3
    assert etl_environment.etl_password not in capsys.readouterr().out


def test_a_warehouse_that_is_down_gives_a_clear_error_and_the_next_run_catches_up(
    etl_environment, aws, raw_bucket, monkeypatch, capsys
):
    put_events(aws, raw_bucket)
    real_port = etl_environment.cluster.port
    monkeypatch.setenv("DWH_PORT", str(free_loopback_port()))  # nothing listens there
    with pytest.raises(
        WarehouseUnavailable, match=r"cannot connect to the warehouse clickstream_etl@127\.0\.0\.1"
    ):
        etl_handler.handler(WINDOW_EVENT, None)
    [failure] = json_log_lines(capsys.readouterr().out)
    assert (failure["level"], failure["RunFailed"]) == ("ERROR", 1)
    assert etl_environment.etl_password not in json.dumps(failure)

    monkeypatch.setenv("DWH_PORT", str(real_port))
    assert etl_handler.handler(WINDOW_EVENT, None)["events_loaded"] == 3


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"start": "2025-12-01T10"}, "needs both 'start' and 'end'"),
        ({"start": "yesterday", "end": "2025-12-01T10"}, "'start' is not ISO-8601"),
        ({"start": "2025-12-02T00", "end": "2025-12-01T00"}, "is before 'start'"),
        ({**WINDOW_EVENT, "force": "yes"}, "'force' must be true or false"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_a_malformed_invocation_is_refused_with_the_reason(event, message):
    with pytest.raises(ValueError, match=message):
        etl_handler.parse_invocation(event)


def test_naive_and_offset_times_of_a_window_are_read_as_utc():
    request = etl_handler.parse_invocation(
        {"start": "2025-12-01T10:30:00", "end": "2025-12-01T19:00:00+07:00", "force": True}
    )
    assert (request.start, request.end, request.force) == (
        datetime(2025, 12, 1, 10, 30, tzinfo=UTC),
        datetime(2025, 12, 1, 12, 0, tzinfo=UTC),
        True,
    )


@pytest.mark.parametrize("missing", ["RAW_BUCKET", "DWH_HOST", "DWH_USER"])
def test_missing_configuration_is_named(etl_environment, monkeypatch, missing):
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigurationError, match=missing):
        etl_handler.handler({}, None)


def test_without_any_password_setting_the_error_says_which_to_set(etl_environment, monkeypatch):
    monkeypatch.delenv("DWH_PASSWORD")
    with pytest.raises(ConfigurationError, match="DWH_PASSWORD_PARAM"):
        etl_handler.handler({}, None)


def test_a_dry_run_window_reports_the_plan_and_loads_nothing(etl_environment, aws, raw_bucket):
    put_events(aws, raw_bucket)
    result = etl_handler.handler({**WINDOW_EVENT, "dry_run": True}, None)
    assert result == {
        "dry_run": True,
        "forced": False,
        "hours": [{"hour": HOUR.isoformat(), "objects": 1, "loaded": 0, "to_load": 1}],
    }
    assert etl_environment.scalar("SELECT count(*) FROM clickstream_events") == 0

"""Importing history: raw records marked as an import keep their event times through the ETL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clickstream import importer, loader
from tests.fixtures.aws import aws_environment

REPOSITORY = Path(__file__).resolve().parents[1]
LAST_YEAR = "2025-03-01T08:00:00Z"


def history_event(**fields) -> dict:
    return {
        "event_name": "product_view",
        "event_id": "legacy-000017",
        "event_timestamp": LAST_YEAR,
        "client_id": "c-17",
        "session_id": "s-17",
        "context_product_id": 17,
        **fields,
    }


def test_every_line_that_is_no_importable_event_is_listed_with_its_place():
    lines = [
        json.dumps(history_event()),
        "{not json",
        json.dumps(history_event(event_name="Not A Name")),
        json.dumps(history_event(page_url="/a\u0000b")),
        '{"event_name": "page_view", "n": 123456789012345678901234567890}',
        "",
    ]
    events, problems = importer.read_events([("history.ndjson", lines)])
    assert len(events) == 1
    assert [(p.line_number, p.source) for p in problems] == [
        (2, "history.ndjson"),
        (3, "history.ndjson"),
        (4, "history.ndjson"),
        (5, "history.ndjson"),
    ]
    assert "not a JSON event" in problems[0].reason
    assert "/event_name" in problems[1].reason
    assert "/page_url: contains U+0000" in problems[2].reason
    assert "the ETL reads exactly" in problems[3].reason


def test_an_import_of_last_years_events_keeps_their_times_through_the_etl(
    warehouse, aws, raw_bucket
):
    s3 = aws.client("s3")
    imported_at = datetime.now(UTC)
    keys = importer.write_import(s3, raw_bucket, [history_event()], imported_at=imported_at)

    connection = warehouse.etl_connection()
    try:
        report = loader.run_scheduled(
            connection, s3, raw_bucket, now=imported_at + timedelta(minutes=5)
        )
    finally:
        connection.close()

    assert (len(keys), report.events_loaded) == (1, 1)
    assert warehouse.query(
        "SELECT event_timestamp, received_at > %s, client_event_id, context_product_id "
        "FROM clickstream_events",
        (imported_at - timedelta(seconds=1),),
    ) == [(datetime(2025, 3, 1, 8, tzinfo=UTC), True, "legacy-000017", "17")]


def test_the_command_line_refuses_a_file_with_a_bad_line_and_writes_nothing(
    aws, raw_bucket, tmp_path
):
    good, bad = tmp_path / "good.ndjson", tmp_path / "bad.ndjson"
    good.write_text(json.dumps(history_event()) + "\n" + json.dumps(history_event()) + "\n")
    bad.write_text(json.dumps(history_event(event_name="Bad")) + "\n")
    environment = {
        **os.environ,
        **aws_environment(aws.endpoint_url),
        "PYTHONPATH": str(REPOSITORY / "lambda_src"),
    }

    def run(*files: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "clickstream.importer",
                "--bucket",
                raw_bucket,
                *map(str, files),
            ],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = run(good, bad)
    assert refused.returncode == 1
    assert f"{bad}:1: /event_name" in refused.stderr
    assert "nothing was written" in refused.stderr
    assert aws.client("s3").list_objects_v2(Bucket=raw_bucket)["KeyCount"] == 0

    accepted = run(good)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["events"] == 2
    assert aws.client("s3").list_objects_v2(Bucket=raw_bucket)["KeyCount"] == 1


def test_an_import_redacts_the_query_parameters_the_ingest_redacts():
    url = "https://shop.example.vn/reset?token=s3cr3t&lang=vi"
    events, problems = importer.read_events(
        [("h.ndjson", [json.dumps(history_event(page_url=url))])]
    )
    assert problems == []
    assert events[0]["page_url"] == "https://shop.example.vn/reset?lang=vi"

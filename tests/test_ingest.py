"""Lambda Ingest: what POST /clickstream accepts, what it refuses, and the raw object it writes.

Every test runs the real handler against a real (emulated) S3: the moto server on loopback.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import jsonschema
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import event as count_example_as
from hypothesis import strategies as st

from clickstream import contract
from clickstream.partitions import hour_prefix
from ingest import handler
from tests.fixtures.aws import REGION, MotoServer, aws_environment
from tests.fixtures.processes import free_loopback_port
from tests.raw_events import tracker_event

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
RECEIVED_AT = datetime(2025, 12, 1, 10, 15, 0, 123000, tzinfo=UTC)
RECEIVED_AT_EPOCH_MS = 1764584100123  # RECEIVED_AT as API Gateway's requestContext.timeEpoch
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"

# Property tests share one bucket across examples (function-scoped fixtures are not reset
# between them), so they compare listings taken before and after each request.
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def api_request(
    body: str | bytes | None,
    *,
    content_type: str | None = "application/json",
    method: str = "POST",
    base64_encoded: bool | None = None,
    time_epoch_ms: int | None = RECEIVED_AT_EPOCH_MS,
    request_id: str | None = "req-1",
    user_agent: str | None = BROWSER,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) request as Lambda receives it."""
    if base64_encoded is None:
        base64_encoded = isinstance(body, bytes)
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode("ascii") if base64_encoded else body.decode()
    headers = {"host": "api.example.com"}
    if content_type is not None:
        headers["content-type"] = content_type
    if user_agent is not None:
        headers["user-agent"] = user_agent
    request_context: dict[str, Any] = {
        "http": {"method": method, "path": "/clickstream", "protocol": "HTTP/1.1"},
        "routeKey": f"{method} /clickstream",
    }
    if user_agent is not None:
        request_context["http"]["userAgent"] = user_agent
    if request_id is not None:
        request_context["requestId"] = request_id
    if time_epoch_ms is not None:
        request_context["timeEpoch"] = time_epoch_ms
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} /clickstream",
        "rawPath": "/clickstream",
        "headers": headers,
        "requestContext": request_context,
        "isBase64Encoded": base64_encoded,
    }
    if body is not None:
        event["body"] = body
    return event


def json_request(document: Any, **options: Any) -> dict[str, Any]:
    return api_request(json.dumps(document), **options)


def stored_keys(s3, bucket: str) -> set[str]:
    """The keys in ``bucket``, listed afresh."""
    return {
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    }


def stored_objects(s3, bucket: str) -> dict[str, bytes]:
    """Every object in ``bucket``, by key."""
    keys = sorted(stored_keys(s3, bucket))
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def raw_lines(body: bytes) -> list[dict[str, Any]]:
    text = body.decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


@pytest.fixture
def s3(aws: MotoServer):
    return aws.client("s3")


@pytest.fixture
def ingest(s3, raw_bucket: str):
    """Send one request to the ingest; returns (status, decoded JSON body, response)."""

    def send(event: dict[str, Any], bucket: str = raw_bucket) -> tuple[int, dict, dict]:
        response = handler.handle_request(
            event, s3_client=s3, bucket=bucket, aws_request_id="lambda-req-1"
        )
        assert response["headers"]["content-type"] == "application/json"
        return response["statusCode"], json.loads(response["body"]), response

    return send


@pytest.fixture
def ingest_log() -> Iterator[list[dict[str, Any]]]:
    """The JSON lines the ingest logs during a test, parsed, with their level."""
    lines: list[dict[str, Any]] = []
    formatter = handler.logger.handlers[0].formatter
    assert formatter is not None

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(record)))

    collector = Collect()
    handler.logger.addHandler(collector)
    try:
        yield lines
    finally:
        handler.logger.removeHandler(collector)


# --- accepted requests -------------------------------------------------------------------


def test_a_tracker_event_lands_as_one_line_in_the_hour_partition_of_its_receive_time(
    ingest, s3, raw_bucket
):
    status, body, _ = ingest(json_request(tracker_event()))

    assert status == 202
    objects = stored_objects(s3, raw_bucket)
    [(key, content)] = objects.items()
    assert key.startswith("events/2025/12/01/10/events-")
    assert key.endswith(".json")
    assert len(raw_lines(content)) == 1
    assert body == {"accepted": 1, "event_ids": [raw_lines(content)[0]["event_id"]]}


def test_the_raw_line_is_a_valid_raw_record_that_keeps_the_event_exactly(ingest, s3, raw_bucket):
    event = tracker_event(unknownField={"kept": ["as", "sent"]}, pageUrl="https://shop/ü")
    ingest(json_request(event))

    [content] = stored_objects(s3, raw_bucket).values()
    [record] = raw_lines(content)
    assert contract.is_valid(record, contract.RAW_RECORD)
    assert record["event"] == event
    assert record["record_version"] == 1
    assert record["received_at"] == "2025-12-01T10:15:00.123Z"
    assert record["request_id"] == "req-1"
    assert record["user_agent"] == BROWSER


def test_the_raw_object_is_compact_utf8_ndjson(ingest, s3, raw_bucket):
    ingest(json_request([tracker_event(pageUrl="https://shop/ü"), tracker_event()]))

    [key] = stored_keys(s3, raw_bucket)
    head = s3.head_object(Bucket=raw_bucket, Key=key)
    content = s3.get_object(Bucket=raw_bucket, Key=key)["Body"].read()
    assert head["ContentType"] == "application/x-ndjson"
    *lines, after_last_newline = content.decode("utf-8").split("\n")
    assert after_last_newline == ""
    for line in lines:
        assert line == json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)
    assert "https://shop/ü" in lines[0]


def test_an_event_without_an_id_gets_a_new_uuid(ingest, s3, raw_bucket):
    _, body, _ = ingest(json_request(tracker_event()))

    [content] = stored_objects(s3, raw_bucket).values()
    [record] = raw_lines(content)
    assert str(uuid.UUID(record["event_id"])) == record["event_id"]
    assert body["event_ids"] == [record["event_id"]]


def test_the_event_id_a_tracker_sent_is_kept_in_lower_case(ingest, s3, raw_bucket):
    sent_id = "5F0C3A52-9B1D-4C1E-8E5A-2B7D9C4E1F00"
    _, body, _ = ingest(json_request(tracker_event(eventId=sent_id)))

    [content] = stored_objects(s3, raw_bucket).values()
    [record] = raw_lines(content)
    assert record["event_id"] == sent_id.lower()
    assert record["event"]["eventId"] == sent_id  # the event itself stays as sent
    assert body["event_ids"] == [sent_id.lower()]


def test_a_warehouse_shaped_event_is_accepted_with_its_own_event_id(ingest, s3, raw_bucket):
    event = {
        "event_id": "0b7e2f4c-1d3a-4e5f-8a9b-0c1d2e3f4a5b",
        "event_timestamp": "2025-12-01T10:14:59.500Z",
        "event_name": "add_to_cart_click",
        "user_id": "user_2abc",
        "context_product_id": 42,
        "context_product_price": 1500000,
    }
    status, body, _ = ingest(json_request(event))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    [record] = raw_lines(content)
    assert record["event"] == event
    assert record["event_id"] == event["event_id"]
    assert body["event_ids"] == [event["event_id"]]


def test_a_batch_of_events_becomes_one_object_with_one_line_per_event_in_order(
    ingest, s3, raw_bucket
):
    events = [tracker_event(f"event_{index}") for index in range(7)]
    status, body, _ = ingest(json_request(events))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    records = raw_lines(content)
    assert [record["event"] for record in records] == events
    assert body == {"accepted": 7, "event_ids": [record["event_id"] for record in records]}
    assert len(set(body["event_ids"])) == 7
    assert {record["received_at"] for record in records} == {"2025-12-01T10:15:00.123Z"}


def test_a_batch_of_the_maximum_size_is_accepted(ingest, s3, raw_bucket):
    events = [{"eventName": "page_view"}] * handler.MAX_EVENTS_PER_REQUEST
    status, body, _ = ingest(json_request(events))

    assert status == 202
    assert body["accepted"] == handler.MAX_EVENTS_PER_REQUEST


def test_a_base64_encoded_body_is_decoded(ingest, s3, raw_bucket):
    event = tracker_event(pageUrl="https://shop.example.com/tìm-kiếm")
    status, _, _ = ingest(api_request(json.dumps(event).encode("utf-8"), base64_encoded=True))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    assert raw_lines(content)[0]["event"] == event


def test_text_plain_as_navigator_send_beacon_sends_it_is_accepted(ingest, s3, raw_bucket):
    request = json_request(tracker_event(), content_type="text/plain;charset=UTF-8")
    status, _, _ = ingest(request)

    assert status == 202
    assert len(stored_objects(s3, raw_bucket)) == 1


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_the_json_media_type_is_recognised_whatever_its_parameters_and_case(ingest, content_type):
    status, _, _ = ingest(json_request(tracker_event(), content_type=content_type))

    assert status == 202


def test_without_a_time_epoch_the_receive_time_is_now(ingest, s3, raw_bucket):
    before = datetime.now(UTC)
    ingest(json_request(tracker_event(), time_epoch_ms=None))
    after = datetime.now(UTC)

    [(key, content)] = stored_objects(s3, raw_bucket).items()
    received_at = datetime.fromisoformat(raw_lines(content)[0]["received_at"])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= received_at <= after
    assert key.startswith(hour_prefix(received_at))


def test_without_an_api_gateway_request_id_the_lambda_request_id_is_recorded(
    ingest, s3, raw_bucket
):
    ingest(json_request(tracker_event(), request_id=None))

    [content] = stored_objects(s3, raw_bucket).values()
    assert raw_lines(content)[0]["request_id"] == "lambda-req-1"


def test_the_user_agent_header_is_recorded_when_the_request_context_has_none(
    ingest, s3, raw_bucket
):
    request = json_request(tracker_event())
    del request["requestContext"]["http"]["userAgent"]
    ingest(request)

    [content] = stored_objects(s3, raw_bucket).values()
    assert raw_lines(content)[0]["user_agent"] == BROWSER


def test_a_user_agent_longer_than_the_contract_allows_is_cut_not_refused(ingest, s3, raw_bucket):
    status, _, _ = ingest(json_request(tracker_event(), user_agent="A" * 5000))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    [record] = raw_lines(content)
    assert record["user_agent"] == "A" * handler.USER_AGENT_MAX_CHARS
    assert contract.is_valid(record, contract.RAW_RECORD)


def test_an_accepted_request_is_logged_as_one_info_line_with_counts(
    ingest, s3, raw_bucket, ingest_log
):
    ingest(json_request([tracker_event(), tracker_event()]))

    [line] = ingest_log
    [key] = stored_keys(s3, raw_bucket)
    assert line["level"] == "INFO"
    assert line["accepted_events"] == 2
    assert line["object_key"] == key
    assert line["object_bytes"] == len(stored_objects(s3, raw_bucket)[key])
    assert line["request_id"] == "req-1"
    assert line["AcceptedEvents"] == 2  # the CloudWatch embedded metric
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Clickstream"


def test_the_lambda_entry_point_writes_to_the_bucket_named_in_the_environment(
    aws, raw_bucket, s3, monkeypatch
):
    monkeypatch.setenv("RAW_BUCKET", raw_bucket)
    handler.default_s3_client.cache_clear()  # made lazily, after AWS_ENDPOINT_URL is set
    try:
        request = json_request(tracker_event(), request_id=None)
        response = handler.handler(request, SimpleNamespace(aws_request_id="lambda-req-9"))
    finally:
        handler.default_s3_client.cache_clear()

    assert response["statusCode"] == 202
    [content] = stored_objects(s3, raw_bucket).values()
    assert raw_lines(content)[0]["request_id"] == "lambda-req-9"


# --- refused requests --------------------------------------------------------------------

NOT_UTF8 = b'{"eventName": "page_view", "pageUrl": "\xff\xfe"}'
DEEPLY_NESTED = '{"eventName": "page_view", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"

REFUSALS = {
    "a GET": (json_request(tracker_event(), method="GET"), 405, "method_not_allowed"),
    "no content type": (
        json_request(tracker_event(), content_type=None),
        415,
        "unsupported_media_type",
    ),
    "an XML content type": (
        json_request(tracker_event(), content_type="application/xml"),
        415,
        "unsupported_media_type",
    ),
    "a form content type": (
        json_request(tracker_event(), content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    ),
    "invalid base64": (
        api_request("eyJldmVudE5hbWUi*", base64_encoded=True),
        400,
        "invalid_base64",
    ),
    "a body over 1 MiB": (
        api_request(b"[" + b" " * handler.MAX_BODY_BYTES + b"]", base64_encoded=True),
        413,
        "body_too_large",
    ),
    "a text body over 1 MiB in UTF-8": (  # fewer characters than bytes: bytes count
        api_request(
            json.dumps(
                tracker_event(pageUrl="ü" * (handler.MAX_BODY_BYTES // 2)), ensure_ascii=False
            )
        ),
        413,
        "body_too_large",
    ),
    "a body that is not UTF-8": (api_request(NOT_UTF8), 400, "invalid_encoding"),
    "an empty body": (api_request(""), 400, "empty_body"),
    "no body at all": (api_request(None), 400, "empty_body"),
    "an empty base64 body": (api_request(b"", base64_encoded=True), 400, "empty_body"),
    "text that is not JSON": (api_request("eventName=page_view"), 400, "invalid_json"),
    "truncated JSON": (api_request('{"eventName": "page_v'), 400, "invalid_json"),
    "NaN": (api_request('{"eventName": "page_view", "x": NaN}'), 400, "invalid_json"),
    "Infinity": (api_request('{"eventName": "page_view", "x": -Infinity}'), 400, "invalid_json"),
    "a number beyond a double": (
        api_request('{"eventName": "page_view", "x": 1e400}'),
        400,
        "invalid_json",
    ),
    "absurd nesting": (api_request(DEEPLY_NESTED), 400, "invalid_json"),
    "a lone surrogate escape": (
        api_request('{"eventName": "page_view", "x": "\\ud800"}'),
        400,
        "invalid_json",
    ),
    "a JSON string": (json_request("page_view"), 400, "invalid_body_shape"),
    "a JSON number": (json_request(42), 400, "invalid_body_shape"),
    "JSON null": (json_request(None), 400, "invalid_body_shape"),
    "JSON true": (json_request(True), 400, "invalid_body_shape"),
    "an empty batch": (json_request([]), 400, "empty_batch"),
    "a batch over the limit": (
        json_request([{"eventName": "page_view"}] * (handler.MAX_EVENTS_PER_REQUEST + 1)),
        413,
        "too_many_events",
    ),
    "an event that breaks the contract": (
        json_request(tracker_event(eventName="Page View")),
        422,
        "contract_violation",
    ),
    "a batch with one bad event": (
        json_request([tracker_event(), "not an event", tracker_event()]),
        422,
        "contract_violation",
    ),
}


@pytest.mark.parametrize(("request_event", "status", "error"), REFUSALS.values(), ids=REFUSALS)
def test_a_bad_request_is_refused_with_its_status_and_a_json_error_and_nothing_is_written(
    ingest, s3, raw_bucket, request_event, status, error
):
    got_status, body, _ = ingest(copy.deepcopy(request_event))

    assert got_status == status
    assert body["error"] == error
    assert isinstance(body["message"], str)
    assert body["message"]
    assert ("problems" in body) == (status == 422)
    assert stored_objects(s3, raw_bucket) == {}


def test_a_refused_method_names_the_allowed_one(ingest):
    _, _, response = ingest(json_request(tracker_event(), method="PUT"))

    assert response["headers"]["allow"] == "POST"


def test_invalid_json_answers_with_the_parsers_message(ingest):
    _, body, _ = ingest(api_request('{"eventName": }'))

    assert "Expecting value: line 1 column 15" in body["message"]


def test_a_refusal_names_every_problem_of_every_event_with_index_prefixed_paths(
    ingest, s3, raw_bucket
):
    events = [
        tracker_event(),
        tracker_event(eventName="Bad Name", product={"price": -1}),
        tracker_event(),
        tracker_event(product={"price": "cheap", "discountPrice": -5}, isFirstVisit="yes"),
        {"userLoginState": "admin"},
    ]
    status, body, _ = ingest(json_request(events))

    assert status == 422
    assert {problem["path"] for problem in body["problems"]} == {
        "/1/eventName",
        "/1/product/price",
        "/3/product/price",
        "/3/product/discountPrice",
        "/3/isFirstVisit",
        "/4",  # no event_name: the warehouse shape is read
    }
    assert all(problem["reason"] for problem in body["problems"])
    assert body["message"].startswith("3 of 5 events")
    assert stored_objects(s3, raw_bucket) == {}


def test_a_single_event_names_its_problems_with_unprefixed_paths(ingest):
    _, body, _ = ingest(json_request(tracker_event(product={"price": -1}, userLoginState="x")))

    assert {problem["path"] for problem in body["problems"]} == {
        "/product/price",
        "/userLoginState",
    }


def test_a_problem_about_a_huge_value_is_shortened_but_keeps_its_rule(ingest):
    _, body, _ = ingest(json_request(tracker_event(pageUrl="x" * 100_000)))

    [problem] = body["problems"]
    assert problem["path"] == "/pageUrl"
    assert len(problem["reason"]) <= handler.MAX_REASON_CHARS + 3
    assert problem["reason"].endswith("is too long")


def test_every_refusal_is_logged_as_one_warning_line_that_keeps_the_body(ingest, ingest_log):
    ingest(json_request([tracker_event(), tracker_event(eventName="Bad Name")]))

    [line] = ingest_log
    assert line["level"] == "WARNING"
    assert line["status"] == 422
    assert line["error"] == "contract_violation"
    assert line["request_id"] == "req-1"
    [problem] = line["problems"]
    assert problem["path"] == "/1/eventName"
    assert problem["reason"].startswith("'Bad Name' does not match")
    assert line["problem_count"] == 1
    assert json.loads(line["body"])[1]["eventName"] == "Bad Name"
    assert line["body_truncated"] is False


def test_a_logged_body_is_cut_at_4_kib(ingest, ingest_log):
    body = json.dumps([tracker_event(eventName="Bad Name")] * 100)
    ingest(api_request(body))

    [line] = ingest_log
    assert line["body"] == body[: handler.LOGGED_BODY_BYTES]
    assert line["body_bytes"] == len(body)
    assert line["body_truncated"] is True


def test_an_undecodable_body_is_logged_readably(ingest, ingest_log):
    ingest(api_request(NOT_UTF8))

    [line] = ingest_log
    assert line["error"] == "invalid_encoding"
    assert line["body"].startswith('{"eventName": "page_view"')
    assert "is not UTF-8" in line["reason"]


# --- storage failures --------------------------------------------------------------------


def test_a_missing_bucket_answers_503_and_logs_an_error(ingest, s3, ingest_log):
    status, body, _ = ingest(json_request(tracker_event()), bucket="no-such-bucket")

    assert status == 503
    assert body["error"] == "storage_unavailable"
    [line] = ingest_log
    assert line["level"] == "ERROR"
    assert line["error"] == "storage_unavailable"
    assert "NoSuchBucket" in line["exception"]


def test_an_unreachable_s3_answers_503(raw_bucket, ingest_log):
    closed_port = free_loopback_port()
    unreachable = boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        config=Config(connect_timeout=1, retries={"max_attempts": 1}),
    )
    response = handler.handle_request(
        json_request(tracker_event()), s3_client=unreachable, bucket=raw_bucket
    )

    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"] == "storage_unavailable"
    assert "EndpointConnectionError" in ingest_log[0]["exception"]


# --- the id field of the other shape ------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        {"eventName": "page_view", "event_id": 12345},
        {"event_name": "page_view", "eventId": {"not": "an id"}},
    ],
    ids=["tracker shape with event_id", "warehouse shape with eventId"],
)
def test_an_id_field_of_the_other_shape_is_kept_as_an_unknown_field_not_used_as_the_id(
    ingest, s3, raw_bucket, event
):
    status, _, _ = ingest(json_request(event))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    [record] = raw_lines(content)
    assert record["event"] == event
    assert contract.is_valid(record, contract.RAW_RECORD)


def test_an_unchecked_id_field_never_makes_an_invalid_raw_line(ingest, s3, raw_bucket):
    status, _, _ = ingest(json_request({"eventName": "page_view", "event_id": "not-a-uuid"}))

    # 422 today (the handler checks each record before writing); 202 with a new id once
    # mapping.client_event_id only reads the id field of the event's own shape.
    assert status in (202, 422)
    for content in stored_objects(s3, raw_bucket).values():
        assert all(contract.is_valid(r, contract.RAW_RECORD) for r in raw_lines(content))


# --- import cost -------------------------------------------------------------------------


def test_importing_and_accepting_an_event_loads_neither_psycopg2_nor_jsonschema(
    aws, raw_bucket, tmp_path
):
    script = """
import json, sys
import handler
imported_at_start = sorted(m for m in ("psycopg2", "jsonschema") if m in sys.modules)
request = json.loads(sys.argv[1])
status = handler.handler(request, None)["statusCode"]
imported_after = sorted(m for m in ("psycopg2", "jsonschema") if m in sys.modules)
print(json.dumps([imported_at_start, status, imported_after, handler.__file__]))
"""
    lambda_source = REPOSITORY_ROOT / "lambda_src"
    environment = {
        **os.environ,
        **aws_environment(aws.endpoint_url),
        "RAW_BUCKET": raw_bucket,
        "PYTHONPATH": os.pathsep.join([str(lambda_source / "ingest"), str(lambda_source)]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(json_request(tracker_event()))],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        check=True,
        timeout=60,
    )

    imported_at_start, status, imported_after, module_file = json.loads(
        result.stdout.strip().splitlines()[-1]
    )
    assert Path(module_file) == lambda_source / "ingest" / "handler.py"
    assert imported_at_start == []
    assert status == 202
    assert imported_after == []


# --- properties --------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "page_view",
            "",
            "logged_in",
            "5f0c3a52-9b1d-4c1e-8e5a-2b7d9c4e1f00",
            "2025-12-01T10:15:00.123Z",
            "x" * 300,
            "\ud800",  # a lone surrogate: JSON can escape it, UTF-8 cannot hold it
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

VALID_EVENTS = [
    tracker_event(),
    tracker_event("category_view", product={"id": 7, "category": "laptop"}),
    tracker_event(
        "click",
        product=None,
        element={"tag": "button", "id": "buy", "role": None, "text": "Buy", "dataset": {}},
    ),
    tracker_event(
        "checkout_complete",
        element={"dataset": {"orderId": "o-1", "orderNumber": "1001", "total": "29990000"}},
    ),
    tracker_event(
        eventId="5f0c3a52-9b1d-4c1e-8e5a-2b7d9c4e1f00",
        eventTimestamp="2025-12-01T10:14:59.5+07:00",
        identitySource="clerk_google",
    ),
    {"eventName": "page_view"},
    {
        "event_id": "0b7e2f4c-1d3a-4e5f-8a9b-0c1d2e3f4a5b",
        "event_timestamp": "2025-12-01T10:14:59Z",
        "event_name": "product_view",
        "user_login_state": "anonymous",
        "identity_source": "anonymous",
        "is_first_visit": True,
        "context_product_id": "p-1",
        "context_product_price": 12.5,
        "context_product_discount_price": None,
    },
]
assert all(contract.is_valid(event, contract.INCOMING_EVENT) for event in VALID_EVENTS)

# Field names a mutation may add, the other shape's id field among them.
ADDABLE_FIELDS = st.sampled_from(
    [
        *("eventName", "event_name", "eventTimestamp", "product", "element", "price", "userId"),
        *("event_id", "eventId"),
    ]
) | st.text(max_size=12)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one field set to any JSON value, removed, or added."""
    event = copy.deepcopy(draw(st.sampled_from(VALID_EVENTS)))
    paths = [(name,) for name in event] + [
        (name, inner) for name, value in event.items() if isinstance(value, dict) for inner in value
    ]
    operation = draw(st.sampled_from(["replace", "remove", "add"]))
    if operation == "add":
        event[draw(ADDABLE_FIELDS)] = draw(json_values)
        return event
    *parents, field = draw(st.sampled_from(paths))
    container = event
    for parent in parents:
        container = container[parent]
    if operation == "remove":
        del container[field]
    else:
        container[field] = draw(json_values)
    return event


def assert_answered_without_error_and_wrote_only_valid_lines(s3, bucket, request) -> None:
    before = stored_keys(s3, bucket)
    response = handler.handle_request(request, s3_client=s3, bucket=bucket)
    written = stored_keys(s3, bucket) - before

    status = response["statusCode"]
    assert status == 202 or 400 <= status < 500, response
    body = json.loads(response["body"])
    count_example_as(f"{status} {body.get('error', 'accepted')}")  # --hypothesis-show-statistics
    if status != 202:
        assert written == set()
        assert isinstance(body["error"], str)
        return
    [key] = written
    records = raw_lines(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert len(records) == body["accepted"]
    assert all(contract.is_valid(record, contract.RAW_RECORD) for record in records)
    s3.delete_object(Bucket=bucket, Key=key)  # keep the listings short


@PROPERTY_SETTINGS
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(["application/json", "text/plain", "image/png"]),
)
def test_any_bytes_get_a_202_or_a_4xx_never_an_error(s3, raw_bucket, body, content_type):
    request = api_request(body, base64_encoded=True, content_type=content_type)
    assert_answered_without_error_and_wrote_only_valid_lines(s3, raw_bucket, request)


@PROPERTY_SETTINGS
@given(document=json_values)
def test_any_json_value_gets_a_202_or_a_4xx_never_an_error(s3, raw_bucket, document):
    assert_answered_without_error_and_wrote_only_valid_lines(s3, raw_bucket, json_request(document))


@PROPERTY_SETTINGS
@given(events=st.lists(mutated_events(), min_size=1, max_size=4), as_batch=st.booleans())
def test_a_mutated_event_or_batch_gets_a_202_or_a_4xx_and_only_valid_lines_are_written(
    s3, raw_bucket, events, as_batch
):
    document = events if as_batch else events[0]
    request = json_request(document, content_type="text/plain")
    assert_answered_without_error_and_wrote_only_valid_lines(s3, raw_bucket, request)


@settings(max_examples=300, deadline=None)
@given(instance=mutated_events() | json_values)
def test_both_validators_agree_on_every_instance(instance):
    fast_verdict = contract.is_valid(instance, contract.INCOMING_EVENT)
    problems = contract.problems(instance, contract.INCOMING_EVENT)

    assert fast_verdict == (problems == [])
    # contract.problems falls back to fastjsonschema's message when jsonschema finds nothing,
    # so ask jsonschema directly too: the schema's root is definitions/incomingEvent.
    assert fast_verdict == jsonschema.Draft7Validator(contract.CONTRACT).is_valid(instance)


@pytest.mark.parametrize(
    "event",
    [
        {"eventName": "page_view\n"},
        {"eventName": "page_view", "eventId": "5f0c3a52-9b1d-4c1e-8e5a-2b7d9c4e1f00\n"},
        {"event_name": "page_view", "event_timestamp": "2025-12-01T10:15:00Z\n"},
    ],
    ids=["event name", "event id", "event timestamp"],
)
def test_both_validators_refuse_a_trailing_newline_after_an_anchored_pattern(event):
    assert not contract.is_valid(event, contract.INCOMING_EVENT)
    assert not jsonschema.Draft7Validator(contract.CONTRACT).is_valid(event)

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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import jsonschema
import orjson
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import event as count_example_as
from hypothesis import strategies as st

from clickstream import contract, mapping, raw_format
from clickstream.partitions import hour_prefix
from ingest import handler
from tests.fixtures.aws import REGION, MotoServer, aws_environment
from tests.fixtures.processes import free_loopback_port
from tests.raw_events import tracker_event

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
RECEIVED_AT = datetime(2025, 12, 1, 10, 15, 0, 123000, tzinfo=UTC)
RECEIVED_AT_EPOCH_MS = 1764584100123  # RECEIVED_AT as API Gateway's requestContext.timeEpoch
# The Lambda's own clock in most tests: a little after API Gateway's, as in production.
LAMBDA_CLOCK = RECEIVED_AT + timedelta(milliseconds=40)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"
# A documentation address (RFC 5737) that no other test value contains.
CLIENT_IP = "203.0.113.187"

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
    source_ip: str = CLIENT_IP,
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
        "http": {
            "method": method,
            "path": "/clickstream",
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
        },
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
    """Send one request to the ingest, running at LAMBDA_CLOCK unless told otherwise; returns
    (status, decoded JSON body, response)."""

    def send(
        event: dict[str, Any], bucket: str = raw_bucket, **options: Any
    ) -> tuple[int, dict, dict]:
        response = handler.handle_request(
            event,
            s3_client=s3,
            bucket=bucket,
            aws_request_id="lambda-req-1",
            **{"server_time": LAMBDA_CLOCK, **options},
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


def test_without_a_time_epoch_the_receive_time_is_the_lambdas_clock(ingest, s3, raw_bucket):
    lambda_clock = datetime(2025, 12, 2, 7, 30, 0, 456000, tzinfo=UTC)
    ingest(json_request(tracker_event(), time_epoch_ms=None), server_time=lambda_clock)

    [(key, content)] = stored_objects(s3, raw_bucket).items()
    assert raw_lines(content)[0]["received_at"] == "2025-12-02T07:30:00.456Z"
    assert key.startswith(hour_prefix(lambda_clock))


def test_without_a_time_epoch_or_a_lambda_clock_the_receive_time_is_now(ingest, s3, raw_bucket):
    before = datetime.now(UTC)
    ingest(json_request(tracker_event(), time_epoch_ms=None), server_time=None)
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
    "a NUL character": (
        api_request('{"eventName": "page_view", "x": "\\u0000"}'),
        400,
        "unstorable_character",
    ),
    "an integer beyond 64 bits": (
        api_request('{"eventName": "page_view", "x": 18446744073709551616}'),
        400,
        "number_out_of_range",
    ),
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


# --- what a raw line can hold: nothing the ETL could not store ----------------------------

NUL_PLACES = {
    "a field": (tracker_event(pageUrl="https://shop.example.vn/a\x00b"), "/pageUrl"),
    "an unknown field": (tracker_event(note="x\x00"), "/note"),
    "element.dataset in a batch": (
        [tracker_event(), tracker_event("click", element={"dataset": {"orderId": "o-\x00"}})],
        "/1/element/dataset/orderId",
    ),
    "a warehouse-shaped field": ({"event_name": "page_view", "page_url": "\x00"}, "/page_url"),
    "a field name": ({"eventName": "page_view", "ke\x00y": 1}, "/ke\\u0000y"),
    "a name deep in an unknown field": (
        {"eventName": "page_view", "extra": {"a/b~": [{"\x00": True}]}},
        "/extra/a~1b~0/0/\\u0000",
    ),
}


@pytest.mark.parametrize(("document", "pointer"), NUL_PLACES.values(), ids=NUL_PLACES)
def test_a_nul_character_anywhere_in_the_body_is_refused_naming_its_json_pointer(
    ingest, s3, raw_bucket, document, pointer
):
    body_text = json.dumps(document)
    assert "\\u0000" in body_text  # JSON's only spelling of U+0000

    status, body, _ = ingest(api_request(body_text))

    assert (status, body["error"]) == (400, "unstorable_character")
    assert f"{pointer}: " in body["message"]
    assert "U+0000" in body["message"]
    assert "\x00" not in body["message"]  # a reason is text that PostgreSQL can store
    assert stored_objects(s3, raw_bucket) == {}


def test_an_escaped_backslash_before_u0000_is_no_nul_and_is_stored_as_sent(ingest, s3, raw_bucket):
    page_url = "https://shop.example.vn/search?q=\\u0000"  # a backslash, then "u0000"
    body_text = json.dumps(tracker_event(pageUrl=page_url))
    assert "\\\\u0000" in body_text

    status, _, _ = ingest(api_request(body_text))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    assert raw_lines(content)[0]["event"]["pageUrl"] == page_url


OUT_OF_RANGE_INTEGERS = {
    "2**64": str(2**64),
    "-(2**63) - 1": str(-(2**63) - 1),
    "10**30": str(10**30),
    "309 digits, a float to orjson": "1" * 309,
    "309 nines, infinity to orjson": "9" * 309,
    "5000 digits, more than Python's int() converts": "7" * 5000,
}


@pytest.mark.parametrize("integer_text", OUT_OF_RANGE_INTEGERS.values(), ids=OUT_OF_RANGE_INTEGERS)
def test_an_integer_the_etl_cannot_read_exactly_is_refused(ingest, s3, raw_bucket, integer_text):
    body_text = f'{{"eventName": "click", "element": {{"dataset": {{"n": {integer_text}}}}}}}'

    status, body, _ = ingest(api_request(body_text))

    assert (status, body["error"]) == (400, "number_out_of_range")
    assert integer_text[:40] in body["message"]
    assert str(raw_format.MAX_EXACT_INTEGER) in body["message"]
    assert stored_objects(s3, raw_bucket) == {}


@pytest.mark.parametrize(
    "number", [raw_format.MIN_EXACT_INTEGER, raw_format.MAX_EXACT_INTEGER, 0, -1]
)
def test_an_integer_within_the_exact_range_is_stored_and_read_back_exactly_by_orjson(
    ingest, s3, raw_bucket, number
):
    status, _, _ = ingest(json_request(tracker_event("click", element={"dataset": {"n": number}})))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    [line] = content.decode("utf-8").splitlines()
    assert orjson.loads(line)["event"]["element"]["dataset"]["n"] == number


def integer_text_accepted_by_the_ingest(text: str) -> bool:
    try:
        raw_format.exact_integer(text)
    except raw_format.IntegerOutOfRange:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    number=st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([raw_format.MIN_EXACT_INTEGER, raw_format.MAX_EXACT_INTEGER]).flatmap(
        lambda bound: st.integers(min_value=bound - 3, max_value=bound + 3)
    )
)
def test_the_ingest_accepts_exactly_the_integers_that_orjson_reads_exactly(number):
    text = str(number)
    read_by_the_etl = orjson.loads(text)
    the_etl_reads_it_exactly = isinstance(read_by_the_etl, int) and read_by_the_etl == number

    assert integer_text_accepted_by_the_ingest(text) == the_etl_reads_it_exactly


def test_a_lone_carriage_return_in_a_url_is_accepted_and_stored_exactly(ingest, s3, raw_bucket):
    page_url = "https://shop.example.vn/a\rb"
    status, _, _ = ingest(json_request(tracker_event(pageUrl=page_url)))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    assert b"\r" not in content  # escaped in the line, so no reader can split there
    assert '"pageUrl":"https://shop.example.vn/a\\rb"' in content.decode("utf-8")
    assert raw_lines(content)[0]["event"]["pageUrl"] == page_url


def test_unstorable_value_is_none_for_a_document_the_etl_can_store():
    document = {"a": ["\\u0000", True, raw_format.MAX_EXACT_INTEGER, 1e308, None, {"b": ""}]}

    assert raw_format.unstorable_value(document) is None


def test_unstorable_value_names_the_first_offending_value_in_document_order():
    document = [{"x": "fine", "y": [1, 2**64], "z": "\x00"}, "\x00"]

    reason = raw_format.unstorable_value(document)

    assert reason is not None
    assert reason.startswith("/0/y/1: the integer 18446744073709551616 is outside")


def test_unstorable_value_walks_a_document_nested_as_deep_as_a_parser_allows():
    document = orjson.loads("[" * 1023 + '"\\u0000"' + "]" * 1023)

    reason = raw_format.unstorable_value(document)

    assert reason == "/0" * 1023 + ": contains U+0000, which PostgreSQL text cannot store"


# --- the receive time -----------------------------------------------------------------------

UNBELIEVED_TIME_EPOCHS = {
    "absent": (None, "no timeEpoch"),
    "in the future": (4070908800000, "ahead of"),  # 2099-01-01: events/2099/... stalls the ETL
    "far in the past": (RECEIVED_AT_EPOCH_MS - 24 * 3600 * 1000, "behind"),
    "beyond the calendar": (10**20, "beyond the calendar"),
    "a boolean": (True, "not an integer"),
    "a float": (float(RECEIVED_AT_EPOCH_MS), "not an integer"),
    "a string": (str(RECEIVED_AT_EPOCH_MS), "not an integer"),
}


@pytest.mark.parametrize(
    ("time_epoch_ms", "reason"), UNBELIEVED_TIME_EPOCHS.values(), ids=UNBELIEVED_TIME_EPOCHS
)
def test_an_unbelievable_time_epoch_gives_way_to_the_lambdas_clock_with_a_warning(
    ingest, s3, raw_bucket, ingest_log, time_epoch_ms, reason
):
    status, _, _ = ingest(json_request(tracker_event(), time_epoch_ms=time_epoch_ms))

    assert status == 202
    [(key, content)] = stored_objects(s3, raw_bucket).items()
    assert key.startswith(hour_prefix(LAMBDA_CLOCK))
    assert raw_lines(content)[0]["received_at"] == mapping.format_timestamp(LAMBDA_CLOCK)
    [warning] = [line for line in ingest_log if line["level"] == "WARNING"]
    assert warning["message"] == "receive time not believed"
    assert reason in warning["reason"]
    assert warning["time_epoch_ms"] == time_epoch_ms
    assert warning["received_at"] == mapping.format_timestamp(LAMBDA_CLOCK)
    assert warning["request_id"] == "req-1"


@pytest.mark.parametrize(
    "offset", [handler.RECEIVE_TIME_TOLERANCE, -handler.RECEIVE_TIME_TOLERANCE]
)
def test_a_time_epoch_within_the_tolerance_either_way_is_believed_without_a_warning(
    ingest, s3, raw_bucket, ingest_log, offset
):
    ingest(json_request(tracker_event()), server_time=RECEIVED_AT - offset)

    [content] = stored_objects(s3, raw_bucket).values()
    assert raw_lines(content)[0]["received_at"] == "2025-12-01T10:15:00.123Z"
    assert [line["level"] for line in ingest_log] == ["INFO"]


def test_an_in_process_replay_without_a_lambda_clock_keeps_a_historic_time_epoch(
    ingest, s3, raw_bucket, ingest_log
):
    status, _, _ = ingest(json_request(tracker_event()), server_time=None)

    assert status == 202
    [key] = stored_keys(s3, raw_bucket)
    assert key.startswith("events/2025/12/01/10/")
    assert [line["level"] for line in ingest_log] == ["INFO"]


def test_an_in_process_replay_still_survives_a_time_epoch_beyond_the_calendar(
    ingest, s3, raw_bucket
):
    before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    status, _, _ = ingest(json_request(tracker_event(), time_epoch_ms=10**20), server_time=None)

    assert status == 202
    [key] = stored_keys(s3, raw_bucket)
    assert key.startswith((hour_prefix(before), hour_prefix(datetime.now(UTC))))


def invoke_entry_point(request: dict[str, Any], raw_bucket: str, monkeypatch) -> dict[str, Any]:
    """Call the Lambda entry point as Lambda does, with RAW_BUCKET set."""
    monkeypatch.setenv("RAW_BUCKET", raw_bucket)
    handler.default_s3_client.cache_clear()  # made lazily, after AWS_ENDPOINT_URL is set
    try:
        return handler.handler(request, SimpleNamespace(aws_request_id="lambda-req-9"))
    finally:
        handler.default_s3_client.cache_clear()


def test_the_lambda_entry_point_checks_the_time_epoch_against_its_own_clock(
    aws, s3, raw_bucket, monkeypatch
):
    just_now = datetime.now(UTC) - timedelta(seconds=1)
    just_now_ms = int(just_now.timestamp()) * 1000 + just_now.microsecond // 1000
    invoke_entry_point(
        json_request(tracker_event(), time_epoch_ms=just_now_ms), raw_bucket, monkeypatch
    )
    before = datetime.now(UTC)
    invoke_entry_point(
        json_request(tracker_event(), time_epoch_ms=4070908800000), raw_bucket, monkeypatch
    )
    after = datetime.now(UTC)

    received = sorted(
        datetime.fromisoformat(raw_lines(content)[0]["received_at"])
        for content in stored_objects(s3, raw_bucket).values()
    )
    assert received[0] == just_now.replace(microsecond=just_now.microsecond // 1000 * 1000)
    assert before - timedelta(milliseconds=1) <= received[1] <= after  # not 2099


# --- privacy ------------------------------------------------------------------------------

SECRET_PAGE_URL = (
    "https://shop.example.vn/reset?Token=tok-9f8e7d&utm_source=mail&email=an%40example.vn"
    "#access_token=at-5c4b3a&state=st-1"
)
SECRET_REFERRER = "https://mail.example.com/inbox?auth=au-1a2b&q=shoes"
SECRETS = ("tok-9f8e7d", "an%40example.vn", "at-5c4b3a", "au-1a2b")


def test_redacted_query_parameters_never_reach_the_raw_object(ingest, s3, raw_bucket):
    status, _, _ = ingest(
        json_request(tracker_event(pageUrl=SECRET_PAGE_URL, referrer=SECRET_REFERRER))
    )

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    event = raw_lines(content)[0]["event"]
    assert event["pageUrl"] == "https://shop.example.vn/reset?utm_source=mail#state=st-1"
    assert event["referrer"] == "https://mail.example.com/inbox?q=shoes"
    assert not any(secret.encode() in content for secret in SECRETS)


def test_redaction_covers_the_warehouse_shapes_url_fields_too(ingest, s3, raw_bucket):
    event = {"event_name": "page_view", "page_url": SECRET_PAGE_URL, "referrer": SECRET_REFERRER}
    status, _, _ = ingest(json_request(event))

    assert status == 202
    [content] = stored_objects(s3, raw_bucket).values()
    stored = raw_lines(content)[0]["event"]
    assert stored["page_url"] == "https://shop.example.vn/reset?utm_source=mail#state=st-1"
    assert stored["referrer"] == "https://mail.example.com/inbox?q=shoes"


REDACTION_SETTINGS = {
    "unset: the default list": (None, "https://shop.example.vn/p?utm_source=mail&Lang=vi"),
    "a list of its own": ("utm_source, LANG", "https://shop.example.vn/p?token=t-1"),
    "empty: nothing": ("", "https://shop.example.vn/p?token=t-1&utm_source=mail&Lang=vi"),
}


@pytest.mark.parametrize(
    ("setting", "stored_url"), REDACTION_SETTINGS.values(), ids=REDACTION_SETTINGS
)
def test_the_lambda_reads_the_redacted_parameters_from_its_environment(
    aws, s3, raw_bucket, monkeypatch, setting, stored_url
):
    if setting is None:
        monkeypatch.delenv(handler.REDACTED_QUERY_PARAMETERS_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(handler.REDACTED_QUERY_PARAMETERS_VARIABLE, setting)
    page_url = "https://shop.example.vn/p?token=t-1&utm_source=mail&Lang=vi"
    response = invoke_entry_point(
        json_request(tracker_event(pageUrl=page_url)), raw_bucket, monkeypatch
    )

    assert response["statusCode"] == 202
    [content] = stored_objects(s3, raw_bucket).values()
    assert raw_lines(content)[0]["event"]["pageUrl"] == stored_url


def test_a_refusal_logs_the_body_and_problems_without_the_redacted_parameters(ingest, ingest_log):
    too_long_referrer = f"{SECRET_REFERRER}&pad={'x' * 5000}"
    events = [
        tracker_event(pageUrl=SECRET_PAGE_URL, referrer=too_long_referrer),
        tracker_event(eventName="Bad Name", pageUrl=SECRET_PAGE_URL),
    ]
    status, _, _ = ingest(json_request(events))

    assert status == 422
    [line] = ingest_log
    assert "utm_source=mail" in line["body"]
    assert {problem["path"] for problem in line["problems"]} == {"/0/referrer", "/1/eventName"}
    logged = json.dumps(line)
    assert not any(secret in logged for secret in SECRETS)


def test_the_client_ip_is_neither_stored_nor_logged(ingest, s3, raw_bucket, ingest_log, capsys):
    requests = {
        "accepted": json_request(tracker_event()),
        "accepted at the Lambda's clock": json_request(tracker_event(), time_epoch_ms=10**20),
        "a contract violation": json_request(tracker_event(eventName="Bad Name")),
        "invalid JSON": api_request('{"eventName": '),
        "a NUL": json_request(tracker_event(pageUrl="\x00")),
        "a GET": json_request(tracker_event(), method="GET"),
    }
    statuses = {name: ingest(request)[0] for name, request in requests.items()}
    statuses["storage failure"] = ingest(json_request(tracker_event()), bucket="no-such-bucket")[0]

    assert statuses == {
        "accepted": 202,
        "accepted at the Lambda's clock": 202,
        "a contract violation": 422,
        "invalid JSON": 400,
        "a NUL": 400,
        "a GET": 405,
        "storage failure": 503,
    }
    assert {request["requestContext"]["http"]["sourceIp"] for request in requests.values()} == {
        CLIENT_IP
    }
    assert len(stored_objects(s3, raw_bucket)) == 2
    assert not any(
        CLIENT_IP.encode() in content for content in stored_objects(s3, raw_bucket).values()
    )
    assert len(ingest_log) == 8  # one line a request, and the warning about the receive time
    assert CLIENT_IP not in json.dumps(ingest_log)
    printed = capsys.readouterr()
    assert "request accepted" in printed.out  # the logger's own output was captured
    assert CLIENT_IP not in printed.out + printed.err


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

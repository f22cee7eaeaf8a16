"""Lambda Ingest: POST /clickstream (API Gateway HTTP API, payload 2.0) → one raw object in S3.

A request carries one event (a JSON object) or a batch (a JSON array of 1 to 500 objects), sent as
``application/json``, or as ``text/plain``: what ``navigator.sendBeacon`` sends with a string body,
which spares the browser a CORS preflight. Every event must satisfy ``definitions/incomingEvent``
of files/contract/clickstream-event.schema.json, and hold only what the ETL can load
(``raw_format.unstorable_value``: no U+0000, which PostgreSQL text cannot hold, and no integer
that orjson cannot read exactly). A request is accepted or refused as a whole: one invalid event
refuses the batch, and then nothing is written.

Raw objects
-----------
Each accepted request becomes exactly one object in the raw bucket (env ``RAW_BUCKET``), under

    events/YYYY/MM/DD/HH/events-<32 hex digits>.json

The hour is the UTC hour in which API Gateway received the request, the partition that the hourly
ETL reads; the hex digits are a new random UUID, so that two requests never share an object. The
object is UTF-8 newline-delimited JSON (content type ``application/x-ndjson``): one raw record per
event, in the order sent, each a line of compact JSON ending in ``\\n``. A raw record satisfies
``definitions/rawRecord`` of the contract:

    record_version  1. A new layout gets a new number, so that old objects stay readable.
    event_id        lower-case UUID: the id the client sent (``eventId`` in the tracker shape,
                    ``event_id`` in the warehouse shape), or the UUIDv5 of an id that is no UUID
                    (``mapping.event_uuid``), so that a retried request can be deduplicated
                    downstream; a new random UUID when it sent none.
    received_at     when API Gateway received the request (``requestContext.timeEpoch``), UTC,
                    milliseconds, e.g. ``2025-12-01T10:15:00.123Z``; the same on every line of an
                    object. The Lambda's own clock stands in for a timeEpoch that is missing, not
                    an integer, or more than RECEIVE_TIME_TOLERANCE from it (logged as a WARNING),
                    so that no request writes a partition the ETL has passed or will not reach.
                    The ETL takes it as the event time when the client sent no time, or an
                    implausible one.
    request_id      API Gateway's request id (Lambda's when absent): finds the request's log line.
    user_agent      the browser's User-Agent (cut at the contract's 1024 characters), or null.
    event           the event as the client sent it, unknown fields included, except for the
                    redacted query parameters of its URLs (below).

For example (one line, shortened):

    {"record_version":1,"event_id":"5f0c...","received_at":"2025-12-01T10:15:00.123Z",
    "request_id":"c6af9ac6-...","user_agent":"Mozilla/5.0 ...","event":{"eventName":"page_view"}}

Privacy
-------
Query parameters named in ``INGEST_REDACTED_QUERY_PARAMETERS`` (comma-separated; unset: the
default of ``privacy.DEFAULT_REDACTED_QUERY_PARAMETERS``, such as token, code, password, email)
are removed from ``pageUrl``/``page_url`` and ``referrer`` before the raw record is built, and
from what a refusal logs. The client's IP address (``requestContext.http.sourceIp``) is never
read: neither a raw object nor a log line holds it.

Responses
---------
202 ``{"accepted": n, "event_ids": [...]}`` once the object is written. Anything else is JSON
``{"error": code, "message": sentence}`` (plus ``problems``, a list of ``{path, reason}``, for
422) and writes nothing: 405 not POST, 415 neither JSON nor text/plain, 400 a body that is empty,
not base64, not UTF-8, not JSON, not an object or non-empty array, that holds U+0000
(``unstorable_character``, naming its JSON pointer) or an integer beyond orjson's exact range
(``number_out_of_range``), 413 more than 1 MiB or more than 500 events, 422 events that break
the contract, 503 S3 failed (the client may retry). Bad input never gets a 5xx; every refusal is
one WARNING log line that keeps the first 4 KiB of the body.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import os
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from clickstream import contract, logs, mapping, partitions, privacy, raw_format

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS_PER_REQUEST = 500
ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "text/plain"})

# What a refusal's log line keeps: enough to see what a client sends, bounded so that one bad
# request cannot make a log line larger than CloudWatch Logs takes (256 KiB per event).
LOGGED_BODY_BYTES = 4 * 1024
LOGGED_PROBLEMS = 100
MAX_REASON_CHARS = 500

# The contract bounds these raw-record fields; a longer header is cut rather than refused.
_RAW_RECORD_FIELDS = contract.CONTRACT["definitions"]["rawRecord"]["properties"]
USER_AGENT_MAX_CHARS: int = _RAW_RECORD_FIELDS["user_agent"]["maxLength"]
REQUEST_ID_MAX_CHARS: int = _RAW_RECORD_FIELDS["request_id"]["maxLength"]

# API Gateway gives up on the integration after 30 s: an S3 call that hangs must fail before.
S3_CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
)
METRIC_DIMENSIONS = {"Function": "ingest"}

# Comma-separated query parameter names removed from the events' URLs before anything is stored;
# "" removes none. Unset (tests, a function deployed by hand): privacy's default list.
REDACTED_QUERY_PARAMETERS_VARIABLE = "INGEST_REDACTED_QUERY_PARAMETERS"

# API Gateway's receive time names the hour partition the ETL loads. A time far from the Lambda's
# own clock would write a partition no scheduled run reads until then (events/2099/... stalls the
# ETL's "newest loaded hour" forever) or one it has passed, so beyond this it is not believed and
# the Lambda's clock is used. Both clocks are NTP-synced AWS hosts: minutes apart is a fault.
RECEIVE_TIME_TOLERANCE = timedelta(minutes=5)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

logger = logs.get_logger("clickstream.ingest")


class RequestRejected(Exception):
    """A request the ingest refuses because of what the client sent: a 4xx, logged."""

    def __init__(
        self, status: int, error: str, message: str, problems: Sequence[contract.Problem] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.problems = list(problems)


@functools.cache
def default_s3_client() -> Any:
    """This execution environment's S3 client, made on first use, not at import time."""
    return boto3.client("s3", config=S3_CLIENT_CONFIG)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point."""
    return handle_request(
        event,
        s3_client=default_s3_client(),
        bucket=os.environ["RAW_BUCKET"],
        aws_request_id=getattr(context, "aws_request_id", None),
        server_time=datetime.now(UTC),
        redacted_query_parameters=privacy.parse_redacted_names(
            os.environ.get(REDACTED_QUERY_PARAMETERS_VARIABLE)
        ),
    )


def handle_request(
    event: dict[str, Any],
    *,
    s3_client: Any,
    bucket: str,
    aws_request_id: str | None = None,
    server_time: datetime | None = None,
    redacted_query_parameters: Collection[str] = privacy.DEFAULT_REDACTED_QUERY_PARAMETERS,
) -> dict[str, Any]:
    """Validate one API Gateway request and write its events as one raw object to ``bucket``.

    ``server_time`` is the Lambda's clock when the request arrived: API Gateway's timeEpoch is
    believed only within RECEIVE_TIME_TOLERANCE of it. Without it (an in-process caller that
    replays history, such as tools/synthetic_shop.py write-raw) any representable timeEpoch is.
    ``redacted_query_parameters`` are lower-case names, as privacy.parse_redacted_names gives.
    """
    request_context = event.get("requestContext") or {}
    request_id = request_context.get("requestId") or aws_request_id
    if request_id is not None:
        request_id = str(request_id)[:REQUEST_ID_MAX_CHARS]
    time_epoch_ms = request_context.get("timeEpoch")
    received_at, distrust = _received_at(time_epoch_ms, server_time)
    if distrust:
        logs.log(
            logger,
            logging.WARNING,
            "receive time not believed",
            reason=distrust,
            time_epoch_ms=time_epoch_ms,
            received_at=mapping.format_timestamp(received_at),
            request_id=request_id,
        )
    try:
        records = _raw_records(
            event,
            received_at=received_at,
            request_id=request_id,
            redacted_query_parameters=redacted_query_parameters,
        )
        body = _raw_object(records)
    except RequestRejected as rejection:
        _log_rejection(rejection, event, request_id, redacted_query_parameters)
        return _error_response(
            rejection.status,
            rejection.error,
            rejection.message,
            rejection.problems,
            allow_post=rejection.status == 405,
        )

    key = partitions.object_key(received_at, uuid.uuid4().hex)
    try:
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=raw_format.CONTENT_TYPE)
    except (BotoCoreError, ClientError) as error:
        logs.log(
            logger,
            logging.ERROR,
            "raw object not written",
            error="storage_unavailable",
            exception=f"{type(error).__name__}: {error}",
            bucket=bucket,
            object_key=key,
            events=len(records),
            request_id=request_id,
            **logs.embedded_metrics({"StorageFailures": (1, "Count")}, METRIC_DIMENSIONS),
        )
        return _error_response(
            503, "storage_unavailable", "The events could not be stored; please retry."
        )

    logs.log(
        logger,
        logging.INFO,
        "request accepted",
        accepted_events=len(records),
        bucket=bucket,
        object_key=key,
        object_bytes=len(body),
        request_id=request_id,
        **logs.embedded_metrics(
            {"AcceptedEvents": (len(records), "Count"), "RawObjectBytes": (len(body), "Bytes")},
            METRIC_DIMENSIONS,
        ),
    )
    return _json_response(
        202, {"accepted": len(records), "event_ids": [record["event_id"] for record in records]}
    )


def _raw_records(
    event: dict[str, Any],
    *,
    received_at: datetime,
    request_id: str | None,
    redacted_query_parameters: Collection[str],
) -> list[dict[str, Any]]:
    """The raw records of an acceptable request; RequestRejected says why one is not.

    Only what the record is made of is read from the request: never ``requestContext.http``'s
    sourceIp, which is personal data the platform has no use for.
    """
    http = (event.get("requestContext") or {}).get("http") or {}
    headers = {str(name).lower(): value for name, value in (event.get("headers") or {}).items()}
    _require_post(http.get("method"))
    _require_media_type(headers.get("content-type"))
    events, is_batch = _parse_events(_body_bytes(event))
    _require_valid_events(events, is_batch)
    user_agent = _user_agent(http.get("userAgent") or headers.get("user-agent"))
    records = [
        mapping.new_raw_record(
            privacy.redact_event_urls(incoming, redacted_query_parameters),
            received_at=received_at,
            request_id=request_id,
            user_agent=user_agent,
        )
        for incoming in events
    ]
    _require_valid_records(records, is_batch)
    return records


def _require_post(method: Any) -> None:
    if method != "POST":
        raise RequestRejected(405, "method_not_allowed", f"Only POST is accepted, not {method}.")


def _require_media_type(content_type: Any) -> None:
    # Parameters such as "; charset=utf-8" do not matter: the body must be UTF-8 either way.
    media_type = str(content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        sent = f"not {media_type}" if media_type else "and the request has none"
        raise RequestRejected(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json or text/plain, {sent}.",
        )


def _body_bytes(event: dict[str, Any]) -> bytes:
    raw_body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw_body, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestRejected(
                400, "invalid_base64", f"The base64-encoded body does not decode: {error}."
            ) from None
    else:
        try:
            body = raw_body.encode("utf-8")
        except UnicodeEncodeError as error:
            raise RequestRejected(
                400, "invalid_encoding", f"The body is not UTF-8 text: {error}."
            ) from None
    if len(body) > MAX_BODY_BYTES:
        raise RequestRejected(
            413,
            "body_too_large",
            f"The body has {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted.",
        )
    if not body:
        raise RequestRejected(400, "empty_body", "The body is empty; send a JSON event.")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    # 1e400 parses to infinity, which JSON cannot write back: the raw line would be invalid.
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


def _parse_events(body: bytes) -> tuple[list[Any], bool]:
    """The events of a body, and whether it was a batch (an array)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestRejected(
            400, "invalid_encoding", f"The body is not UTF-8 text: {error}."
        ) from None
    try:
        document = json.loads(
            text,
            parse_int=raw_format.exact_integer,
            parse_float=_finite_float,
            parse_constant=_reject_constant,
        )
    except raw_format.IntegerOutOfRange as error:
        raise RequestRejected(
            400, "number_out_of_range", f"The body cannot be stored: {error}."
        ) from None
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        raise RequestRejected(
            400, "invalid_json", f"The body is not valid JSON: {error}."
        ) from None
    # Only a body that spells U+0000 (JSON has no other way) is walked: most never pay for it.
    if raw_format.NUL_ESCAPE in text and (unstorable := raw_format.unstorable_value(document)):
        raise RequestRejected(
            400, "unstorable_character", f"The body cannot be stored: {unstorable}."
        )
    if isinstance(document, dict):
        return [document], False
    if not isinstance(document, list):
        raise RequestRejected(
            400,
            "invalid_body_shape",
            "The body must be a JSON object (one event) or an array of them (a batch), "
            f"not a JSON {_json_type(document)}.",
        )
    if not document:
        raise RequestRejected(400, "empty_batch", "The batch is an empty array; send events.")
    if len(document) > MAX_EVENTS_PER_REQUEST:
        raise RequestRejected(
            413,
            "too_many_events",
            f"The batch has {len(document)} events; at most {MAX_EVENTS_PER_REQUEST} "
            "are accepted per request.",
        )
    return document, True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _batch_problems(
    items: list[Any], definition: str, is_batch: bool
) -> tuple[int, list[contract.Problem]]:
    """How many items break ``definitions/<definition>``, and every problem of each, with paths
    prefixed by the item's index in a batch. Valid items cost only the fast check."""
    per_item = [
        contract.problems(item, definition, f"/{index}" if is_batch else "")
        for index, item in enumerate(items)
    ]
    return sum(1 for problems in per_item if problems), [p for ps in per_item for p in ps]


def _require_valid_events(events: list[Any], is_batch: bool) -> None:
    invalid, found = _batch_problems(events, contract.INCOMING_EVENT, is_batch)
    if invalid:
        raise RequestRejected(
            422,
            "contract_violation",
            f"{invalid} of {len(events)} events break the event contract; nothing was stored.",
            found,
        )


def _require_valid_records(records: list[dict[str, Any]], is_batch: bool) -> None:
    # Every line written must load: the record, not only the event, satisfies the contract, so a
    # future change of the enrichment cannot write lines the ETL would reject.
    invalid, found = _batch_problems(records, contract.RAW_RECORD, is_batch)
    if invalid:
        raise RequestRejected(
            422,
            "contract_violation",
            "The events cannot be stored as valid raw records; nothing was stored.",
            found,
        )


def _received_at(time_epoch_ms: Any, server_time: datetime | None) -> tuple[datetime, str | None]:
    """The receive time of a request, and why API Gateway's ``timeEpoch`` was not believed
    (None when it was): absent or not an integer, beyond the calendar, or further than
    RECEIVE_TIME_TOLERANCE from ``server_time`` (when given), which then stands in for it."""
    server_clock = server_time or datetime.now(UTC)
    if time_epoch_ms is None:
        return server_clock, "the request context has no timeEpoch"
    if not isinstance(time_epoch_ms, int) or isinstance(time_epoch_ms, bool):
        return server_clock, "timeEpoch is not an integer of milliseconds"
    try:
        # Exact to the millisecond (no float division).
        api_gateway_time = UNIX_EPOCH + timedelta(milliseconds=time_epoch_ms)
    except OverflowError:
        return server_clock, "timeEpoch lies beyond the calendar"
    if server_time is not None:
        lead = api_gateway_time - server_time
        if abs(lead) > RECEIVE_TIME_TOLERANCE:
            direction = "ahead of" if lead > timedelta(0) else "behind"
            return server_clock, (
                f"timeEpoch is {abs(lead)} {direction} the Lambda's clock, "
                f"more than the {RECEIVE_TIME_TOLERANCE} tolerated"
            )
    return api_gateway_time, None


def _user_agent(value: Any) -> str | None:
    return str(value)[:USER_AGENT_MAX_CHARS] if value else None


def _raw_object(records: list[dict[str, Any]]) -> bytes:
    try:
        return raw_format.encode_raw_object(records)
    except UnicodeEncodeError:
        # JSON may escape half a surrogate pair ("\ud800"): no UTF-8 text, no database, holds it.
        raise RequestRejected(
            400,
            "invalid_json",
            "The body escapes a lone UTF-16 surrogate (such as \\ud800), which is no character.",
        ) from None
    except RecursionError:  # nesting that parsed, but one level deeper inside a record
        raise RequestRejected(400, "invalid_json", "The JSON is nested too deeply.") from None


def _shorten(text: str, limit: int = MAX_REASON_CHARS) -> str:
    # Keep both ends: jsonschema puts the offending value first and the rule last.
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return f"{text[:head]} … {text[-(limit - head) :]}"


def _problem_dicts(problems: list[contract.Problem]) -> list[dict[str, str]]:
    return [{"path": p.path, "reason": _shorten(p.reason)} for p in problems]


def _body_excerpt(event: dict[str, Any]) -> tuple[str, int]:
    """The first LOGGED_BODY_BYTES of the body as text, and the body's full size in bytes."""
    raw_body = event.get("body") or ""
    try:
        body = base64.b64decode(raw_body, validate=True) if event.get("isBase64Encoded") else b""
    except (binascii.Error, ValueError):
        body = b""
    if not body:
        body = str(raw_body).encode("utf-8", "backslashreplace")
    return body[:LOGGED_BODY_BYTES].decode("utf-8", "replace"), len(body)


def _log_rejection(
    rejection: RequestRejected,
    event: dict[str, Any],
    request_id: Any,
    redacted_query_parameters: Collection[str],
) -> None:
    """One WARNING line: why, and what was sent. The body and the problems (which quote values)
    lose the redacted query parameters too, so a refused request leaks no more than a stored one.
    The request's sourceIp, like the rest of requestContext, is not logged."""

    def redacted(text: str) -> str:
        return privacy.redact_query_parameters_in_text(text, redacted_query_parameters)

    excerpt, body_bytes = _body_excerpt(event)
    fields: dict[str, Any] = {
        "status": rejection.status,
        "error": rejection.error,
        "reason": rejection.message,
        "request_id": request_id,
        "body": redacted(excerpt),
        "body_bytes": body_bytes,
        "body_truncated": body_bytes > LOGGED_BODY_BYTES,
    }
    if rejection.problems:
        fields["problems"] = [
            {"path": problem["path"], "reason": redacted(problem["reason"])}
            for problem in _problem_dicts(rejection.problems[:LOGGED_PROBLEMS])
        ]
        fields["problem_count"] = len(rejection.problems)
    fields.update(logs.embedded_metrics({"RejectedRequests": (1, "Count")}, METRIC_DIMENSIONS))
    logs.log(logger, logging.WARNING, "request rejected", **fields)


def _json_response(
    status: int, body: dict[str, Any], extra_headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(extra_headers or {})},
        "body": json.dumps(body),
    }


def _error_response(
    status: int,
    error: str,
    message: str,
    problems: list[contract.Problem] | None = None,
    *,
    allow_post: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message}
    if problems:
        body["problems"] = _problem_dicts(problems)
    return _json_response(status, body, {"allow": "POST"} if allow_post else None)

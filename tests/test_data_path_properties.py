"""The data path, end to end: whatever POST /clickstream accepts either loads or is kept in
etl_rejects with its reason, one bad line never holds back another, and the ETL run succeeds.

Every example goes through the real parts: a batch is sent to Lambda Ingest's handler, which
writes to a real (moto) S3; a scheduled ETL run loads it into a real, migrated PostgreSQL. The
batches are contract-valid events drawn from the contract file itself (tests/strategies.py),
with hostile strings and numbers put into their text and id fields, and a clean marker event
that must always load beside them; a second, clean request is the neighbour in another object.

The ingest must answer each request with the status and error the README gives it, and a
refused request must write nothing. What it accepts must load with its values exactly as sent,
or be a reject with a reason; and only a line the README lets the ETL reject although it meets
the contract may be one: U+0000, which no PostgreSQL text holds, or an integer the ETL's JSON
reader cannot read exactly. The ingest refuses both, so in effect every accepted line loads.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import event as count_example_as
from hypothesis import strategies as st
from psycopg2 import sql

from clickstream import loader
from clickstream.contract import CONTRACT
from clickstream.privacy import DEFAULT_REDACTED_QUERY_PARAMETERS
from ingest import handler
from tests.strategies import (
    EDGE_TIMESTAMPS,
    NUL,
    contract_values,
    hostile_ids,
    hostile_text,
    json_values,
    max_length_at,
    property_names,
)

TRACKER, WAREHOUSE = "trackerEvent", "warehouseEvent"
MAX_BATCH_EVENTS = 20
MAX_BODY_BYTES = 1024 * 1024  # README, POST /clickstream: 413 over 1 MiB
USER_AGENT_MAX_CHARS = 1024  # README, Raw objects: the User-Agent, cut at the contract's 1024
# The ETL runs a little after the receive time, as the hourly schedule would.
RECEIVE_TO_RUN = timedelta(minutes=3)

# The contract itself is the oracle of what is valid: jsonschema reads it independently of
# fastjsonschema, which the ingest runs.
INCOMING_EVENT_VALIDATOR = jsonschema.Draft7Validator(
    {"$ref": "#/definitions/incomingEvent", "definitions": CONTRACT["definitions"]}
)

# Where each column of clickstream_events finds its value in either shape of an event
# (README, "The event contract"); columns added by later migrations are checked when present.
COLUMN_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    TRACKER: {
        "event_name": ("eventName",),
        "user_id": ("userId",),
        "user_login_state": ("userLoginState",),
        "identity_source": ("identitySource",),
        "client_id": ("clientId",),
        "session_id": ("sessionId",),
        "is_first_visit": ("isFirstVisit",),
        "context_product_id": ("product", "id"),
        "context_product_name": ("product", "name"),
        "context_product_category": ("product", "category"),
        "context_product_brand": ("product", "brand"),
        "context_product_price": ("product", "price"),
        "context_product_discount_price": ("product", "discountPrice"),
        "context_product_url_path": ("product", "urlPath"),
        "page_url": ("pageUrl",),
        "referrer": ("referrer",),
        "client_event_id": ("eventId",),
        "element": ("element",),
    },
    WAREHOUSE: {
        **{
            column: (column,)
            for column in (
                "event_name",
                "user_id",
                "user_login_state",
                "identity_source",
                "client_id",
                "session_id",
                "is_first_visit",
                "context_product_id",
                "context_product_name",
                "context_product_category",
                "context_product_brand",
                "context_product_price",
                "context_product_discount_price",
                "context_product_url_path",
                "page_url",
                "referrer",
                "element",
            )
        },
        "client_event_id": ("event_id",),
    },
}
# Text stored as sent; "" may be stored as NULL (a blank referrer means none).
TEXT_COLUMNS = (
    "event_name",
    "user_id",
    "client_id",
    "session_id",
    "context_product_name",
    "context_product_category",
    "context_product_brand",
    "context_product_url_path",
    "page_url",
    "referrer",
    "client_event_id",
)
# Stored as sent when sent; the ETL derives them from user_id otherwise.
DERIVED_WHEN_ABSENT = ("user_login_state", "identity_source")
PRICE_COLUMNS = ("context_product_price", "context_product_discount_price")
CENT = Decimal("0.01")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# The text fields hostile strings go into, per shape.
ELEMENT_TEXT_PATHS = (
    ("element", "tag"),
    ("element", "id"),
    ("element", "role"),
    ("element", "text"),
)
TEXT_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    TRACKER: (
        ("pageUrl",),
        ("referrer",),
        ("clientId",),
        ("sessionId",),
        ("userId",),
        ("product", "name"),
        ("product", "category"),
        ("product", "brand"),
        ("product", "urlPath"),
        *ELEMENT_TEXT_PATHS,
    ),
    WAREHOUSE: (
        ("page_url",),
        ("referrer",),
        ("client_id",),
        ("session_id",),
        ("user_id",),
        ("context_product_name",),
        ("context_product_category",),
        ("context_product_brand",),
        ("context_product_url_path",),
        *ELEMENT_TEXT_PATHS,
    ),
}
# The client's clocks (README, "Every clock is kept"), and the id a retry repeats.
CLOCK_FIELDS = {TRACKER: ("eventTimestamp", "sentAt"), WAREHOUSE: ("event_timestamp", "sent_at")}
ID_FIELDS = {TRACKER: "eventId", WAREHOUSE: "event_id"}
CLIENT_CLOCK_MAX_LAG = timedelta(days=7)  # README: believed 7 days before the receive time
CLIENT_CLOCK_MAX_LEAD = timedelta(minutes=5)  # and 5 minutes after it
URL_PATHS = frozenset({("pageUrl",), ("referrer",), ("page_url",)})
ID_PATHS = {TRACKER: ("product", "id"), WAREHOUSE: ("context_product_id",)}
# The ingest redacts query parameters with these names from page URLs (README, "Privacy by
# default"): generated URLs never mention them, so that what is stored is what was sent.
SECRET_PARAMETER = re.compile(
    "|".join(sorted(map(re.escape, DEFAULT_REDACTED_QUERY_PARAMETERS))), re.IGNORECASE
)
# element.dataset keys that checkout events fill, which the ETL reads into order columns.
DATASET_KEYS = st.sampled_from(("orderId", "orderNumber", "cartId", "total", "itemCount", "x"))

MARKER_EVENT_ID = "0b5d7c7e-3f0a-4c3e-9a51-6f2d8e4c1a01"
NEIGHBOUR_EVENT_ID = "0b5d7c7e-3f0a-4c3e-9a51-6f2d8e4c1a02"
MARKER_EVENT = {
    "eventId": MARKER_EVENT_ID,
    "eventName": "page_view",
    "pageUrl": "https://shop.example.vn/marker",
    "clientId": "marker-client",
    "sessionId": "marker-session",
    "isFirstVisit": False,
    "product": {"id": "p-1", "name": "Marker", "price": 1000},
}
NEIGHBOUR_EVENT = {
    "event_id": NEIGHBOUR_EVENT_ID,
    "event_name": "product_view",
    "page_url": "https://shop.example.vn/neighbour",
    "client_id": "neighbour-client",
    "session_id": "neighbour-session",
    "context_product_id": 7,
}
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"
USER_AGENTS = (
    st.sampled_from(
        (
            BROWSER,
            'Mozilla/5.0 "quoted", \\. \\N back\\slash\tand tab',
            "Mozilla/5.0 (Linux; Android 14) Ti\u1ebfng Vi\u1ec7t \U0001f600",
            "x" * (USER_AGENT_MAX_CHARS + 10),
        )
    )
    | st.none()
)


@dataclass(frozen=True)
class ClientRequest:
    """One POST /clickstream as a client sends it."""

    body: str
    content_type: str = "application/json"
    base64_encoded: bool = False
    user_agent: str | None = BROWSER

    def events(self) -> list[dict[str, Any]]:
        """The events as the ingest reads them (a batch, or one event)."""
        document = json.loads(self.body)
        return document if isinstance(document, list) else [document]


# --- strategies ------------------------------------------------------------------------------


def _shape(event: dict[str, Any]) -> str:
    """README: a body with eventName is read as the tracker shape, any other as the warehouse's."""
    return TRACKER if "eventName" in event else WAREHOUSE


def _put(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = event
    for name in path[:-1]:
        if not isinstance(target.get(name), dict):
            target[name] = {}
        target = target[name]
    target[path[-1]] = value


@functools.cache
def _hostile_urls(max_length: int | None, refusable: bool) -> st.SearchStrategy[str]:
    texts = hostile_text(max_length, refusable=refusable)
    urls = st.builds(
        lambda path, query: f"https://shop.example.vn/{path}?q={query}",
        hostile_text(64, refusable=refusable),
        hostile_text(64, refusable=refusable),
    )
    return (texts | urls).filter(lambda url: not SECRET_PARAMETER.search(url))


@st.composite
def hostile_events(draw: st.DrawFn, *, refusable: bool) -> dict[str, Any]:
    """A contract-valid event, with hostile values in some of its text and id fields, its
    click target's dataset and unknown top-level fields."""
    event = draw(contract_values("incomingEvent"))
    shape = _shape(event)
    for url_path in URL_PATHS & set(COLUMN_PATHS[shape].values()):
        url = _at(event, url_path)
        if isinstance(url, str) and SECRET_PARAMETER.search(url):
            _put(event, url_path, None)
    for path in draw(st.lists(st.sampled_from(TEXT_PATHS[shape]), max_size=4, unique=True)):
        max_length = max_length_at(shape, path)
        if path in URL_PATHS:
            value = draw(_hostile_urls(max_length, refusable))
        else:
            value = draw(hostile_text(max_length, refusable=refusable))
        _put(event, path, value)
    if draw(st.booleans()):
        _put(event, ID_PATHS[shape], draw(hostile_ids(refusable=refusable)))
    if draw(st.booleans()):
        event[ID_FIELDS[shape]] = str(draw(st.uuids()))
    for name in CLOCK_FIELDS[shape]:
        if name in property_names(shape) and draw(st.booleans()):
            event[name] = draw(_client_clocks())
    dataset = draw(st.dictionaries(DATASET_KEYS, json_values(refusable=refusable), max_size=3))
    for key, value in dataset.items():
        _put(event, ("element", "dataset", key), value)
    unknown = st.dictionaries(_unknown_names(shape), json_values(refusable=refusable), max_size=2)
    event.update(draw(unknown))
    return event


@functools.cache
def _client_clocks() -> st.SearchStrategy[str]:
    """Device times: at the calendar's edges, or around now, inside and outside the window in
    which the ETL believes a device clock, in any time zone."""
    near_now = st.builds(
        _rfc3339,
        st.sampled_from((-8 * 24 * 3600, -7 * 24 * 3600 + 60, -3600, -1, 0, 240, 360, 86400)),
        st.sampled_from((0, 7 * 60, -(5 * 60 + 30), 14 * 60)),
    )
    return st.sampled_from(EDGE_TIMESTAMPS) | near_now


def _rfc3339(seconds_from_now: int, offset_minutes: int) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    text = moment.astimezone(zone).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@functools.cache
def _unknown_names(shape: str) -> st.SearchStrategy[str]:
    """Names of top-level fields the contract does not know (kept in the raw object only);
    never eventName, which would make a warehouse-shaped event a tracker-shaped one."""
    known = property_names(shape) | {"eventName"}
    return (hostile_text(64) | st.text(max_size=10)).filter(
        lambda name: name not in known and NUL not in name
    )


@st.composite
def client_requests(draw: st.DrawFn) -> ClientRequest:
    """A batch of 1 to 20 events: hostile ones around the clean marker event.

    In one batch in four, one event may hold what the ingest refuses (U+0000, a lone surrogate,
    an integer beyond 64 bits, an id beyond the contract's bound, a string over its maxLength),
    which refuses the whole batch; everything else is what the data path must accept and store.
    """
    events = draw(st.lists(hostile_events(refusable=False), max_size=MAX_BATCH_EVENTS - 2))
    retries = st.tuples(st.integers(0, len(events)), st.integers(0, len(events)), st.booleans())
    for original, retry, upper_case in draw(st.lists(retries, max_size=2)):
        if original < retry < len(events):  # a retry repeats the id of an earlier event
            sent_id = events[original].get(ID_FIELDS[_shape(events[original])])
            if sent_id is not None:
                events[retry][ID_FIELDS[_shape(events[retry])]] = (
                    sent_id.upper() if upper_case else sent_id
                )
    if draw(st.integers(0, 3)) == 3:
        events.insert(draw(st.integers(0, len(events))), draw(hostile_events(refusable=True)))
    events.insert(draw(st.integers(0, len(events))), MARKER_EVENT)
    base64_encoded = draw(st.booleans())
    ensure_ascii = base64_encoded or draw(st.booleans())  # a base64 body is bytes, so UTF-8
    separators = draw(st.sampled_from(((", ", ": "), (",", ":"))))
    return ClientRequest(
        body=json.dumps(events, ensure_ascii=ensure_ascii, separators=separators),
        content_type=draw(st.sampled_from(("application/json", "text/plain;charset=UTF-8"))),
        base64_encoded=base64_encoded,
        user_agent=draw(USER_AGENTS),
    )


# --- the data path ---------------------------------------------------------------------------


def api_gateway_request(request: ClientRequest, received_at: datetime) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) request as Lambda Ingest receives it."""
    body = request.body
    if request.base64_encoded:
        body = base64.b64encode(body.encode("utf-8")).decode("ascii")
    headers = {"host": "api.example.com", "content-type": request.content_type}
    http = {"method": "POST", "path": "/clickstream", "protocol": "HTTP/1.1"}
    if request.user_agent is not None:
        headers["user-agent"] = http["userAgent"] = request.user_agent
    return {
        "version": "2.0",
        "routeKey": "POST /clickstream",
        "rawPath": "/clickstream",
        "headers": headers,
        "requestContext": {
            "http": http,
            "requestId": "req-property",
            "routeKey": "POST /clickstream",
            "timeEpoch": int(received_at.timestamp() * 1000),
        },
        "isBase64Encoded": request.base64_encoded,
        "body": body,
    }


@dataclass(frozen=True)
class Sent:
    """A request, what the ingest answered, and the raw object it wrote, if any."""

    request: ClientRequest
    received_at: datetime
    status: int
    response: dict[str, Any]
    written_keys: frozenset[str]


def stored_keys(s3, bucket: str) -> set[str]:
    return {
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    }


def send(s3, bucket: str, request: ClientRequest, received_at: datetime) -> Sent:
    before = stored_keys(s3, bucket)
    response = handler.handle_request(
        api_gateway_request(request, received_at), s3_client=s3, bucket=bucket
    )
    return Sent(
        request,
        received_at,
        response["statusCode"],
        json.loads(response["body"]),
        frozenset(stored_keys(s3, bucket) - before),
    )


def start_afresh(warehouse, s3, bucket: str) -> None:
    """Make an example independent of the ones before it in the same test: no raw objects
    (one a run failed on would be loaded again, and fail this example too), no events or
    rejects (generated ids repeat across examples)."""
    keys = sorted(stored_keys(s3, bucket))
    for start in range(0, len(keys), 1000):
        objects = [{"Key": key} for key in keys[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    warehouse.cluster.execute_autocommit(
        "TRUNCATE public.clickstream_events, public.etl_rejects", dbname=warehouse.database
    )


def run_etl(warehouse, s3, bucket: str, now: datetime) -> loader.RunReport:
    """A scheduled run, listing only the hours of this example (earlier ones are loaded).

    On an empty ledger (a test's first example) the run lists from ``now`` minus the initial
    lookback; ``now`` is RECEIVE_TO_RUN after the receive, which can be the next hour, so one
    hour of lookback keeps the receive hour in the listing.
    """
    connection = warehouse.etl_connection()
    try:
        return loader.run_scheduled(
            connection, s3, bucket, now=now, lookback_hours=0, initial_lookback_hours=1
        )
    finally:
        connection.close()


# --- what was sent, and what may happen to it ------------------------------------------------


def _at(event: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(event, dict):
            return None
        event = event.get(name)
    return event


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def holds_nul(event: Any) -> bool:
    return any(isinstance(leaf, str) and NUL in leaf for leaf in _leaves(event))


def holds_unreadable_integer(event: Any) -> bool:
    """An integer no 64-bit JSON reader (orjson, the ETL's) reads exactly."""
    return any(
        isinstance(leaf, int) and not isinstance(leaf, bool) and not -(2**63) <= leaf < 2**64
        for leaf in _leaves(event)
    )


def holds_lone_surrogate(event: Any) -> bool:
    return any(isinstance(leaf, str) and LONE_SURROGATE.search(leaf) for leaf in _leaves(event))


def may_be_rejected(event: Any) -> bool:
    """What the README lets the ETL reject although the ingest took it: U+0000 (no PostgreSQL
    text holds it) and integers the ETL's JSON reader cannot read exactly."""
    return holds_nul(event) or holds_unreadable_integer(event)


def expected_answer(request: ClientRequest) -> tuple[int, frozenset[str]]:
    """The status and the error codes the README gives ``request`` (no error for a 202)."""
    if len(request.body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        return 413, frozenset({"body_too_large"})
    events = request.events()
    surrogate = any(holds_lone_surrogate(event) for event in events)
    if surrogate and not request.body.isascii():
        return 400, frozenset({"invalid_encoding"})  # the body itself is no UTF-8 text
    unstorable = set()
    if any(holds_unreadable_integer(event) for event in events):
        unstorable.add("number_out_of_range")
    if any(holds_nul(event) for event in events):
        unstorable.add("unstorable_character")
    if unstorable:
        return 400, frozenset(unstorable)
    if not all(INCOMING_EVENT_VALIDATOR.is_valid(event) for event in events):
        return 422, frozenset({"contract_violation"})
    if surrogate:  # escaped in JSON, half a surrogate pair is no character, no UTF-8 text
        return 400, frozenset({"invalid_json"})
    return 202, frozenset()


def _blank(value: Any) -> Any:
    return None if value == "" else value


def _exact_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return _blank(value)
    assert float(value).is_integer()
    return str(int(value))


def _cents(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _moment(text: str | None) -> datetime | None:
    """A device time as the instant it names; None for none, or for what names no instant of
    the calendar (2025-02-29, offset 99:99, year 0000 or 1 before UTC's first day)."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _json_value(text: str | None) -> Any:
    """A JSON text compared by value: numbers as decimals (1e308 == 10**308, -0.0 == 0)."""
    if text is None:
        return None
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def expected_row(event: dict[str, Any], sent: Sent, columns: frozenset[str]) -> dict[str, Any]:
    """The values of ``columns`` that ``event`` must have in clickstream_events."""
    shape = _shape(event)
    values = {column: _at(event, path) for column, path in COLUMN_PATHS[shape].items()}
    expected: dict[str, Any] = {column: _blank(values[column]) for column in TEXT_COLUMNS}
    for column in DERIVED_WHEN_ABSENT:
        if values[column]:
            expected[column] = values[column]
    expected["is_first_visit"] = values["is_first_visit"]
    expected["context_product_id"] = _exact_id(values["context_product_id"])
    for column in PRICE_COLUMNS:
        expected[column] = _cents(values[column])
    element = values["element"]
    expected["element"] = None if element is None else _json_value(json.dumps(element))
    user_agent = sent.request.user_agent
    expected["user_agent"] = user_agent[:USER_AGENT_MAX_CHARS] if user_agent else None
    expected["received_at"] = sent.received_at
    for column, name in zip(
        ("client_timestamp", "client_sent_at"), CLOCK_FIELDS[shape], strict=True
    ):
        expected[column] = _moment(event.get(name))
    return {column: value for column, value in expected.items() if column in columns}


def stored_rows(
    warehouse, event_ids: list[str], columns: frozenset[str]
) -> dict[str, dict[str, Any]]:
    """The rows of ``event_ids``, by event_id: ``columns`` as comparable Python values."""
    ordered = sorted(columns)
    selected = [
        sql.SQL("{}::text").format(sql.Identifier(c)) if c == "element" else sql.Identifier(c)
        for c in ordered
    ]
    query = sql.SQL(
        "SELECT event_id::text, {} FROM public.clickstream_events WHERE event_id = ANY(%s::uuid[])"
    ).format(sql.SQL(", ").join(selected))
    connection = warehouse.admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, (event_ids,))
            fetched = cursor.fetchall()
    finally:
        connection.close()
    rows = {}
    for event_id, *values in fetched:
        row = dict(zip(ordered, values, strict=True))
        for column in TEXT_COLUMNS:
            if column in row:
                row[column] = _blank(row[column])
        if "element" in row:
            row["element"] = _json_value(row["element"])
        rows[event_id] = row
    return rows


def rejects_of(warehouse, object_key: str) -> dict[int, tuple[str, str]]:
    """etl_rejects of one raw object: line number → (reason, raw text)."""
    found = warehouse.query(
        "SELECT line_number, reason, raw_text FROM public.etl_rejects WHERE object_key = %s",
        (object_key,),
    )
    return {line: (reason, raw_text) for line, reason, raw_text in found}


_COLUMNS_BY_DATABASE: dict[str, frozenset[str]] = {}


def event_columns(warehouse) -> frozenset[str]:
    """The columns of clickstream_events that the checks compare (read once per database)."""
    if warehouse.database not in _COLUMNS_BY_DATABASE:
        _COLUMNS_BY_DATABASE[warehouse.database] = _compared_columns(warehouse)
    return _COLUMNS_BY_DATABASE[warehouse.database]


def _compared_columns(warehouse) -> frozenset[str]:
    present = {
        name
        for (name,) in warehouse.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'clickstream_events'"
        )
    }
    expected = {*TEXT_COLUMNS, *DERIVED_WHEN_ABSENT, *PRICE_COLUMNS}
    expected |= {"is_first_visit", "context_product_id", "element", "user_agent", "received_at"}
    expected |= {"event_timestamp", "client_timestamp", "client_sent_at"}
    return frozenset(present & expected)


# --- the guarantee ---------------------------------------------------------------------------


def _note(text: str) -> None:
    """Printed with a falsifying example; the plain tests say it in their assertions."""
    if currently_in_test_context():
        note(text)


def _shown(value: Any, limit: int = 400) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def assert_answered_as_the_readme_says(sent: Sent) -> None:
    status, errors = expected_answer(sent.request)
    answered = f"status {sent.status} {_shown(sent.response)}"
    assert sent.status == status, f"{answered}; the README says {status} {sorted(errors)}"
    if status == 202:
        assert len(sent.written_keys) == 1, f"an accepted request wrote {sent.written_keys}"
        assert len(sent.response["event_ids"]) == len(sent.request.events())
    else:
        assert sent.response.get("error") in errors, answered
        assert not sent.written_keys, f"a refused request ({answered}) wrote {sent.written_keys}"


def assert_loaded_or_rejected(
    warehouse, sent: Sent, columns: frozenset[str], must_load: frozenset[int] = frozenset()
) -> tuple[int, int]:
    """Every line of the request's raw object is a row with exactly the values sent, or a
    reject with its reason, and only where a reject is allowed; the lines of ``must_load``
    (0-based indexes of events) are rows. Returns (lines, distinct event ids loaded)."""
    [object_key] = sent.written_keys
    events = sent.request.events()
    event_ids: list[str] = sent.response["event_ids"]
    rejects = rejects_of(warehouse, object_key)
    shown_rejects = {line: (reason, _shown(raw, 300)) for line, (reason, raw) in rejects.items()}
    _note(f"rejects of {object_key}: {shown_rejects}")
    rows = stored_rows(warehouse, sorted(set(event_ids)), columns)
    _note(f"stored rows: {_shown(rows, 3000)}")

    first_loaded_line: dict[str, int] = {}
    for index, (event, event_id) in enumerate(zip(events, event_ids, strict=True)):
        line = index + 1
        if line in rejects:
            reason, raw_text = rejects[line]
            assert reason.strip(), f"line {line} is rejected without a reason: {_shown(raw_text)}"
            assert index not in must_load, f"the clean line {line} was rejected: {reason}"
            assert may_be_rejected(event), (
                f"line {line}, a contract-valid event the warehouse can hold, was rejected: "
                f"{reason!r}; event {_shown(event)}; all rejects {shown_rejects}"
            )
            continue
        assert event_id in rows, (
            f"line {line} (event {event_id}) is neither loaded nor rejected; "
            f"event {_shown(event)}; rejects {shown_rejects}"
        )
        first_loaded_line.setdefault(event_id, index)

    for event_id, index in first_loaded_line.items():
        expected = expected_row(events[index], sent, columns)
        stored = rows[event_id]
        differences = {
            column: (f"expected {_shown(value, 200)}", f"stored {_shown(stored[column], 200)}")
            for column, value in expected.items()
            if stored[column] != value
        }
        # README, "Every clock is kept": whichever clock the event time comes from, it lies
        # within the window around the receive time in which a device clock is believed.
        earliest = sent.received_at - CLIENT_CLOCK_MAX_LAG
        latest = sent.received_at + CLIENT_CLOCK_MAX_LEAD
        if not earliest <= stored.get("event_timestamp", sent.received_at) <= latest:
            differences["event_timestamp"] = (
                f"expected from {earliest.isoformat()} to {latest.isoformat()}",
                f"stored {stored['event_timestamp'].isoformat()}",
            )
        assert not differences, (
            f"line {index + 1} (event {event_id}) is stored with other values than sent: "
            f"{differences}"
        )
    return len(events), len(first_loaded_line)


def assert_the_data_path_keeps(
    warehouse, s3, bucket: str, request: ClientRequest
) -> tuple[list[Sent], loader.RunReport]:
    """Send ``request`` and a clean neighbour, run the ETL, and check the guarantee; return
    the requests that were accepted and the run's report."""
    received_at = datetime.now(UTC).replace(microsecond=0)
    _note(f"body: {request.body!r}")
    sent = send(s3, bucket, request, received_at)
    neighbour = send(s3, bucket, ClientRequest(json.dumps([NEIGHBOUR_EVENT])), received_at)
    assert neighbour.status == 202, f"the clean neighbour was refused: {neighbour.response}"
    assert_answered_as_the_readme_says(sent)
    count_example_as(f"ingest answered {sent.status} {sent.response.get('error', '')}".strip())

    report = run_etl(warehouse, s3, bucket, received_at + RECEIVE_TO_RUN)
    _note(f"ETL report: {report.as_dict()}")
    assert report.status == "succeeded", f"the ETL run {report.status}: {report.detail}"

    columns = event_columns(warehouse)
    lines, loaded = assert_loaded_or_rejected(warehouse, neighbour, columns, frozenset({0}))
    if sent.status == 202:
        marker = [i for i, e in enumerate(sent.request.events()) if e == MARKER_EVENT]
        sent_lines, sent_loaded = assert_loaded_or_rejected(
            warehouse, sent, columns, frozenset(marker)
        )
        lines, loaded = lines + sent_lines, loaded + sent_loaded
        if sent_lines > sent_loaded:
            count_example_as("duplicates or rejects in the batch")
    accounted = report.events_loaded + report.duplicates_skipped + report.rejected_lines
    assert accounted == lines, (
        f"{lines} lines written, but the run accounts for {accounted}: {report.as_dict()}"
    )
    assert report.events_loaded == loaded, f"{loaded} events stored: {report.as_dict()}"
    return [accepted for accepted in (sent, neighbour) if accepted.status == 202], report


# --- the properties --------------------------------------------------------------------------

# Each example sends real requests and runs the real ETL (about half a second), so few examples,
# no deadline; the fixtures are per test, and start_afresh makes each example independent.
END_TO_END = settings(
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@settings(END_TO_END, max_examples=40)
@given(request=client_requests())
def test_whatever_the_ingest_accepts_loads_or_is_kept_as_a_reject_and_blocks_nothing(
    warehouse, aws, raw_bucket, request
):
    s3 = aws.client("s3")
    start_afresh(warehouse, s3, raw_bucket)
    assert_the_data_path_keeps(warehouse, s3, raw_bucket, request)


@settings(END_TO_END, max_examples=15)
@given(request=client_requests())
def test_a_forced_reload_of_whatever_was_loaded_changes_nothing(
    warehouse, aws, raw_bucket, request
):
    """README: "a forced reload of unchanged data updates 0 rows", whatever the data."""
    s3 = aws.client("s3")
    start_afresh(warehouse, s3, raw_bucket)
    accepted, scheduled = assert_the_data_path_keeps(warehouse, s3, raw_bucket, request)
    hour = accepted[0].received_at

    connection = warehouse.etl_connection()
    try:
        forced = loader.run_window(connection, s3, raw_bucket, start=hour, end=hour, force=True)
    finally:
        connection.close()

    _note(f"forced reload: {forced.as_dict()}")
    assert forced.status == "succeeded", f"the forced reload {forced.status}: {forced.detail}"
    for sent in accepted:  # first: a changed row is named, with the values that changed
        assert_loaded_or_rejected(warehouse, sent, event_columns(warehouse))
    assert (forced.events_loaded, forced.events_updated) == (0, 0), forced.as_dict()
    assert forced.rejected_lines == scheduled.rejected_lines, forced.as_dict()


# --- the cases that were reported ------------------------------------------------------------


def batch(*events: dict[str, Any]) -> ClientRequest:
    return ClientRequest(json.dumps(list(events), separators=(",", ":")))


BUG_REPORT_BODY = (
    '[{"eventName":"page_view","pageUrl":"https://shop.example.vn/a\\rb",'
    '"clientId":"c1","sessionId":"s1","isFirstVisit":true}]'
)


@pytest.mark.parametrize(
    "request_sent",
    [
        pytest.param(ClientRequest(BUG_REPORT_BODY), id="lone-carriage-return-in-page-url"),
        pytest.param(
            batch({**MARKER_EVENT, "eventId": "1764567890123-9f8e7d6c"}),
            id="original-tracker-fallback-event-id",
        ),
        pytest.param(
            batch({**MARKER_EVENT, "pageUrl": "https://shop.example.vn/search?q=\\u0000"}),
            id="escaped-nul-written-literally-in-a-url-query",
        ),
        pytest.param(
            batch({**MARKER_EVENT, "pageUrl": "https://shop.example.vn/end\n\\.\nof-copy"}),
            id="copy-end-of-data-marker-in-page-url",
        ),
    ],
)
def test_a_reported_body_is_accepted_and_loads_exactly_as_sent(
    warehouse, aws, raw_bucket, request_sent
):
    s3 = aws.client("s3")
    received_at = datetime.now(UTC).replace(microsecond=0)
    sent = send(s3, raw_bucket, request_sent, received_at)
    assert sent.status == 202, sent.response
    neighbour = send(s3, raw_bucket, ClientRequest(json.dumps([NEIGHBOUR_EVENT])), received_at)

    report = run_etl(warehouse, s3, raw_bucket, received_at + RECEIVE_TO_RUN)

    assert report.status == "succeeded", report.detail
    columns = event_columns(warehouse)
    every_line = frozenset(range(len(request_sent.events())))
    assert_loaded_or_rejected(warehouse, sent, columns, must_load=every_line)
    assert_loaded_or_rejected(warehouse, neighbour, columns, must_load=frozenset({0}))
    assert report.events_loaded == len(every_line) + 1
    assert report.rejected_lines == 0


def test_whole_float_product_ids_are_stored_as_integer_digits(warehouse, aws, raw_bucket):
    s3 = aws.client("s3")
    received_at = datetime.now(UTC).replace(microsecond=0)
    second_id = "0b5d7c7e-3f0a-4c3e-9a51-6f2d8e4c1a04"
    request_sent = batch(
        {**MARKER_EVENT, "product": {"id": -0.0}},
        {**MARKER_EVENT, "eventId": second_id, "product": {"id": 1.0}},
    )
    assert '"id":-0.0' in request_sent.body
    assert '"id":1.0' in request_sent.body
    sent = send(s3, raw_bucket, request_sent, received_at)
    assert sent.status == 202, sent.response

    run_etl(warehouse, s3, raw_bucket, received_at + RECEIVE_TO_RUN)

    stored = dict(
        warehouse.query(
            "SELECT event_id::text, context_product_id FROM public.clickstream_events "
            "WHERE event_id = ANY(%s::uuid[])",
            ([MARKER_EVENT_ID, second_id],),
        )
    )
    assert stored == {MARKER_EVENT_ID: "0", second_id: "1"}


def test_the_original_trackers_fallback_id_becomes_its_uuidv5_under_the_contracts_namespace(
    aws, raw_bucket
):
    fallback_id = "1764567890123-9f8e7d6c"
    namespace = uuid.UUID(CONTRACT["x-event-id-namespace"])
    received_at = datetime.now(UTC).replace(microsecond=0)

    sent = send(
        aws.client("s3"), raw_bucket, batch({**MARKER_EVENT, "eventId": fallback_id}), received_at
    )

    assert sent.status == 202, sent.response
    assert sent.response["event_ids"] == [str(uuid.uuid5(namespace, fallback_id))]


def test_the_oracle_answers_as_the_readme_says():
    assert expected_answer(batch(MARKER_EVENT)) == (202, frozenset())
    too_long = {**MARKER_EVENT, "pageUrl": "x" * (max_length_at(TRACKER, ("pageUrl",)) + 1)}
    assert expected_answer(batch(too_long))[0] == 422
    assert expected_answer(batch({**MARKER_EVENT, "pageUrl": "a\ud800"}))[0] == 400
    assert expected_answer(batch({**too_long, "userId": "a\x00"}))[0] == 400
    assert expected_answer(batch({**MARKER_EVENT, "x": 2**64}))[0] == 400
    assert expected_answer(batch({**MARKER_EVENT, "x": 2**64 - 1}))[0] == 202
    assert expected_answer(batch({**MARKER_EVENT, "pageUrl": "a\\u0000"}))[0] == 202
    assert _exact_id(-0.0) == "0"
    assert _exact_id(1.0) == "1"
    assert _json_value("1e308") == _json_value(str(10**308))

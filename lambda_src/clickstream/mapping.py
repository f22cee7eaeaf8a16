"""The field mapping: incoming event → raw record (ingest) → warehouse row (ETL). Pure functions.

This is the only place that knows how the tracker's camelCase body, or the warehouse-shaped body,
becomes a row of ``clickstream_events``; a fix here reaches old data by a forced backfill.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from clickstream import contract

# A client clock is believed only within this window around the server receive time; outside
# it (a wrong device clock) the receive time is the event time. Our tracker batches for seconds,
# and may resend after a page reload, hence the generous lag.
CLIENT_CLOCK_MAX_LAG = timedelta(days=7)
CLIENT_CLOCK_MAX_LEAD = timedelta(minutes=5)

# Columns of public.clickstream_events that the ETL writes, in COPY order: the 16 fields of
# seed 003, then what the journeys need (page_url, referrer) and the receive time.
WAREHOUSE_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_timestamp",
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
    "received_at",
)

# The tracker's camelCase names of the flat fields, keyed by warehouse column.
_TRACKER_FIELDS = {
    "event_timestamp": "eventTimestamp",
    "event_name": "eventName",
    "user_id": "userId",
    "user_login_state": "userLoginState",
    "identity_source": "identitySource",
    "client_id": "clientId",
    "session_id": "sessionId",
    "is_first_visit": "isFirstVisit",
    "page_url": "pageUrl",
    "referrer": "referrer",
}
_TRACKER_PRODUCT_FIELDS = {
    "context_product_id": "id",
    "context_product_name": "name",
    "context_product_category": "category",
    "context_product_brand": "brand",
    "context_product_price": "price",
    "context_product_discount_price": "discountPrice",
    "context_product_url_path": "urlPath",
}

WarehouseRow = tuple[Any, ...]


def format_timestamp(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: the one timestamp format the ingest writes."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client_event_id(event: dict[str, Any]) -> str | None:
    """The event id the sender chose, if any (our tracker does; the original one does not).

    Only the id field of the event's own shape counts, the one the contract checks: eventId in
    the tracker shape, event_id in the warehouse shape. The other is just an unknown field.
    """
    return event.get("eventId") if "eventName" in event else event.get("event_id")


def new_raw_record(
    event: dict[str, Any],
    *,
    received_at: datetime,
    request_id: str | None,
    user_agent: str | None,
    new_event_id: Callable[[], uuid.UUID] = uuid.uuid4,
) -> dict[str, Any]:
    """Wrap a valid incoming event with what the ingest knows. The event itself is kept as sent."""
    return {
        "record_version": contract.RAW_RECORD_VERSION,
        "event_id": (client_event_id(event) or str(new_event_id())).lower(),
        "received_at": format_timestamp(received_at),
        "request_id": request_id,
        "user_agent": user_agent,
        "event": event,
    }


def _blank_to_none(value: Any) -> Any:
    # document.referrer and friends are "" when absent: the warehouse says NULL.
    return None if value == "" else value


def _flat_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The event's fields under warehouse column names, whatever shape it was sent in."""
    if "eventName" not in event:  # the warehouse shape (the contract's if/then/else)
        return event
    fields = {column: event.get(name) for column, name in _TRACKER_FIELDS.items()}
    product = event.get("product") or {}
    for column, name in _TRACKER_PRODUCT_FIELDS.items():
        fields[column] = product.get(name)
    return fields


def event_timestamp(client_time: str | None, received_at: str) -> str:
    """The event's time: the client's when it is plausible, else the server receive time."""
    received_moment = datetime.fromisoformat(received_at)
    if client_time is None:
        return received_at
    try:
        client_moment = datetime.fromisoformat(client_time)
    except ValueError:  # the contract's pattern admits impossible dates such as 2025-02-30
        return received_at
    if -CLIENT_CLOCK_MAX_LEAD <= received_moment - client_moment <= CLIENT_CLOCK_MAX_LAG:
        return client_time
    return received_at


def warehouse_row(record: dict[str, Any]) -> WarehouseRow:
    """Map a contract-valid raw record to a row in WAREHOUSE_COLUMNS order."""
    fields = _flat_fields(record["event"])
    user_id = _blank_to_none(fields.get("user_id"))
    login_state = fields.get("user_login_state") or ("logged_in" if user_id else "anonymous")
    identity_source = fields.get("identity_source") or (None if user_id else "anonymous")
    product_id = fields.get("context_product_id")
    return (
        record["event_id"].lower(),  # one spelling per uuid, so in-batch dedup sees repeats
        event_timestamp(fields.get("event_timestamp"), record["received_at"]),
        fields["event_name"],
        user_id,
        login_state,
        identity_source,
        _blank_to_none(fields.get("client_id")),
        _blank_to_none(fields.get("session_id")),
        fields.get("is_first_visit"),
        _blank_to_none(str(product_id) if product_id is not None else None),
        _blank_to_none(fields.get("context_product_name")),
        _blank_to_none(fields.get("context_product_category")),
        _blank_to_none(fields.get("context_product_brand")),
        fields.get("context_product_price"),
        fields.get("context_product_discount_price"),
        _blank_to_none(fields.get("context_product_url_path")),
        _blank_to_none(fields.get("page_url")),
        _blank_to_none(fields.get("referrer")),
        record["received_at"],
    )


@dataclass(frozen=True)
class RejectedLine:
    """A raw line that cannot become a row, with the reason, kept for the rejects table."""

    line_number: int
    reason: str
    raw_text: str


def parse_raw_line(line: str, line_number: int) -> WarehouseRow | RejectedLine:
    """One line of a raw object → a warehouse row, or the reason it is rejected."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return RejectedLine(line_number, f"invalid JSON: {error}", line)
    if not contract.is_valid(record, contract.RAW_RECORD):
        reasons = "; ".join(str(p) for p in contract.problems(record, contract.RAW_RECORD))
        return RejectedLine(line_number, f"breaks the contract: {reasons}", line)
    # JSON may spell U+0000, which no PostgreSQL text value can hold; the line stays in rejects.
    if "\\u0000" in line:
        return RejectedLine(
            line_number, "contains U+0000, which PostgreSQL text cannot store", line
        )
    try:
        return warehouse_row(record)
    except ValueError as error:  # e.g. a received_at of 2025-02-30: a pattern cannot tell
        return RejectedLine(line_number, f"cannot be mapped to a warehouse row: {error}", line)

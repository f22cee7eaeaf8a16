"""The field mapping: incoming event → raw record (ingest) → warehouse row (ETL). Pure functions.

This is the only place that knows how the tracker's camelCase body, or the warehouse-shaped body,
becomes a row of ``clickstream_events``; a fix here reaches old data by a forced backfill.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from clickstream import contract, raw_format

# A client clock is believed only within this window around the server receive time; outside
# it (a wrong device clock) the receive time is the event time. Our tracker batches for seconds,
# and may resend after a page reload, hence the generous lag.
CLIENT_CLOCK_MAX_LAG = timedelta(days=7)
CLIENT_CLOCK_MAX_LEAD = timedelta(minutes=5)

# A client event id that is not a UUID (the original tracker's Date.now()-random fallback) is
# turned into the UUIDv5 of the id under this namespace, fixed in the contract: the same id sent
# twice is the same event_id, so a retry still deduplicates.
EVENT_ID_NAMESPACE = uuid.UUID(contract.CONTRACT["x-event-id-namespace"])
_UUID_TEXT = re.compile(contract.CONTRACT["definitions"]["uuid"]["pattern"])

# Who wrote a raw record (contract rawRecord/origin). Only an import's event time is trusted as
# given: a browser's clock is believed only near the receive time.
ORIGIN_INGEST = "ingest"
ORIGIN_IMPORT = "import"

# Columns of public.clickstream_events that the ETL writes, in COPY order: the 16 fields of
# seed 003, what the journeys need (page_url, referrer), the receive time, then what the raw
# record holds beside them (0009): the id and clocks as the client sent them, the browser, the
# click target and the order facts the tracker puts in its dataset.
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
    "client_event_id",
    "client_timestamp",
    "client_sent_at",
    "user_agent",
    "element",
    "order_id",
    "cart_id",
    "order_total",
    "item_count",
)
EVENT_ID, EVENT_TIMESTAMP, RECEIVED_AT = 0, 1, WAREHOUSE_COLUMNS.index("received_at")

# The tracker's camelCase names of the flat fields, keyed by warehouse column.
_TRACKER_FIELDS = {
    "event_id": "eventId",
    "event_timestamp": "eventTimestamp",
    "sent_at": "sentAt",
    "event_name": "eventName",
    "user_id": "userId",
    "user_login_state": "userLoginState",
    "identity_source": "identitySource",
    "client_id": "clientId",
    "session_id": "sessionId",
    "is_first_visit": "isFirstVisit",
    "page_url": "pageUrl",
    "referrer": "referrer",
    "element": "element",
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

# Order facts that checkout events carry in element.dataset, as strings (sbw-event-format.md).
# What does not parse is stored as NULL and counted, by column name, in the run's report.
_ORDER_TOTAL_LIMIT = Decimal(10) ** 13  # numeric(15, 2), as the contract's price bound
_ITEM_COUNT_LIMIT = 2**31  # integer
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_INTEGER_TEXT = re.compile(r"[0-9]+")

WarehouseRow = tuple[Any, ...]


def format_timestamp(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: the one timestamp format the ingest writes."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc_text(moment: datetime) -> str:
    # Whatever precision the moment has (a client may send microseconds), in UTC with a Z.
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def client_event_id(event: dict[str, Any]) -> str | None:
    """The event id the sender chose, if any (our tracker does; the original one may not).

    Only the id field of the event's own shape counts, the one the contract checks: eventId in
    the tracker shape, event_id in the warehouse shape. The other is just an unknown field.
    """
    return event.get("eventId") if "eventName" in event else event.get("event_id")


def event_uuid(sent_id: str) -> str:
    """The warehouse's event_id for a client's id: the UUID itself (lower-cased), or the UUIDv5
    of any other id under EVENT_ID_NAMESPACE."""
    if _UUID_TEXT.match(sent_id):
        return sent_id.lower()
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, sent_id))


def new_raw_record(
    event: dict[str, Any],
    *,
    received_at: datetime,
    request_id: str | None,
    user_agent: str | None,
    new_event_id: Callable[[], uuid.UUID] = uuid.uuid4,
    origin: str = ORIGIN_INGEST,
) -> dict[str, Any]:
    """Wrap a valid incoming event with what the writer knows. The event itself is kept as sent.

    The ingest writes no ``origin`` (absent means ingest); an import writes ``import``.
    """
    sent_id = client_event_id(event)
    record = {
        "record_version": contract.RAW_RECORD_VERSION,
        "event_id": event_uuid(sent_id) if sent_id else str(new_event_id()),
        "received_at": format_timestamp(received_at),
        "request_id": request_id,
        "user_agent": user_agent,
        "event": event,
    }
    if origin != ORIGIN_INGEST:
        record["origin"] = origin
    return record


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


def _moment(text: str | None) -> datetime | None:
    """A contract timestamp as an aware datetime; None when absent or no real moment.

    The contract's pattern admits impossible dates (2025-02-30, year 0000) and offsets that push
    year 9999 past the end of the calendar: those are no time at all, not an error.
    """
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return moment


def event_time(
    client_time: datetime | None,
    sent_at: datetime | None,
    received_at: datetime,
    *,
    trusted: bool = False,
) -> datetime:
    """The time the dashboards use for an event, from every clock there is (Snowplow's model).

    - an import (``trusted``) keeps the client's time as given;
    - with both device times, the receive time minus how long the event waited on the device
      (sent minus created, on the same clock), which corrects a device clock that is simply wrong;
    - else the client's time, when it lies within the plausible window around the receive time;
    - else the receive time.
    """
    if client_time is not None:
        if trusted:
            return client_time
        if sent_at is not None:
            waited = sent_at - client_time
            if timedelta(0) <= waited <= CLIENT_CLOCK_MAX_LAG:
                return received_at - waited
        if -CLIENT_CLOCK_MAX_LEAD <= received_at - client_time <= CLIENT_CLOCK_MAX_LAG:
            return client_time
    return received_at


def _exact_id(value: Any) -> str | None:
    """A product id as exact text: a string as sent, a number as its integer digits.

    JSON Schema's "integer" also admits 1.0 and -0.0, which must not be stored as float text.
    """
    if value is None or isinstance(value, str):
        return _blank_to_none(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"the product id {value!r} is not a whole number")
        value = int(value)
    return str(value)


def _decimal_fact(value: Any) -> Decimal | None:
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    if isinstance(value, bool) or not _DECIMAL_TEXT.fullmatch(text):
        raise ValueError
    amount = Decimal(text)
    if abs(amount) >= _ORDER_TOTAL_LIMIT:
        raise ValueError
    return amount


def _integer_fact(value: Any) -> int | None:
    text = str(value).strip() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or not _INTEGER_TEXT.fullmatch(text):
        raise ValueError
    count = int(text)
    if count >= _ITEM_COUNT_LIMIT:
        raise ValueError
    return count


def _text_fact(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError
    return _blank_to_none(str(value).strip())


# element.dataset key → (warehouse column, parser); a parser raises ValueError on what it cannot
# read. orderNumber stands in for orderId where a shop's checkout sends only that.
_ORDER_FACTS: tuple[tuple[str, tuple[str, ...], Callable[[Any], Any]], ...] = (
    ("order_id", ("orderId", "orderNumber"), _text_fact),
    ("cart_id", ("cartId",), _text_fact),
    ("order_total", ("total",), _decimal_fact),
    ("item_count", ("itemCount",), _integer_fact),
)


def _order_facts(element: Any, unparsable: Counter | None) -> list[Any]:
    """order_id, cart_id, order_total, item_count from the click target's dataset."""
    dataset = element.get("dataset") if isinstance(element, dict) else None
    if not isinstance(dataset, dict) or not dataset:
        return [None] * len(_ORDER_FACTS)
    facts = []
    for column, keys, parse in _ORDER_FACTS:
        value = next((dataset[key] for key in keys if dataset.get(key) not in (None, "")), None)
        if value is None:
            facts.append(None)
            continue
        try:
            facts.append(parse(value))
        except (ValueError, InvalidOperation):
            facts.append(None)
            if unparsable is not None:
                unparsable[column] += 1
    return facts


def warehouse_row(record: dict[str, Any], unparsable: Counter | None = None) -> WarehouseRow:
    """Map a contract-valid raw record to a row in WAREHOUSE_COLUMNS order.

    Order facts that do not parse are NULL, and counted by column in ``unparsable`` when given.
    """
    fields = _flat_fields(record["event"])
    user_id = _blank_to_none(fields.get("user_id"))
    login_state = fields.get("user_login_state") or ("logged_in" if user_id else "anonymous")
    identity_source = fields.get("identity_source") or (None if user_id else "anonymous")
    received_at = datetime.fromisoformat(record["received_at"])
    client_time = _moment(fields.get("event_timestamp"))
    sent_at = _moment(fields.get("sent_at"))
    trusted = record.get("origin") == ORIGIN_IMPORT
    element = fields.get("element")
    return (
        record["event_id"].lower(),  # one spelling per uuid, so in-batch dedup sees repeats
        _utc_text(event_time(client_time, sent_at, received_at, trusted=trusted)),
        fields["event_name"],
        user_id,
        login_state,
        identity_source,
        _blank_to_none(fields.get("client_id")),
        _blank_to_none(fields.get("session_id")),
        fields.get("is_first_visit"),
        _exact_id(fields.get("context_product_id")),
        _blank_to_none(fields.get("context_product_name")),
        _blank_to_none(fields.get("context_product_category")),
        _blank_to_none(fields.get("context_product_brand")),
        fields.get("context_product_price"),
        fields.get("context_product_discount_price"),
        _blank_to_none(fields.get("context_product_url_path")),
        _blank_to_none(fields.get("page_url")),
        _blank_to_none(fields.get("referrer")),
        _utc_text(received_at),
        fields.get("event_id"),
        client_time and _utc_text(client_time),
        sent_at and _utc_text(sent_at),
        record.get("user_agent"),
        None if element is None else orjson.dumps(element).decode("utf-8"),
        *_order_facts(element, unparsable),
    )


@dataclass(frozen=True)
class RejectedLine:
    """A raw line that cannot become a row, with the reason, kept for the rejects table."""

    line_number: int
    reason: str
    raw_text: str


def parse_raw_line(
    line: str, line_number: int, unparsable: Counter | None = None
) -> WarehouseRow | RejectedLine:
    """One line of a raw object → a warehouse row, or the reason it is rejected."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return RejectedLine(line_number, f"invalid JSON: {error}", line)
    if not contract.is_valid(record, contract.RAW_RECORD):
        reasons = "; ".join(str(p) for p in contract.problems(record, contract.RAW_RECORD))
        return RejectedLine(line_number, f"breaks the contract: {reasons}", line)
    # JSON spells U+0000 only as this escape; most lines never pay for the walk.
    if raw_format.NUL_ESCAPE in line:
        unstorable = raw_format.unstorable_value(record)
        if unstorable:
            return RejectedLine(line_number, unstorable, line)
    try:
        return warehouse_row(record, unparsable)
    # e.g. a received_at of 2025-02-30 (a pattern cannot tell), or a clock past the calendar
    except (ValueError, OverflowError) as error:
        return RejectedLine(line_number, f"cannot be mapped to a warehouse row: {error}", line)

"""The field mapping from what the tracker sends to warehouse rows (pure, no I/O)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from clickstream.mapping import (
    EVENT_ID_NAMESPACE,
    ORIGIN_IMPORT,
    WAREHOUSE_COLUMNS,
    RejectedLine,
    event_uuid,
    new_raw_record,
    parse_raw_line,
    warehouse_row,
)
from tests.raw_events import raw_record, tracker_event

RECEIVED = datetime(2025, 12, 1, 10, 15, 0, 123000, tzinfo=UTC)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def row_of(record) -> dict:
    parsed = parse_raw_line(json.dumps(record), 1)
    assert not isinstance(parsed, RejectedLine), parsed
    return dict(zip(WAREHOUSE_COLUMNS, parsed, strict=True))


def test_tracker_fields_map_to_the_warehouse_columns_of_seed_003():
    event = tracker_event(
        userId="user_2abc", userLoginState="logged_in", identitySource="clerk_google"
    )
    row = row_of(raw_record(event, RECEIVED))
    assert row["event_name"] == "product_view"
    assert moment(row["event_timestamp"]) == RECEIVED
    assert (row["user_id"], row["user_login_state"], row["identity_source"]) == (
        "user_2abc",
        "logged_in",
        "clerk_google",
    )
    assert (row["client_id"], row["session_id"], row["is_first_visit"]) == (
        "client-1",
        "session-1",
        False,
    )
    assert row["context_product_id"] == "p-100"
    assert row["context_product_name"] == "Dell XPS 13"
    assert row["context_product_category"] == "laptop"
    assert row["context_product_brand"] == "Dell"
    assert row["context_product_price"] == 32990000
    assert row["context_product_discount_price"] == 29990000
    assert row["context_product_url_path"] == "/products/dell-xps-13"
    assert row["page_url"] == "https://shop.example.com/products/dell-xps-13"


def test_warehouse_shaped_events_map_field_for_field():
    event = {
        "event_name": "add_to_cart_click",
        "user_id": "u1",
        "client_id": "c9",
        "session_id": "s9",
        "context_product_id": 42,
        "context_product_price": 1500000,
    }
    row = row_of(raw_record(event, RECEIVED))
    assert (row["event_name"], row["user_id"], row["client_id"], row["session_id"]) == (
        "add_to_cart_click",
        "u1",
        "c9",
        "s9",
    )
    assert (row["context_product_id"], row["context_product_price"]) == ("42", 1500000)
    assert row["user_login_state"] == "logged_in"  # a user id means a logged-in user


def test_anonymous_visitors_get_the_anonymous_login_state_and_identity_source():
    event = tracker_event(userId=None, userLoginState=None)
    row = row_of(raw_record(event, RECEIVED))
    assert (row["user_login_state"], row["identity_source"]) == ("anonymous", "anonymous")


def test_blank_strings_from_the_browser_become_nulls():
    row = row_of(raw_record(tracker_event(referrer="", sessionId=""), RECEIVED))
    assert row["referrer"] is None
    assert row["session_id"] is None


def test_a_plausible_client_time_is_the_event_time():
    event = tracker_event(eventTimestamp="2025-12-01T17:14:58+07:00")
    row = row_of(raw_record(event, RECEIVED))
    assert moment(row["event_timestamp"]) == datetime(2025, 12, 1, 10, 14, 58, tzinfo=UTC)
    assert moment(row["client_timestamp"]) == moment(row["event_timestamp"])


def test_a_client_clock_far_off_falls_back_to_the_receive_time_and_is_kept_as_sent():
    for wrong in ("2025-12-01T11:15:00Z", "2024-01-01T00:00:00Z"):
        row = row_of(raw_record(tracker_event(eventTimestamp=wrong), RECEIVED))
        assert moment(row["event_timestamp"]) == RECEIVED
        assert moment(row["client_timestamp"]) == moment(wrong)
        assert moment(row["received_at"]) == RECEIVED


def test_a_wrong_device_clock_is_corrected_by_how_long_the_event_waited_on_the_device():
    # The device clock is a year and a day behind; the event waited 4 s before its batch left.
    event = tracker_event(
        eventTimestamp="2024-11-30T10:00:00.000Z", sentAt="2024-11-30T10:00:04.000Z"
    )
    row = row_of(raw_record(event, RECEIVED))
    assert moment(row["event_timestamp"]) == RECEIVED - timedelta(seconds=4)
    assert moment(row["client_timestamp"]) == moment("2024-11-30T10:00:00Z")
    assert moment(row["client_sent_at"]) == moment("2024-11-30T10:00:04Z")


def test_a_sent_time_before_the_event_time_is_not_believed():
    event = tracker_event(
        eventTimestamp="2025-12-01T10:15:00.000Z", sentAt="2025-12-01T10:14:00.000Z"
    )
    row = row_of(raw_record(event, RECEIVED))  # then the plausible client time is used
    assert moment(row["event_timestamp"]) == moment("2025-12-01T10:15:00Z")


def test_an_import_keeps_the_event_time_it_was_given_however_old():
    event = {"event_name": "page_view", "event_timestamp": "2024-03-01T08:00:00Z"}
    record = new_raw_record(
        event, received_at=RECEIVED, request_id=None, user_agent=None, origin=ORIGIN_IMPORT
    )
    assert record["origin"] == "import"
    assert moment(row_of(record)["event_timestamp"]) == moment("2024-03-01T08:00:00Z")
    # The same time from a browser is outside the plausible window: the receive time wins.
    del record["origin"]
    assert moment(row_of(record)["event_timestamp"]) == RECEIVED


def test_the_event_id_the_client_chose_is_kept_and_one_is_made_otherwise():
    chosen = "0F8FAD5B-D9CB-469F-A165-70867728950E"
    row = row_of(raw_record(tracker_event(eventId=chosen), RECEIVED))
    assert (row["event_id"], row["client_event_id"]) == (chosen.lower(), chosen)
    made = row_of(raw_record(tracker_event(), RECEIVED))
    assert len(made["event_id"]) == 36
    assert made["client_event_id"] is None


def test_the_original_trackers_fallback_id_becomes_a_stable_uuid_and_is_kept_as_sent():
    sent = "1764567890123-9f8e7d6c"  # `${Date.now()}-${Math.random().toString(16).slice(2,10)}`
    first = row_of(raw_record(tracker_event(eventId=sent), RECEIVED))
    retried = row_of(raw_record(tracker_event(eventId=sent), RECEIVED + timedelta(minutes=1)))
    assert first["event_id"] == retried["event_id"] == str(uuid.uuid5(EVENT_ID_NAMESPACE, sent))
    assert first["client_event_id"] == sent
    assert event_uuid(sent) != event_uuid("1764567890123-9f8e7d6d")


def test_browser_target_and_order_facts_are_kept_typed():
    element = {
        "tag": "button",
        "id": "place-order",
        "role": None,
        "text": "Place order",
        "dataset": {"orderId": "SBW-1042", "total": "64980000", "itemCount": "2"},
    }
    row = row_of(raw_record(tracker_event("checkout_complete", element=element), RECEIVED))
    assert json.loads(row["element"]) == element
    assert row["user_agent"] == "ua"
    assert (row["order_id"], row["order_total"], row["item_count"]) == (
        "SBW-1042",
        Decimal("64980000"),
        2,
    )
    assert row["cart_id"] is None


def test_order_facts_that_do_not_parse_are_null_and_counted():
    dataset = {"cartId": "c-9", "total": "64,980,000 VND", "itemCount": "two"}
    unparsable = Counter()
    record = raw_record(tracker_event("checkout_start", element={"dataset": dataset}), RECEIVED)
    row = dict(zip(WAREHOUSE_COLUMNS, warehouse_row(record, unparsable), strict=True))
    assert (row["cart_id"], row["order_total"], row["item_count"]) == ("c-9", None, None)
    assert unparsable == {"order_total": 1, "item_count": 1}


@pytest.mark.parametrize(
    ("sent", "stored"),
    [(42, "42"), (1.0, "1"), (-0.0, "0"), ("007", "007"), (9007199254740991, "9007199254740991")],
)
def test_product_ids_are_stored_as_their_exact_digits_never_float_text(sent, stored):
    event = tracker_event(product={"id": sent, "name": "Dell XPS 13"})
    assert row_of(raw_record(event, RECEIVED))["context_product_id"] == stored


def test_a_product_id_beyond_what_a_browser_holds_exactly_breaks_the_contract():
    for sent in (2**64, 1.2345678901234568e29):
        parsed = parse_raw_line(
            json.dumps(raw_record(tracker_event(product={"id": sent}), RECEIVED)), 1
        )
        assert isinstance(parsed, RejectedLine)
        assert "/event/product/id" in parsed.reason


def test_lines_that_cannot_become_rows_are_rejected_with_a_reason():
    valid = json.dumps(raw_record(tracker_event(), RECEIVED))
    cases = {
        "{not json": "invalid JSON",
        json.dumps({"event": {}}): "breaks the contract",
        valid.replace('"Dell XPS 13"', '"Dell\\u0000XPS"'): "/event/product/name: contains U+0000",
        valid.replace('"product_view"', '"Product View"'): "/event/eventName",
    }
    for line, reason in cases.items():
        parsed = parse_raw_line(line, 7)
        assert isinstance(parsed, RejectedLine)
        assert reason in parsed.reason
        assert (parsed.line_number, parsed.raw_text) == (7, line)


def test_the_six_characters_of_an_escaped_nul_are_text_like_any_other():
    url = "https://shop.example.vn/search?q=\\u0000"  # a backslash and "u0000", no NUL
    row = row_of(raw_record(tracker_event(pageUrl=url), RECEIVED))
    assert row["page_url"] == url


def test_an_impossible_client_date_falls_back_to_the_receive_time():
    for impossible in ("2025-02-30T10:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00"):
        row = row_of(raw_record(tracker_event(eventTimestamp=impossible), RECEIVED))
        assert moment(row["event_timestamp"]) == RECEIVED
        assert row["client_timestamp"] is None  # kept as sent only in the raw object


def test_a_line_with_an_impossible_receive_time_is_rejected_not_raised():
    record = raw_record(tracker_event(), RECEIVED)
    record["received_at"] = "2025-13-45T99:99:99Z"  # matches the pattern, is no date
    parsed = parse_raw_line(json.dumps(record), 3)
    assert isinstance(parsed, RejectedLine)
    assert "cannot be mapped" in parsed.reason

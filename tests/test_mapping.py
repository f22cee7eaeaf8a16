"""The field mapping from what the tracker sends to warehouse rows (pure, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from clickstream.mapping import WAREHOUSE_COLUMNS, RejectedLine, parse_raw_line
from tests.raw_events import raw_record, tracker_event

RECEIVED = datetime(2025, 12, 1, 10, 15, 0, 123000, tzinfo=UTC)


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
    assert row["event_timestamp"] == "2025-12-01T10:15:00.123Z"
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
    event = tracker_event(eventTimestamp="2025-12-01T10:14:58.000Z")
    assert row_of(raw_record(event, RECEIVED))["event_timestamp"] == "2025-12-01T10:14:58.000Z"


def test_a_client_clock_far_off_falls_back_to_the_receive_time():
    for wrong in ("2025-12-01T11:15:00Z", "2024-01-01T00:00:00Z"):
        event = tracker_event(eventTimestamp=wrong)
        assert row_of(raw_record(event, RECEIVED))["event_timestamp"] == "2025-12-01T10:15:00.123Z"


def test_the_event_id_the_client_chose_is_kept_and_one_is_made_otherwise():
    chosen = "0F8FAD5B-D9CB-469F-A165-70867728950E"
    assert row_of(raw_record(tracker_event(eventId=chosen), RECEIVED))["event_id"] == chosen.lower()
    made = row_of(raw_record(tracker_event(), RECEIVED))["event_id"]
    assert len(made) == 36


def test_lines_that_cannot_become_rows_are_rejected_with_a_reason():
    valid = json.dumps(raw_record(tracker_event(), RECEIVED))
    cases = {
        "{not json": "invalid JSON",
        json.dumps({"event": {}}): "breaks the contract",
        valid.replace('"Dell XPS 13"', '"Dell\\u0000XPS"'): "U+0000",
        valid.replace('"product_view"', '"Product View"'): "/event/eventName",
    }
    for line, reason in cases.items():
        parsed = parse_raw_line(line, 7)
        assert isinstance(parsed, RejectedLine)
        assert reason in parsed.reason
        assert (parsed.line_number, parsed.raw_text) == (7, line)


def test_an_impossible_client_date_falls_back_to_the_receive_time():
    event = tracker_event(eventTimestamp="2025-02-30T10:00:00Z")  # the pattern cannot tell
    assert row_of(raw_record(event, RECEIVED))["event_timestamp"] == "2025-12-01T10:15:00.123Z"


def test_a_line_with_an_impossible_receive_time_is_rejected_not_raised():
    record = raw_record(tracker_event(), RECEIVED)
    record["received_at"] = "2025-13-45T99:99:99Z"  # matches the pattern, is no date
    parsed = parse_raw_line(json.dumps(record), 3)
    assert isinstance(parsed, RejectedLine)
    assert "cannot be mapped" in parsed.reason

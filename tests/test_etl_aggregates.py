"""Sessions and rollups: right numbers for a known data set, refreshed only where a load touched."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from clickstream import loader
from tests.raw_events import put_raw_object, raw_record, tracker_event

DAY_1 = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
DAY_2 = DAY_1 + timedelta(days=1)
LAPTOP = {"id": "p-1", "name": "Dell XPS 13", "category": "laptop", "brand": "Dell", "price": 30e6}
MOUSE = {"id": "p-2", "name": "MX Master", "category": "mouse", "brand": "Logitech", "price": 2e6}


def session_events(session: str, start: datetime, steps: list[tuple[str, dict | None]]):
    return [
        raw_record(
            tracker_event(name, sessionId=session, clientId=f"client-{session}", product=product),
            start + timedelta(minutes=minute),
        )
        for minute, (name, product) in enumerate(steps)
    ]


def load(warehouse, aws, bucket, records, received_at):
    put_raw_object(aws.client("s3"), bucket, records, received_at)
    connection = warehouse.etl_connection()
    try:
        return loader.run_window(
            connection, aws.client("s3"), bucket, start=received_at, end=received_at
        )
    finally:
        connection.close()


def converting_and_browsing_sessions(start: datetime):
    converting = session_events(
        "buyer",
        start,
        [
            ("page_view", None),
            ("product_view", LAPTOP),
            ("add_to_cart_click", LAPTOP),
            ("checkout_start", None),
            ("checkout_complete", None),
        ],
    )
    browsing = session_events(
        "browser",
        start,
        [("page_view", None), ("product_view", LAPTOP), ("product_view", MOUSE)],
    )
    return converting + browsing


def test_sessions_summarise_each_visit(warehouse, aws, raw_bucket):
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_1), DAY_1)
    sessions = warehouse.query(
        "SELECT session_id, client_id, session_start, session_end, duration_seconds, events, "
        "page_views, product_views, add_to_carts, checkout_starts, checkouts_completed, converted "
        "FROM sessions ORDER BY session_id"
    )
    two_minutes, four_minutes = DAY_1 + timedelta(minutes=2), DAY_1 + timedelta(minutes=4)
    assert sessions == [
        ("browser", "client-browser", DAY_1, two_minutes, 120, 3, 1, 2, 0, 0, 0, False),
        ("buyer", "client-buyer", DAY_1, four_minutes, 240, 5, 1, 1, 1, 1, 1, True),
    ]


def test_the_daily_funnel_counts_sessions_at_each_step(warehouse, aws, raw_bucket):
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_1), DAY_1)
    assert warehouse.query("SELECT * FROM rollup_funnel_daily") == [
        (date(2025, 12, 1), 2, 2, 1, 1, 1)
    ]


def test_product_engagement_counts_views_carts_and_sessions_per_product(warehouse, aws, raw_bucket):
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_1), DAY_1)
    assert warehouse.query(
        "SELECT product_id, product_category, product_brand, views, add_to_carts, "
        "viewing_sessions, carting_sessions FROM rollup_product_daily ORDER BY product_id"
    ) == [("p-1", "laptop", "Dell", 2, 1, 2, 1), ("p-2", "mouse", "Logitech", 1, 0, 1, 0)]


def test_hourly_activity_counts_events_sessions_and_clients(warehouse, aws, raw_bucket):
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_1), DAY_1)
    assert warehouse.query("SELECT * FROM rollup_activity_hourly") == [(DAY_1, 8, 2, 2, 2, 3, 1, 1)]


def test_a_session_continued_in_a_later_load_is_recomputed_whole(warehouse, aws, raw_bucket):
    first = session_events("s", DAY_1, [("page_view", None), ("product_view", LAPTOP)])
    later = session_events("s", DAY_1 + timedelta(minutes=10), [("checkout_complete", None)])
    load(warehouse, aws, raw_bucket, first, DAY_1)
    load(warehouse, aws, raw_bucket, later, DAY_1 + timedelta(minutes=10))
    assert warehouse.query("SELECT events, duration_seconds, converted FROM sessions") == [
        (3, 600, True)
    ]


def test_a_load_refreshes_only_the_days_it_touched(warehouse, aws, raw_bucket):
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_1), DAY_1)
    # Mark day 1's rollup: a refresh of day 1 would overwrite it.
    warehouse.query("UPDATE rollup_funnel_daily SET sessions = 999 RETURNING 1")
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_2), DAY_2)
    assert warehouse.query("SELECT day, sessions FROM rollup_funnel_daily ORDER BY day") == [
        (date(2025, 12, 1), 999),
        (date(2025, 12, 2), 2),
    ]


def test_days_are_cut_in_the_reporting_time_zone(warehouse, aws, raw_bucket):
    warehouse.query(
        "UPDATE warehouse_settings SET value = 'Asia/Ho_Chi_Minh' "
        "WHERE name = 'reporting_time_zone' RETURNING 1"
    )
    late_evening_utc = datetime(2025, 12, 1, 20, 0, tzinfo=UTC)  # 03:00 on Dec 2 in Vietnam
    load(
        warehouse,
        aws,
        raw_bucket,
        converting_and_browsing_sessions(late_evening_utc),
        late_evening_utc,
    )
    assert warehouse.query("SELECT day FROM rollup_funnel_daily") == [(date(2025, 12, 2),)]


def test_a_forced_reload_leaves_every_aggregate_unchanged(warehouse, aws, raw_bucket):
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_1), DAY_1)
    aggregates = (
        "SELECT (SELECT array_agg(f ORDER BY day) FROM rollup_funnel_daily f),"
        " (SELECT array_agg(s.events ORDER BY session_id) FROM sessions s)"
    )
    before = warehouse.query(aggregates)
    connection = warehouse.etl_connection()
    try:
        loader.run_window(
            connection, aws.client("s3"), raw_bucket, start=DAY_1, end=DAY_1, force=True
        )
    finally:
        connection.close()
    assert warehouse.query(aggregates) == before


def visitor_rows(warehouse) -> list[tuple]:
    return warehouse.query(
        "SELECT visitor_id, product_category, product_brand, day, furthest_step, "
        "previous_days::text FROM visitor_days WHERE visitor_kind = 'client' ORDER BY 1, 2, 3, 4"
    )


def test_sessions_count_in_every_scope_of_the_products_they_touched(warehouse, aws, raw_bucket):
    load(warehouse, aws, raw_bucket, converting_and_browsing_sessions(DAY_1), DAY_1)
    rows = warehouse.query(
        "SELECT product_category, product_brand, sessions, product_view_sessions, "
        "add_to_cart_sessions, checkout_sessions, purchase_sessions, converted_sessions "
        "FROM rollup_sessions_daily ORDER BY 1, 2"
    )
    # The buyer viewed, carted and bought a Dell laptop; the browser viewed it and a mouse.
    assert rows == [
        ("", "", 2, 2, 1, 1, 1, 1),
        ("", "Dell", 2, 2, 1, 1, 1, 1),
        ("", "Logitech", 1, 1, 0, 0, 0, 0),
        ("laptop", "", 2, 2, 1, 1, 1, 1),
        ("laptop", "Dell", 2, 2, 1, 1, 1, 1),
        ("mouse", "", 1, 1, 0, 0, 0, 0),
        ("mouse", "Logitech", 1, 1, 0, 0, 0, 0),
    ]
    # Every event; in a scope, the views and add-to-carts of its products.
    assert warehouse.query(
        "SELECT product_category, product_brand, events FROM rollup_events_hourly ORDER BY 1, 2"
    ) == [
        ("", "", 8),
        ("", "Dell", 3),
        ("", "Logitech", 1),
        ("laptop", "", 3),
        ("laptop", "Dell", 3),
        ("mouse", "", 1),
        ("mouse", "Logitech", 1),
    ]


def test_a_visitor_day_remembers_the_visitor_s_previous_day_per_step(warehouse, aws, raw_bucket):
    browsing = session_events("monday", DAY_1, [("page_view", None), ("product_view", MOUSE)])
    buying = session_events(
        "tuesday", DAY_2, [("product_view", LAPTOP), ("add_to_cart_click", LAPTOP)]
    )
    for record in browsing + buying:
        record["event"]["clientId"] = "client-loyal"
    load(warehouse, aws, raw_bucket, browsing, DAY_1)
    load(warehouse, aws, raw_bucket, buying, DAY_2)
    day_1, day_2 = DAY_1.date(), DAY_2.date()
    nothing_before = "{-infinity,-infinity,-infinity,-infinity,-infinity}"
    assert [row for row in visitor_rows(warehouse) if row[1:3] == ("", "")] == [
        ("client-loyal", "", "", day_1, 1, nothing_before),
        # Seen on day 1 (any session, a product view), never carted before day 2.
        ("client-loyal", "", "", day_2, 2, f"{{{day_1},{day_1},-infinity,-infinity,-infinity}}"),
    ]
    # Distinct over both days: one visitor, though each day counts it.
    assert (
        warehouse.scalar(
            "SELECT sum(visitors) FROM rollup_visitors_daily WHERE visitor_kind = 'client' "
            "AND product_category = '' AND product_brand = '' AND step = 0 "
            "AND day BETWEEN %s AND %s AND previous_day < %s",
            (day_1, day_2, day_1),
        )
        == 1
    )


def test_a_late_event_moves_a_session_and_its_visitor_to_the_earlier_day(
    warehouse, aws, raw_bucket
):
    after_midnight = datetime(2025, 12, 2, 0, 5, tzinfo=UTC)
    load(warehouse, aws, raw_bucket, session_events("s", after_midnight, [("page_view", None)]),
         after_midnight)  # fmt: skip
    assert [row[3] for row in visitor_rows(warehouse)] == [date(2025, 12, 2)]
    before_midnight = after_midnight - timedelta(minutes=10)
    load(warehouse, aws, raw_bucket, session_events("s", before_midnight, [("page_view", None)]),
         before_midnight)  # fmt: skip
    assert [row[3] for row in visitor_rows(warehouse)] == [date(2025, 12, 1)]
    assert warehouse.query(
        "SELECT day, sessions FROM rollup_sessions_daily WHERE product_category = ''"
    ) == [(date(2025, 12, 1), 1)]
    assert warehouse.query(
        "SELECT day, step, visitors FROM rollup_visitors_daily WHERE visitor_kind = 'client'"
    ) == [(date(2025, 12, 1), 0, 1)]


def test_a_refresh_leaves_no_page_range_of_the_events_unsummarized(warehouse, aws, raw_bucket):
    """Unsummarized BRIN ranges match every time range: each read of the rollups' refresh (and
    of the dashboards' freshness) would scan all of them."""
    records = [
        raw_record(tracker_event("page_view", sessionId=f"s-{n // 5}"), DAY_1)
        for n in range(5000)  # a few hundred pages: several 32-page ranges
    ]
    load(warehouse, aws, raw_bucket, records, DAY_1)
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == len(records)
    summarize = "SELECT brin_summarize_new_values('clickstream_events_event_timestamp_brin')"
    assert warehouse.scalar(summarize) == 0

"""The rollups the ETL keeps incrementally equal the same rollups rebuilt from scratch.

Loads cut sessions, days and visitors' histories in pieces, in order and out of order; after
them, every table the refresh steps keep must hold what a rebuild from the events alone gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clickstream import loader
from tests.raw_events import put_raw_object, raw_record
from tools.synthetic_shop import Shop, hourly_batches

DAY = datetime(2025, 12, 1, tzinfo=UTC)
# Every table a refresh step keeps, in a stable order.
SNAPSHOT = {
    "sessions": "SELECT session_id, client_id, user_id, session_start, session_end, events, "
    "product_views, add_to_carts, checkout_starts, converted, page_paths FROM sessions ORDER BY 1",
    "session_products": "SELECT * FROM session_products ORDER BY 1, 2, 3",
    "rollup_page_transitions_daily": "SELECT * FROM rollup_page_transitions_daily ORDER BY 1, 2, 3",
    "session_journeys": "SELECT * FROM session_journeys ORDER BY 1",
    "rollup_journey_paths_daily": "SELECT * FROM rollup_journey_paths_daily ORDER BY 1, 2",
    "rollup_activity_hourly": "SELECT * FROM rollup_activity_hourly ORDER BY 1",
    "rollup_funnel_daily": "SELECT * FROM rollup_funnel_daily ORDER BY 1",
    "rollup_product_daily": "SELECT * FROM rollup_product_daily ORDER BY 1, 2",
    "rollup_events_hourly": "SELECT * FROM rollup_events_hourly ORDER BY 1, 2, 3",
    "rollup_sessions_daily": "SELECT * FROM rollup_sessions_daily ORDER BY 1, 2, 3",
    # As text: psycopg2 reads no '-infinity' date.
    "visitor_days": "SELECT visitor_kind, visitor_id, product_category, product_brand, day, "
    "furthest_step, previous_days::text FROM visitor_days ORDER BY 1, 2, 3, 4, 5",
    "rollup_visitors_daily": "SELECT visitor_kind, product_category, product_brand, day, step, "
    "previous_day::text, visitors FROM rollup_visitors_daily ORDER BY 1, 2, 3, 4, 5, 6",
}
# Hours (from DAY) of consecutive loads: sessions, local days and visitors' days cut in pieces.
IN_ORDER = [(0, 16), (17, 17), (18, 50), (51, 95)]
# Later days first, then the gaps: sessions whose start moves earlier, previous days that change.
OUT_OF_ORDER = [(48, 95), (20, 30), (0, 19), (40, 47), (31, 39)]


def snapshot(warehouse) -> dict[str, list[tuple]]:
    return {table: warehouse.query(statement) for table, statement in SNAPSHOT.items()}


def rebuild_from_scratch(warehouse) -> None:
    """Empty every table the refresh keeps, then refresh every hour with events."""
    statements = [f"DELETE FROM {table}" for table in SNAPSHOT]
    connection = warehouse.admin_connection()
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            cursor.execute("SELECT mark_range_dirty('-infinity', 'infinity')")
            cursor.execute("SELECT * FROM refresh_dirty_aggregates()")
        connection.commit()
    finally:
        connection.close()


def write_shop(s3, bucket: str) -> None:
    """Four days of a shop whose few visitors come back day after day."""
    shop = Shop(seed=5, visitors=40)
    for received_at, events in hourly_batches(
        shop.sessions_between(DAY, DAY + timedelta(days=4), sessions_per_day=150)
    ):
        put_raw_object(s3, bucket, [raw_record(e, received_at) for e in events], received_at)


@pytest.mark.parametrize("windows", [IN_ORDER, OUT_OF_ORDER], ids=["in order", "out of order"])
def test_loads_in_pieces_give_the_rollups_of_a_rebuild_from_scratch(
    warehouse, aws, raw_bucket, windows
):
    warehouse.query(
        "UPDATE warehouse_settings SET value = 'Asia/Ho_Chi_Minh' "
        "WHERE name = 'reporting_time_zone' RETURNING 1"
    )
    s3 = aws.client("s3")
    write_shop(s3, raw_bucket)
    connection = warehouse.etl_connection()
    try:
        for start, end in windows:
            loader.run_window(
                connection, s3, raw_bucket,
                start=DAY + timedelta(hours=start), end=DAY + timedelta(hours=end),
            )  # fmt: skip
    finally:
        connection.close()
    incremental = snapshot(warehouse)
    rebuild_from_scratch(warehouse)
    rebuilt = snapshot(warehouse)
    assert all(rebuilt.values())
    assert [table for table in SNAPSHOT if incremental[table] != rebuilt[table]] == []
    # Visitors came back on other days: some previous days are more than "none".
    came_back = "SELECT count(*) FROM visitor_days WHERE previous_days[1] > '-infinity'"
    assert warehouse.scalar(came_back) > 0

"""The rollups of migration 0005 kept incrementally by the ETL equal a rebuild from scratch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from clickstream import loader
from tools import synthetic_shop

DAY = datetime(2025, 12, 1, tzinfo=UTC)
SNAPSHOT = {
    "session_products": "SELECT * FROM session_products ORDER BY 1, 2, 3",
    "rollup_page_transitions_daily": "SELECT * FROM rollup_page_transitions_daily ORDER BY 1, 2, 3",
}


def snapshot(warehouse) -> dict[str, list[tuple]]:
    return {table: warehouse.query(statement) for table, statement in SNAPSHOT.items()}


def test_loads_split_inside_sessions_give_the_rollups_of_a_full_rebuild(warehouse, aws, raw_bucket):
    warehouse.query(
        "UPDATE warehouse_settings SET value = 'Asia/Ho_Chi_Minh' "
        "WHERE name = 'reporting_time_zone' RETURNING 1"
    )
    assert synthetic_shop.main(
        ["write-raw", "--bucket", raw_bucket, "--start", "2025-12-01", "--days", "2",
         "--sessions-per-day", "200", "--seed", "5"]
    ) == 0  # fmt: skip
    connection = warehouse.etl_connection()
    try:
        # Three loads whose boundaries cut sessions (and a local day) in two.
        for start, end in ((0, 16), (17, 17), (18, 50)):
            loader.run_window(
                connection, aws.client("s3"), raw_bucket,
                start=DAY + timedelta(hours=start), end=DAY + timedelta(hours=end),
            )  # fmt: skip
        incremental = snapshot(warehouse)
        with connection.cursor() as cursor:
            cursor.execute("SELECT mark_range_dirty('-infinity', 'infinity')")
            cursor.execute("SELECT * FROM refresh_dirty_aggregates()")
        connection.commit()
    finally:
        connection.close()
    assert all(incremental.values())
    assert snapshot(warehouse) == incremental

"""Dashboard panels: each panel's query (files/dashboard/queries.sql, on the rollups) vs the
same panel computed from the raw events table, at the default range and at 90 days.

    .venv/bin/python benchmarks/dashboard_queries.py                   # N = 10,000,000 events
    .venv/bin/python benchmarks/dashboard_queries.py --events 500000 --repeat 10

Starts its own PostgreSQL (Debian's server) on loopback, generates N events of the synthetic shop
(tools/synthetic_shop.py) over --days days, maps them as the ETL does (clickstream.mapping), COPYs
them in a day at a time and refreshes the rollups after each day as the ETL does after a load.
Then runs every panel --repeat times with the parameters the app binds and prints p50/p95 in
milliseconds; where a raw-table version exists, it runs that too and checks both give the same rows.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY / "lambda_src"), str(REPOSITORY)]

from clickstream import migrations  # noqa: E402
from clickstream.mapping import WAREHOUSE_COLUMNS, new_raw_record, warehouse_row  # noqa: E402
from tests.dashboard import named_queries  # noqa: E402
from tests.fixtures.postgres import remove_cluster, start_throwaway_cluster  # noqa: E402
from tools.synthetic_shop import SHOP_TIME_ZONE, Shop, event_time  # noqa: E402

EVENTS_PER_SESSION = 7.4  # what the synthetic shop averages; sizes sessions per day from N
FIRST_DAY = date(2025, 6, 1)

_TZ = """tz AS (
    SELECT coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC') AS zone
), bounds AS (
    SELECT zone,
           CAST(?date_from AS date)::timestamp AT TIME ZONE zone AS range_start,
           (CAST(?date_to AS date) + 1)::timestamp AT TIME ZONE zone AS range_end
    FROM tz
)"""
# Sessions from the raw events: those with an event in the range (or the day before it, since a
# session lasts well under a day) whose first event is in the range.
_RAW_SESSIONS = """raw_sessions AS (
    SELECT e.session_id, min(e.event_timestamp) AS session_start, min(e.client_id) AS client_id,
           max(e.user_id) AS user_id,
           count(*) FILTER (WHERE e.event_name = 'checkout_start') AS checkout_starts,
           bool_or(e.event_name = 'checkout_complete') AS converted
    FROM clickstream_events AS e, bounds AS b
    WHERE e.event_timestamp >= b.range_start - interval '1 day'
      AND e.event_timestamp < b.range_end AND e.session_id IS NOT NULL
    GROUP BY e.session_id
    HAVING min(e.event_timestamp) >= min(b.range_start)
)"""

RAW_QUERIES = {
    "overview_daily": f"""
WITH {_TZ}, {_RAW_SESSIONS}, events AS (
    SELECT (e.event_timestamp AT TIME ZONE b.zone)::date AS day, count(*) AS events
    FROM clickstream_events AS e, bounds AS b
    WHERE e.event_timestamp >= b.range_start AND e.event_timestamp < b.range_end
    GROUP BY 1
), started AS (
    SELECT (s.session_start AT TIME ZONE b.zone)::date AS day, count(*) AS sessions
    FROM raw_sessions AS s, bounds AS b
    GROUP BY 1
)
SELECT day, coalesce(e.events, 0) AS events, coalesce(s.sessions, 0) AS sessions
FROM events AS e FULL JOIN started AS s USING (day)
ORDER BY day""",
    "funnel_daily": f"""
WITH {_TZ}, {_RAW_SESSIONS}, chosen AS (
    SELECT (s.session_start AT TIME ZONE b.zone)::date AS day,
           bool_or(e.event_name = 'product_view') AS viewed,
           bool_or(e.event_name = 'add_to_cart_click') AS carted,
           s.checkout_starts > 0 AS checkout_started, s.converted
    FROM bounds AS b
    JOIN raw_sessions AS s ON true
    JOIN clickstream_events AS e ON e.session_id = s.session_id
    WHERE e.event_timestamp >= b.range_start - interval '1 day'
      AND e.event_timestamp < b.range_end + interval '1 day'
      AND e.event_name IN ('product_view', 'add_to_cart_click')
      AND e.context_product_id IS NOT NULL
      AND (?category = '' OR e.context_product_category = ?category)
      AND (?brand = '' OR e.context_product_brand = ?brand)
    GROUP BY s.session_id, 1, s.checkout_starts, s.converted
)
SELECT day,
       count(*) FILTER (WHERE viewed) AS product_view_sessions,
       count(*) FILTER (WHERE viewed AND carted) AS add_to_cart_sessions,
       count(*) FILTER (WHERE viewed AND carted AND checkout_started) AS checkout_sessions,
       count(*) FILTER (WHERE viewed AND carted AND checkout_started AND converted)
           AS purchase_sessions
FROM chosen GROUP BY day ORDER BY day""",
    "products_top": f"""
WITH {_TZ}
SELECT e.context_product_id AS product_id,
       max(e.context_product_name) AS product_name,
       max(e.context_product_category) AS category,
       max(e.context_product_brand) AS brand,
       count(*) FILTER (WHERE e.event_name = 'product_view') AS views,
       count(*) FILTER (WHERE e.event_name = 'add_to_cart_click') AS add_to_carts,
       (count(*) FILTER (WHERE e.event_name = 'add_to_cart_click'))::double precision
           / nullif(count(*) FILTER (WHERE e.event_name = 'product_view'), 0) AS view_to_cart
FROM clickstream_events AS e, bounds AS b
WHERE e.event_timestamp >= b.range_start AND e.event_timestamp < b.range_end
  AND e.context_product_id IS NOT NULL
  AND e.event_name IN ('product_view', 'add_to_cart_click')
  AND (?category = '' OR e.context_product_category = ?category)
  AND (?brand = '' OR e.context_product_brand = ?brand)
GROUP BY e.context_product_id
ORDER BY views DESC, add_to_carts DESC, product_id
LIMIT 20""",
    "activity_heatmap": f"""
WITH {_TZ}
SELECT extract(isodow FROM e.event_timestamp AT TIME ZONE b.zone)::integer AS weekday,
       extract(hour FROM e.event_timestamp AT TIME ZONE b.zone)::integer AS hour,
       count(*) AS events
FROM clickstream_events AS e, bounds AS b
WHERE e.event_timestamp >= b.range_start AND e.event_timestamp < b.range_end
GROUP BY 1, 2 ORDER BY 1, 2""",
    "journey_entry_pages": f"""
WITH {_TZ}, {_RAW_SESSIONS}, firsts AS (
    SELECT DISTINCT ON (e.session_id) page_path(e.page_url) AS page
    FROM raw_sessions AS s
    JOIN clickstream_events AS e ON e.session_id = s.session_id
    WHERE e.event_name = 'page_view'
    ORDER BY e.session_id, e.event_timestamp, e.event_id
)
SELECT page, count(*) AS sessions,
       count(*)::double precision / sum(count(*)) OVER () AS share
FROM firsts GROUP BY page ORDER BY sessions DESC, page LIMIT 15""",
}


def load(connection, events: int, days: int, seed: int) -> int:
    """N events of the synthetic shop, a day per COPY, rollups refreshed after each day."""
    sessions_per_day = events / days / EVENTS_PER_SESSION
    shop = Shop(seed=seed)
    start = datetime.combine(FIRST_DAY, datetime.min.time(), UTC)
    loaded, began = 0, time.monotonic()
    pending: list[dict] = []
    for day in range(days):
        day_start = start + timedelta(days=day)
        for session in shop.sessions_between(
            day_start, day_start + timedelta(days=1), sessions_per_day
        ):
            pending.extend(session)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for event in pending:
            moment = event_time(event)
            writer.writerow(
                warehouse_row(
                    new_raw_record(event, received_at=moment, request_id=None, user_agent=None)
                )
            )
        buffer.seek(0)
        with connection.cursor() as cursor:
            cursor.copy_expert(
                f"COPY clickstream_events ({', '.join(WAREHOUSE_COLUMNS)}) FROM STDIN (FORMAT csv)",
                buffer,
            )
            cursor.execute(
                "SELECT mark_range_dirty(%s, %s)", (day_start - timedelta(days=1), "infinity")
            )
            cursor.execute("SELECT * FROM refresh_dirty_aggregates()")
        connection.commit()
        if day % 7 == 6:  # autovacuum's ANALYZE, which a throwaway cluster may not run in time
            analyze(connection)
        loaded += len(pending)
        pending = []
        rate = loaded / (time.monotonic() - began)
        sys.stderr.write(f"\rloaded {loaded:,} events, day {day + 1}/{days}, {rate:,.0f}/s ")
    sys.stderr.write("\n")
    analyze(connection, "VACUUM ANALYZE")
    return loaded


def analyze(connection, command: str = "ANALYZE") -> None:
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(command)
    connection.autocommit = False


def timed(connection, statement: str, parameters: dict, repeat: int) -> tuple[list, list[float]]:
    timings, rows = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = named_queries.run(connection, statement, parameters)
        timings.append((time.perf_counter() - started) * 1000)
    return rows, timings


def percentiles(timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):9.1f} {p95:9.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=120, help="days of history (>= 90)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    cluster = start_throwaway_cluster(shared_buffers="512MB", work_mem="32MB")
    try:
        cluster.execute_autocommit("CREATE DATABASE bench_dashboard")
        connection = cluster.connect("bench_dashboard")
        migrations.apply_migrations(connection)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE warehouse_settings SET value = %s WHERE name = 'reporting_time_zone'",
                (SHOP_TIME_ZONE,),
            )
        connection.commit()
        connection.autocommit = False
        count = load(connection, arguments.events, arguments.days, arguments.seed)
        connection.autocommit = True
        queries = named_queries.load()
        [bounds] = named_queries.run(connection, queries["data_bounds"], {})
        [page] = named_queries.run(
            connection,
            queries["journey_pages"],
            {"date_from": "1900-01-01", "date_to": "9999-12-31"},
        )[:1]
        last = bounds["last_day"]
        ranges = {"7 days": last - timedelta(days=6), "90 days": last - timedelta(days=89)}
        print(f"\n{count:,} events over {arguments.days} days; {arguments.repeat} runs each (ms)")
        print(f"{'panel':28} {'range':8} {'rollup p50':>10} {'p95':>9}   {'raw p50':>9} {'p95':>9}")
        for name, statement in queries.items():
            for label, first in ranges.items():
                parameters = {
                    "date_from": str(first), "date_to": str(last), "category": "", "brand": "",
                    "page": page["page"],
                }  # fmt: skip
                rows, timings = timed(connection, statement, parameters, arguments.repeat)
                line = f"{name:28} {label:8} {percentiles(timings)}"
                if name in RAW_QUERIES:
                    raw_rows, raw_timings = timed(
                        connection, RAW_QUERIES[name], parameters, max(3, arguments.repeat // 4)
                    )
                    same = "" if raw_rows == rows else "   (raw rows differ!)"
                    line += f"   {percentiles(raw_timings)}{same}"
                print(line, flush=True)
        connection.close()
    finally:
        remove_cluster(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())

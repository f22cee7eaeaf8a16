"""Dashboard panels: each panel's query (files/dashboard/queries.sql, on the rollups) vs the
same panel computed from the raw events table, at the default range and at 90 days.

    .venv/bin/python benchmarks/dashboard_queries.py                   # N = 10,000,000 events
    .venv/bin/python benchmarks/dashboard_queries.py --events 500000 --repeat 10

Starts its own PostgreSQL (Debian's server, the postgresql role's planner settings) on loopback
and a moto S3 server, generates N events of the synthetic shop (tools/synthetic_shop.py) over
--days days and loads them through the ETL's load path, a day per window run
(benchmarks/shop_through_etl.py): raw NDJSON objects in S3, loader.run_window, its incremental
refresh of sessions and rollups. Prints the load's wall time, then runs every query --repeat
times with the parameters the app binds, without a filter and with --category (for the panels
that take one), and prints p50/p95 in milliseconds; for every panel it also runs the same panel
computed from clickstream_events, checks that both give the same rows, and prints the speedup
(raw p50 / rollup p50) against the targets: p95 < 100 ms and at least 50 times faster.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from datetime import timedelta

from recording import add_output_option, recorded
from shop_through_etl import (
    POSTGRES_SETTINGS,
    DaysLoaded,
    load_days,
    new_warehouse,
    raw_bucket,
)

from tests.dashboard import named_queries
from tests.fixtures.postgres import remove_cluster, start_throwaway_cluster

TARGET_P95_MS = 100
TARGET_SPEEDUP = 50

_BOUNDS = """tz AS (
    SELECT coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC') AS zone
), bounds AS (
    SELECT zone,
           CAST(?date_from AS date)::timestamp AT TIME ZONE zone AS range_start,
           (CAST(?date_to AS date) + 1)::timestamp AT TIME ZONE zone AS range_end
    FROM tz
)"""
# A product view or add-to-cart of the chosen category and brand ('' for any).
_IN_SCOPE = """(e.event_name IN ('product_view', 'add_to_cart_click')
      AND e.context_product_id IS NOT NULL
      AND ?category IN ('', coalesce(e.context_product_category, '(none)'))
      AND ?brand IN ('', coalesce(e.context_product_brand, '(none)')))"""
_UNFILTERED = "(?category = '' AND ?brand = '')"
# Events of the scope: all of them without a filter, else its product views and add-to-carts.
_SCOPE_EVENTS = f"""scope_events AS (
    SELECT (e.event_timestamp AT TIME ZONE b.zone) AS local_time
    FROM clickstream_events AS e, bounds AS b
    WHERE e.event_timestamp >= b.range_start AND e.event_timestamp < b.range_end
      AND ({_UNFILTERED} OR {_IN_SCOPE})
)"""
# Sessions started in the range, from their events (a session lasts well under a day): how far
# they got in the scope; scope_sessions are all of them without a filter, else those in it.
_RAW_SESSIONS = f"""raw_sessions AS (
    SELECT e.session_id,
           (min(e.event_timestamp) AT TIME ZONE min(b.zone))::date AS day,
           min(e.client_id) AS client_id,
           max(e.user_id) AS user_id,
           bool_or(e.event_name = 'checkout_start') AS checkout_started,
           bool_or(e.event_name = 'checkout_complete') AS converted,
           bool_or({_IN_SCOPE}) AS touched,
           bool_or({_IN_SCOPE} AND e.event_name = 'product_view') AS viewed,
           bool_or({_IN_SCOPE} AND e.event_name = 'add_to_cart_click') AS carted
    FROM clickstream_events AS e, bounds AS b
    WHERE e.event_timestamp >= b.range_start - interval '1 day'
      AND e.event_timestamp < b.range_end + interval '1 day'
      AND e.session_id IS NOT NULL
    GROUP BY e.session_id
    HAVING min(e.event_timestamp) >= min(b.range_start)
       AND min(e.event_timestamp) < min(b.range_end)
), scope_sessions AS (
    SELECT *,
           viewed AS step_1,
           viewed AND carted AS step_2,
           viewed AND carted AND checkout_started AS step_3,
           viewed AND carted AND checkout_started AND converted AS step_4
    FROM raw_sessions
    WHERE {_UNFILTERED} OR touched
)"""
# Page moves of the sessions started in the range (journeys take no filter).
_RAW_MOVES = f"""{_BOUNDS}, {_RAW_SESSIONS}, views AS (
    SELECT page_path(e.page_url) AS page,
           lag(page_path(e.page_url)) OVER w AS previous_page,
           lead(e.event_id) OVER w IS NULL AS is_last
    FROM raw_sessions AS s
    JOIN clickstream_events AS e ON e.session_id = s.session_id, bounds AS b
    WHERE e.event_name = 'page_view'
      AND e.event_timestamp >= b.range_start AND e.event_timestamp < b.range_end + interval '1 day'
    WINDOW w AS (PARTITION BY e.session_id ORDER BY e.event_timestamp, e.event_id)
), moves AS (
    SELECT coalesce(previous_page, '(entry)') AS from_page, page AS to_page FROM views
    UNION ALL
    SELECT page, '(exit)' FROM views WHERE is_last
)"""
_RAW_PRODUCTS = """SELECT {key},
       count(*) FILTER (WHERE e.event_name = 'product_view') AS views,
       count(*) FILTER (WHERE e.event_name = 'add_to_cart_click') AS add_to_carts,
       (count(*) FILTER (WHERE e.event_name = 'add_to_cart_click'))::double precision
           / nullif(count(*) FILTER (WHERE e.event_name = 'product_view'), 0) AS view_to_cart
FROM clickstream_events AS e, bounds AS b
WHERE e.event_timestamp >= b.range_start AND e.event_timestamp < b.range_end
  AND e.context_product_id IS NOT NULL
  AND e.event_name IN ('product_view', 'add_to_cart_click')
  AND (?category = '' OR e.context_product_category = ?category)
  AND (?brand = '' OR e.context_product_brand = ?brand)"""


def _funnel_visitors(per_day: bool) -> str:
    key = "day, " if per_day else ""
    steps = ", ".join(
        f"count(DISTINCT visitor) FILTER (WHERE step_{step}) AS {name}_users"
        for step, name in enumerate(("product_view", "add_to_cart", "checkout", "purchase"), 1)
    )
    return f"""
WITH {_BOUNDS}, {_RAW_SESSIONS}, visitors AS (
    SELECT *, CASE ?visitor_kind WHEN 'client' THEN client_id ELSE user_id END AS visitor
    FROM scope_sessions
)
SELECT {key}{steps}
FROM visitors {"WHERE step_1 GROUP BY day ORDER BY day" if per_day else ""}"""


def _activity(select: str, more: str = "") -> str:
    return f"""
WITH {_BOUNDS}, {_SCOPE_EVENTS}{more}
{select}"""


RAW_QUERIES = {
    "overview_kpis": f"""
WITH tz AS (
    SELECT coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC') AS zone
), periods AS (
    SELECT 'current' AS period, CAST(?date_from AS date) AS first_day,
           CAST(?date_to AS date) AS last_day
    UNION ALL
    SELECT 'previous',
           CAST(?date_from AS date) - (CAST(?date_to AS date) - CAST(?date_from AS date) + 1),
           CAST(?date_from AS date) - 1
), bounds AS (
    SELECT zone,
           min(first_day)::timestamp AT TIME ZONE zone AS range_start,
           (max(last_day) + 1)::timestamp AT TIME ZONE zone AS range_end
    FROM periods, tz GROUP BY zone
), {_SCOPE_EVENTS}, {_RAW_SESSIONS}
SELECT p.period,
       p.first_day::timestamp AT TIME ZONE tz.zone AS period_start,
       (p.last_day + 1)::timestamp AT TIME ZONE tz.zone AS period_end,
       (SELECT count(*) FROM scope_events AS e
        WHERE e.local_time::date BETWEEN p.first_day AND p.last_day) AS events,
       count(s.session_id) AS sessions,
       count(DISTINCT s.client_id) AS clients,
       count(DISTINCT s.user_id) AS logged_in_users,
       count(s.session_id) FILTER (WHERE s.converted) AS converted_sessions,
       (count(s.session_id) FILTER (WHERE s.converted))::double precision
           / nullif(count(s.session_id), 0) AS conversion_rate
FROM periods AS p
CROSS JOIN tz
LEFT JOIN scope_sessions AS s ON s.day BETWEEN p.first_day AND p.last_day
GROUP BY p.period, p.first_day, p.last_day, tz.zone
ORDER BY p.period""",
    "overview_daily": f"""
WITH {_BOUNDS}, {_SCOPE_EVENTS}, {_RAW_SESSIONS}, events AS (
    SELECT local_time::date AS day, count(*) AS events FROM scope_events GROUP BY 1
), started AS (
    SELECT day, count(*) AS sessions FROM scope_sessions GROUP BY 1
)
SELECT day, coalesce(e.events, 0) AS events, coalesce(s.sessions, 0) AS sessions
FROM events AS e FULL JOIN started AS s USING (day)
ORDER BY day""",
    "funnel_daily": f"""
WITH {_BOUNDS}, {_RAW_SESSIONS}
SELECT day,
       count(*) FILTER (WHERE step_1) AS product_view_sessions,
       count(*) FILTER (WHERE step_2) AS add_to_cart_sessions,
       count(*) FILTER (WHERE step_3) AS checkout_sessions,
       count(*) FILTER (WHERE step_4) AS purchase_sessions
FROM scope_sessions GROUP BY day ORDER BY day""",
    "funnel_visitors_daily": _funnel_visitors(per_day=True),
    "funnel_visitors_total": _funnel_visitors(per_day=False),
    "products_top": f"""
WITH {_BOUNDS}
{
        _RAW_PRODUCTS.format(
            key='''e.context_product_id AS product_id,
       max(e.context_product_name) AS product_name,
       max(e.context_product_category) AS category,
       max(e.context_product_brand) AS brand'''
        )
    }
GROUP BY e.context_product_id
ORDER BY views DESC, add_to_carts DESC, product_id
LIMIT 20""",
    "products_by_category_brand": f"""
WITH {_BOUNDS}
{
        _RAW_PRODUCTS.format(
            key='''e.context_product_category AS category,
       e.context_product_brand AS brand,
       count(DISTINCT e.context_product_id) AS products'''
        )
    }
GROUP BY e.context_product_category, e.context_product_brand
ORDER BY views DESC, add_to_carts DESC, category, brand""",
    "activity_heatmap": _activity("""
SELECT extract(isodow FROM local_time)::integer AS weekday,
       extract(hour FROM local_time)::integer AS hour,
       count(*) AS events
FROM scope_events GROUP BY 1, 2 ORDER BY 1, 2"""),
    "activity_busiest_hours": _activity(
        """
SELECT hour, events, events::double precision / sum(events) OVER () AS share
FROM hours ORDER BY events DESC, hour LIMIT 5""",
        more=""", hours AS (
    SELECT extract(hour FROM local_time)::integer AS hour, count(*) AS events
    FROM scope_events GROUP BY 1
)""",
    ),
    "journey_paths": f"""
WITH {_BOUNDS}, {_RAW_SESSIONS}, paths AS (
    SELECT journey_path(array_agg(e.event_name ORDER BY e.event_timestamp, e.event_id)) AS path,
           bool_or(s.converted) AS converted
    FROM raw_sessions AS s
    JOIN clickstream_events AS e ON e.session_id = s.session_id, bounds AS b
    WHERE e.event_timestamp >= b.range_start AND e.event_timestamp < b.range_end + interval '1 day'
    GROUP BY s.session_id
)
SELECT path, count(*) AS sessions,
       count(*)::double precision / sum(count(*)) OVER () AS share,
       count(*) FILTER (WHERE converted) AS converted_sessions,
       (count(*) FILTER (WHERE converted))::double precision / count(*) AS conversion
FROM paths GROUP BY path ORDER BY sessions DESC, path LIMIT 20""",
    "journey_pages": f"""
WITH {_RAW_MOVES}
SELECT from_page AS page, count(*) AS moves FROM moves WHERE from_page <> '(entry)'
GROUP BY from_page ORDER BY moves DESC, page LIMIT 100""",
    "journey_next_pages": f"""
WITH {_RAW_MOVES}
SELECT to_page AS next_page, count(*) AS moves,
       count(*)::double precision / sum(count(*)) OVER () AS share
FROM moves WHERE from_page = ?page GROUP BY to_page ORDER BY moves DESC, next_page LIMIT 15""",
    "journey_entry_pages": f"""
WITH {_RAW_MOVES}
SELECT to_page AS page, count(*) AS sessions,
       count(*)::double precision / sum(count(*)) OVER () AS share
FROM moves WHERE from_page = '(entry)' GROUP BY to_page ORDER BY sessions DESC, page LIMIT 15""",
    "journey_exit_pages": f"""
WITH {_RAW_MOVES}
SELECT from_page AS page, count(*) AS sessions,
       count(*)::double precision / sum(count(*)) OVER () AS share
FROM moves WHERE to_page = '(exit)' GROUP BY from_page ORDER BY sessions DESC, page LIMIT 15""",
}
# The panels whose query takes the category and brand filters.
FILTERED = {
    "overview_kpis",
    "overview_daily",
    "funnel_daily",
    "funnel_visitors_daily",
    "funnel_visitors_total",
    "products_top",
    "products_by_category_brand",
    "activity_heatmap",
    "activity_busiest_hours",
}


def timed(connection, statement: str, parameters: dict, repeat: int) -> tuple[list, list[float]]:
    timings, rows = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = named_queries.run(connection, statement, parameters)
        timings.append((time.perf_counter() - started) * 1000)
    return rows, timings


def p50_p95(timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def same_rows(left: list[dict], right: list[dict]) -> bool:
    """Equal, floats to 1e-9 relative (the raw side divides in another order)."""

    def equal(a, b) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-9)
        return a == b

    return len(left) == len(right) and all(
        row.keys() == other.keys() and all(equal(row[k], other[k]) for k in row)
        for row, other in zip(left, right, strict=True)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument(
        "--days", type=int, default=120, help="days of history (90 or more fill the 90-day range)"
    )
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--raw-repeat", type=int, default=3)
    parser.add_argument("--category", default="laptop", help="the filter timed besides none")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="then time a rebuild of every aggregate (mark_range_dirty of all, one refresh)",
    )
    add_output_option(parser)
    arguments = parser.parse_args()
    with recorded(arguments.output):
        cluster = start_throwaway_cluster(**POSTGRES_SETTINGS)
        try:
            with raw_bucket() as bucket:
                connect = new_warehouse(cluster, "bench_dashboard")
                loaded = load_days(
                    bucket, connect, arguments.events, arguments.days, arguments.seed
                )
            cluster.execute_autocommit("VACUUM ANALYZE", "bench_dashboard")
            connection = connect()
            connection.autocommit = True
            print_results(connection, arguments, loaded)
            if arguments.rebuild:
                print_rebuild(connection)
            connection.close()
        finally:
            remove_cluster(cluster)
    return 0


def print_results(connection, arguments, loaded: DaysLoaded) -> None:
    queries = named_queries.load()
    [bounds] = named_queries.run(connection, queries["data_bounds"], {})
    [page] = named_queries.run(
        connection, queries["journey_pages"], {"date_from": "1900-01-01", "date_to": "9999-12-31"}
    )[:1]
    last = bounds["last_day"]
    ranges = {"7 days": last - timedelta(days=6), "90 days": last - timedelta(days=89)}
    print(
        f"\n{loaded.events:,} events over {arguments.days} days, loaded through the ETL "
        f"(a window run per day) in {loaded.seconds:,.0f} s wall time "
        f"({loaded.events / loaded.seconds:,.0f} events/s; "
        f"{loaded.phase_seconds['refresh']:,.0f} s of it refreshing)"
    )
    print(
        f"{arguments.repeat} runs of each rollup query, {arguments.raw_repeat} of each raw "
        f"one (ms); filter: none, or category {arguments.category!r}"
    )
    header = (
        f"{'panel':27} {'range':7} {'filter':8} {'p50':>7} {'p95':>7}   {'raw p50':>8} "
        f"{'raw p95':>8} {'speedup':>8}  targets"
    )
    print(header)
    print("-" * len(header))
    misses = []
    for name, statement in queries.items():
        filters = [""] + ([arguments.category] if name in FILTERED else [])
        for label, first in ranges.items():
            for category in filters:
                parameters = {
                    "date_from": str(first),
                    "date_to": str(last),
                    "category": category,
                    "brand": "",
                    "page": page["page"],
                    "visitor_kind": "client",
                }
                rows, timings = timed(connection, statement, parameters, arguments.repeat)
                p50, p95 = p50_p95(timings)
                line = f"{name:27} {label:7} {category or '-':8} {p50:7.1f} {p95:7.1f}"
                verdict = "p95 ok" if p95 < TARGET_P95_MS else "p95 MISSED"
                if name in RAW_QUERIES:
                    raw_rows, raw_timings = timed(
                        connection, RAW_QUERIES[name], parameters, arguments.raw_repeat
                    )
                    raw_p50, raw_p95 = p50_p95(raw_timings)
                    speedup = raw_p50 / p50
                    line += f"   {raw_p50:8.0f} {raw_p95:8.0f} {speedup:7.0f}x"
                    verdict += ", speedup ok" if speedup >= TARGET_SPEEDUP else ", speedup MISSED"
                    if not same_rows(rows, raw_rows):
                        verdict += ", RAW ROWS DIFFER"
                else:
                    line += f"   {'':8} {'':8} {'':8}"
                if "MISSED" in verdict or "DIFFER" in verdict:
                    misses.append(f"{name} {label} {category or '-'}: {verdict}")
                print(f"{line}  {verdict}", flush=True)
    print()
    print("every panel within the targets" if not misses else "missed:\n  " + "\n  ".join(misses))


def print_rebuild(connection) -> None:
    """What a change of reporting time zone (or a migration's fill) costs: every aggregate."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SELECT mark_range_dirty('-infinity', 'infinity')")
        cursor.execute("SELECT * FROM refresh_dirty_aggregates()")
        hours, days, sessions = cursor.fetchone()
        cursor.execute("COMMIT")
    print(
        f"rebuild of every aggregate ({hours:,} hours, {days:,} days, {sessions:,} sessions): "
        f"{time.perf_counter() - started:,.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())

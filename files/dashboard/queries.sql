-- Every query the dashboards run, by name. The app (R/warehouse.R) and the tests
-- (tests/dashboard/) read this file; nothing else holds SQL for the dashboards.
--
-- A query starts at a line "-- name: <name>" and runs to the next one. Parameters are written
-- ?name and bound as quoted literals (DBI::sqlInterpolate in the app, psycopg2 in the tests):
--   ?date_from, ?date_to  the first and last day of the chosen range (inclusive), 'YYYY-MM-DD',
--                         days in the shop's time zone (warehouse_settings.reporting_time_zone)
--   ?category, ?brand     a product category / brand, or '' for all
--   ?visitor_kind         'client' (users as client ids) or 'user' (logged-in users)
--   ?page                 a page path, as in rollup_page_transitions_daily
--
-- Every panel reads the rollups the ETL keeps; none scans clickstream_events over the chosen
-- range (warehouse_events and freshness read only the last loaded hour of it).
-- Category and brand choose a scope (migration 0007): with either, the events are the product
-- views and add-to-carts of its products, the sessions those with one of them, the users those
-- sessions' visitors. Sessions count on the day they started. Hourly rollups are UTC hours: a day
-- in a zone whose offset is not whole hours is cut at the hour. Distinct users over a range come
-- from rollup_visitors_daily: the users of days a..b whose previous day there is before a.

-- name: data_bounds
-- The first and last day with data: the default range is the last 7 days of data.
WITH tz AS (
    SELECT coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC') AS zone
)
SELECT ((SELECT min(hour_start) FROM rollup_activity_hourly) AT TIME ZONE zone)::date AS first_day,
       ((SELECT max(hour_start) FROM rollup_activity_hourly) AT TIME ZONE zone)::date AS last_day,
       zone AS time_zone
FROM tz;

-- name: filter_options
-- Categories and brands that products were viewed or carted in.
SELECT DISTINCT product_category AS category, product_brand AS brand
FROM rollup_sessions_daily
WHERE product_category <> '' AND product_brand <> ''
ORDER BY category, brand;

-- name: warehouse_events
-- Events in the warehouse: those in the hourly rollup, plus any loaded after its newest hour.
SELECT (SELECT coalesce(sum(events), 0) FROM rollup_activity_hourly)
     + (SELECT count(*) FROM clickstream_events
        WHERE event_timestamp >= coalesce(
            (SELECT max(hour_start) + interval '1 hour' FROM rollup_activity_hourly),
            now() - interval '1 day')) AS events;

-- name: overview_kpis
-- The chosen range ('current') and the range of the same length just before it ('previous').
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
)
SELECT p.period,
       p.first_day::timestamp AT TIME ZONE tz.zone AS period_start,
       (p.last_day + 1)::timestamp AT TIME ZONE tz.zone AS period_end,
       (SELECT coalesce(sum(r.events), 0) FROM rollup_events_hourly AS r
        WHERE r.product_category = ?category AND r.product_brand = ?brand
          AND r.hour_start >= p.first_day::timestamp AT TIME ZONE tz.zone
          AND r.hour_start < (p.last_day + 1)::timestamp AT TIME ZONE tz.zone) AS events,
       s.sessions,
       v.clients,
       v.logged_in_users,
       s.converted_sessions,
       s.converted_sessions::double precision / nullif(s.sessions, 0) AS conversion_rate
FROM periods AS p
CROSS JOIN tz
CROSS JOIN LATERAL (
    SELECT coalesce(sum(r.sessions), 0) AS sessions,
           coalesce(sum(r.converted_sessions), 0) AS converted_sessions
    FROM rollup_sessions_daily AS r
    WHERE r.product_category = ?category AND r.product_brand = ?brand
      AND r.day BETWEEN p.first_day AND p.last_day
) AS s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(r.visitors) FILTER (WHERE r.visitor_kind = 'client'), 0) AS clients,
           coalesce(sum(r.visitors) FILTER (WHERE r.visitor_kind = 'user'), 0) AS logged_in_users
    FROM rollup_visitors_daily AS r
    WHERE r.visitor_kind IN ('client', 'user')
      AND r.product_category = ?category AND r.product_brand = ?brand
      AND r.day BETWEEN p.first_day AND p.last_day
      AND r.step = 0 AND r.previous_day < p.first_day
) AS v
ORDER BY p.period;

-- name: overview_daily
-- Events and sessions per day of the chosen range.
WITH tz AS (
    SELECT coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC') AS zone
), events AS (
    SELECT (r.hour_start AT TIME ZONE tz.zone)::date AS day, sum(r.events) AS events
    FROM rollup_events_hourly AS r, tz
    WHERE r.product_category = ?category AND r.product_brand = ?brand
      AND r.hour_start >= CAST(?date_from AS date)::timestamp AT TIME ZONE tz.zone
      AND r.hour_start < (CAST(?date_to AS date) + 1)::timestamp AT TIME ZONE tz.zone
    GROUP BY 1
), started AS (
    SELECT day, sessions
    FROM rollup_sessions_daily
    WHERE product_category = ?category AND product_brand = ?brand
      AND day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
)
SELECT day, coalesce(e.events, 0) AS events, coalesce(s.sessions, 0) AS sessions
FROM events AS e FULL JOIN started AS s USING (day)
ORDER BY day;

-- name: funnel_daily
-- Sessions that viewed a product (of the chosen category and brand), then also added one to the
-- cart, then also started checkout, then also completed it; by the day the session started.
SELECT day,
       product_view_sessions,
       add_to_cart_sessions,
       checkout_sessions,
       purchase_sessions
FROM rollup_sessions_daily
WHERE product_category = ?category AND product_brand = ?brand
  AND day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
ORDER BY day;

-- name: funnel_visitors_daily
-- The same steps counted in users (?visitor_kind): per day, the users with a session started
-- that day that got that far.
SELECT day,
       sum(visitors) FILTER (WHERE step = 1) AS product_view_users,
       coalesce(sum(visitors) FILTER (WHERE step = 2), 0) AS add_to_cart_users,
       coalesce(sum(visitors) FILTER (WHERE step = 3), 0) AS checkout_users,
       coalesce(sum(visitors) FILTER (WHERE step = 4), 0) AS purchase_users
FROM rollup_visitors_daily
WHERE visitor_kind = ?visitor_kind AND product_category = ?category AND product_brand = ?brand
  AND day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND step >= 1
GROUP BY day
ORDER BY day;

-- name: funnel_visitors_total
-- The users of the whole range at each step: each counted once, however many days they came.
SELECT coalesce(sum(visitors) FILTER (WHERE step = 1), 0) AS product_view_users,
       coalesce(sum(visitors) FILTER (WHERE step = 2), 0) AS add_to_cart_users,
       coalesce(sum(visitors) FILTER (WHERE step = 3), 0) AS checkout_users,
       coalesce(sum(visitors) FILTER (WHERE step = 4), 0) AS purchase_users
FROM rollup_visitors_daily
WHERE visitor_kind = ?visitor_kind AND product_category = ?category AND product_brand = ?brand
  AND day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND step >= 1 AND previous_day < CAST(?date_from AS date);

-- name: products_top
-- The 20 most viewed products of the range; conversion is add-to-carts per view.
SELECT product_id,
       max(product_name) AS product_name,
       max(product_category) AS category,
       max(product_brand) AS brand,
       sum(views) AS views,
       sum(add_to_carts) AS add_to_carts,
       sum(add_to_carts)::double precision / nullif(sum(views), 0) AS view_to_cart
FROM rollup_product_daily
WHERE day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND (?category = '' OR product_category = ?category)
  AND (?brand = '' OR product_brand = ?brand)
GROUP BY product_id
HAVING sum(views) + sum(add_to_carts) > 0
ORDER BY views DESC, add_to_carts DESC, product_id
LIMIT 20;

-- name: products_by_category_brand
-- Views, add-to-carts and conversion per category and brand.
SELECT product_category AS category,
       product_brand AS brand,
       count(DISTINCT product_id) FILTER (WHERE views + add_to_carts > 0) AS products,
       sum(views) AS views,
       sum(add_to_carts) AS add_to_carts,
       sum(add_to_carts)::double precision / nullif(sum(views), 0) AS view_to_cart
FROM rollup_product_daily
WHERE day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND (?category = '' OR product_category = ?category)
  AND (?brand = '' OR product_brand = ?brand)
GROUP BY product_category, product_brand
HAVING sum(views) + sum(add_to_carts) > 0
ORDER BY views DESC, add_to_carts DESC, category, brand;

-- name: activity_heatmap
-- Events per day of the week (1 = Monday) and hour of the day, in the shop's time zone.
WITH tz AS (
    SELECT coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC') AS zone
)
SELECT extract(isodow FROM local_hour)::integer AS weekday,
       extract(hour FROM local_hour)::integer AS hour,
       sum(events) AS events
FROM (
    SELECT r.hour_start AT TIME ZONE tz.zone AS local_hour, r.events
    FROM rollup_events_hourly AS r, tz
    WHERE r.product_category = ?category AND r.product_brand = ?brand
      AND r.hour_start >= CAST(?date_from AS date)::timestamp AT TIME ZONE tz.zone
      AND r.hour_start < (CAST(?date_to AS date) + 1)::timestamp AT TIME ZONE tz.zone
) AS local_activity
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: activity_busiest_hours
-- The five busiest hours of the day (shop's time zone) and their share of the range's events.
WITH tz AS (
    SELECT coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC') AS zone
), hours AS (
    SELECT extract(hour FROM r.hour_start AT TIME ZONE tz.zone)::integer AS hour,
           sum(r.events) AS events
    FROM rollup_events_hourly AS r, tz
    WHERE r.product_category = ?category AND r.product_brand = ?brand
      AND r.hour_start >= CAST(?date_from AS date)::timestamp AT TIME ZONE tz.zone
      AND r.hour_start < (CAST(?date_to AS date) + 1)::timestamp AT TIME ZONE tz.zone
    GROUP BY 1
)
SELECT hour, events, events::double precision / sum(events) OVER () AS share
FROM hours
ORDER BY events DESC, hour
LIMIT 5;

-- name: journey_pages
-- The pages sessions moved on from, most frequent first: the choices of the Journeys page.
SELECT from_page AS page, sum(transitions) AS moves
FROM rollup_page_transitions_daily
WHERE day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND from_page <> '(entry)'
GROUP BY from_page
ORDER BY moves DESC, page
LIMIT 100;

-- name: journey_next_pages
-- Where sessions went after the chosen page: the next page viewed, or '(exit)'.
SELECT to_page AS next_page,
       sum(transitions) AS moves,
       sum(transitions)::double precision / sum(sum(transitions)) OVER () AS share
FROM rollup_page_transitions_daily
WHERE day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND from_page = ?page
GROUP BY to_page
ORDER BY moves DESC, next_page
LIMIT 15;

-- name: journey_entry_pages
-- The first page of a session.
SELECT to_page AS page,
       sum(transitions) AS sessions,
       sum(transitions)::double precision / sum(sum(transitions)) OVER () AS share
FROM rollup_page_transitions_daily
WHERE day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND from_page = '(entry)'
GROUP BY to_page
ORDER BY sessions DESC, page
LIMIT 15;

-- name: journey_exit_pages
-- The last page of a session.
SELECT from_page AS page,
       sum(transitions) AS sessions,
       sum(transitions)::double precision / sum(sum(transitions)) OVER () AS share
FROM rollup_page_transitions_daily
WHERE day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
  AND to_page = '(exit)'
GROUP BY from_page
ORDER BY sessions DESC, page
LIMIT 15;

-- name: journey_paths
-- The most common paths of sessions started in the range (migration 0008: events in order by
-- name, without page_view and click, repeats kept once, 8 steps at most), with how many of their
-- sessions completed a checkout.
SELECT path,
       sum(sessions) AS sessions,
       sum(sessions)::double precision / sum(sum(sessions)) OVER () AS share,
       sum(converted_sessions) AS converted_sessions,
       sum(converted_sessions)::double precision / sum(sessions) AS conversion
FROM rollup_journey_paths_daily
WHERE day BETWEEN CAST(?date_from AS date) AND CAST(?date_to AS date)
GROUP BY path
ORDER BY sessions DESC, path
LIMIT 20;

-- name: quality_last_run
-- The newest ETL run.
SELECT run_id, trigger, status, started_at, finished_at, objects, events_loaded,
       duplicates_skipped, rejected_lines, pending_objects, lag_seconds
FROM etl_runs
ORDER BY started_at DESC
LIMIT 1;

-- name: quality_recent_runs
-- The last 20 ETL runs.
SELECT started_at, trigger, status, objects, events_loaded, events_updated, duplicates_skipped,
       rejected_lines, pending_objects, round(lag_seconds::numeric, 1) AS lag_seconds
FROM etl_runs
ORDER BY started_at DESC
LIMIT 20;

-- name: quality_rejects_by_reason
-- Rejected raw lines by reason (the part of the ETL's message before its first colon), over
-- all loads, with one full message as an example.
SELECT split_part(reason, ':', 1) AS reason,
       count(*) AS rejected_rows,
       max(rejected_at) AS last_rejected_at,
       min(reason) AS example
FROM etl_rejects
GROUP BY 1
ORDER BY rejected_rows DESC, reason;

-- name: quality_freshness
-- The newest event loaded and its age; hours loaded but not yet in the rollups.
WITH newest_hour AS (
    SELECT max(hour_start) AS hour_start FROM rollup_activity_hourly
)
SELECT e.newest_event,
       extract(epoch FROM now() - e.newest_event)::double precision AS lag_seconds,
       (SELECT max(partition_hour) FROM etl_loaded_objects) AS newest_raw_partition,
       (SELECT count(*) FROM etl_dirty_hours) AS hours_pending_refresh
FROM newest_hour AS h
CROSS JOIN LATERAL (
    SELECT max(event_timestamp) AS newest_event FROM clickstream_events
    WHERE event_timestamp >= h.hour_start
) AS e;

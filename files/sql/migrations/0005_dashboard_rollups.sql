-- What the dashboards' Funnel (by category and brand) and Journeys pages need, kept by the ETL:
--
-- * session_products: per session, each (category, brand) whose product it viewed or carted.
--   With sessions it gives the funnel of any category/brand filter in distinct sessions.
-- * rollup_page_transitions_daily: page → next page moves of page views within a session, by
--   the day (reporting time zone) the session started; '(entry)' is where a session came from
--   before its first page, '(exit)' where it went after its last one.
--
-- refresh_dirty_aggregates() is replaced by the same function with both added: every statement
-- of 0003 is kept unchanged.

-- The path of a page URL: no scheme, host, query or fragment; '/' when nothing is left.
CREATE FUNCTION public.page_path(url text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN coalesce(nullif(regexp_replace(url, '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*|[?#].*$', '', 'g'), ''), '/');

CREATE TABLE public.session_products (
    session_id text NOT NULL,
    product_category text NOT NULL,
    product_brand text NOT NULL,
    viewed boolean NOT NULL,
    carted boolean NOT NULL,
    CONSTRAINT session_products_pkey PRIMARY KEY (session_id, product_category, product_brand)
);

CREATE INDEX session_products_category_brand_idx
    ON public.session_products (product_category, product_brand);

CREATE TABLE public.rollup_page_transitions_daily (
    day date NOT NULL,
    from_page text NOT NULL,
    to_page text NOT NULL,
    transitions integer NOT NULL,
    CONSTRAINT rollup_page_transitions_daily_pkey PRIMARY KEY (day, from_page, to_page)
);

-- Fill both from what is loaded already (once; the ETL keeps them from now on).
INSERT INTO public.session_products (
    session_id, product_category, product_brand, viewed, carted
)
SELECT session_id,
       coalesce(context_product_category, '(none)'),
       coalesce(context_product_brand, '(none)'),
       bool_or(event_name = 'product_view'),
       bool_or(event_name = 'add_to_cart_click')
FROM public.clickstream_events
WHERE event_name IN ('product_view', 'add_to_cart_click')
  AND context_product_id IS NOT NULL AND session_id IS NOT NULL
GROUP BY 1, 2, 3;

INSERT INTO public.rollup_page_transitions_daily (day, from_page, to_page, transitions)
SELECT day, from_page, to_page, count(*)
FROM (
    SELECT (s.session_start AT TIME ZONE coalesce(
                (SELECT value FROM public.warehouse_settings WHERE name = 'reporting_time_zone'),
                'UTC'))::date AS day,
           page_path(e.page_url) AS page,
           lag(page_path(e.page_url)) OVER w AS previous_page,
           lead(e.event_id) OVER w IS NULL AS is_last
    FROM public.sessions AS s
    JOIN public.clickstream_events AS e ON e.session_id = s.session_id
    WHERE e.event_name = 'page_view'
    WINDOW w AS (PARTITION BY e.session_id ORDER BY e.event_timestamp, e.event_id)
) AS views,
LATERAL (VALUES (coalesce(previous_page, '(entry)'), page),
                (CASE WHEN is_last THEN page END, '(exit)')) AS moves (from_page, to_page)
WHERE from_page IS NOT NULL
GROUP BY day, from_page, to_page;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    public.session_products, public.rollup_page_transitions_daily
    TO clickstream_etl_writer;
GRANT SELECT ON public.session_products, public.rollup_page_transitions_daily
    TO clickstream_dashboard_reader;

CREATE OR REPLACE FUNCTION public.refresh_dirty_aggregates(
    OUT hours_refreshed integer, OUT days_refreshed integer, OUT sessions_refreshed integer
)
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
-- Its aggregates hash a batch's sessions in memory instead of sorting them on disk.
SET work_mem = '64MB'
AS $$
DECLARE
    reporting_tz text := coalesce(
        (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC');
    hours_from timestamptz;
    hours_until timestamptz;
    days_from timestamptz;
    days_until timestamptz;
BEGIN
    DROP TABLE IF EXISTS pg_temp.refresh_hours, pg_temp.refresh_days, pg_temp.refresh_sessions,
        pg_temp.refresh_session_days, pg_temp.refresh_page_views;

    CREATE TEMP TABLE refresh_hours ON COMMIT DROP AS
        WITH taken AS (DELETE FROM etl_dirty_hours RETURNING hour_start)
        SELECT hour_start FROM taken;
    -- An hour belongs to one local day, or two where the zone's offset is not whole hours.
    CREATE TEMP TABLE refresh_days ON COMMIT DROP AS
        SELECT day,
               day::timestamp AT TIME ZONE reporting_tz AS day_start,
               (day + 1)::timestamp AT TIME ZONE reporting_tz AS day_end
        FROM (
            SELECT DISTINCT (moment AT TIME ZONE reporting_tz)::date AS day
            FROM refresh_hours,
                 LATERAL (VALUES (hour_start),
                                 (hour_start + interval '1 hour' - interval '1 microsecond'))
                     AS edges (moment)
        ) AS touched_days;
    SELECT min(hour_start), max(hour_start) + interval '1 hour' INTO hours_from, hours_until
    FROM refresh_hours;
    SELECT min(day_start), max(day_end) INTO days_from, days_until FROM refresh_days;

    -- Every aggregate reads the events of one time range (the BRIN index prunes the rest) and
    -- keeps those of the dirty hours or days by a hash join on the truncated time: joining on
    -- a range per hour would scan the table once per hour when the statistics are stale.
    CREATE TEMP TABLE refresh_sessions ON COMMIT DROP AS
        SELECT DISTINCT e.session_id
        FROM clickstream_events AS e
        JOIN refresh_hours AS h ON h.hour_start = date_trunc('hour', e.event_timestamp)
        WHERE e.event_timestamp >= hours_from AND e.event_timestamp < hours_until
          AND e.session_id IS NOT NULL;
    ANALYZE refresh_hours;
    ANALYZE refresh_days;
    ANALYZE refresh_sessions;

    DELETE FROM rollup_activity_hourly AS r USING refresh_hours AS h
    WHERE r.hour_start = h.hour_start;
    INSERT INTO rollup_activity_hourly (
        hour_start, events, sessions, clients, page_views, product_views, add_to_carts,
        checkouts_completed
    )
    SELECT h.hour_start,
           count(*),
           count(DISTINCT e.session_id),
           count(DISTINCT e.client_id),
           count(*) FILTER (WHERE e.event_name = 'page_view'),
           count(*) FILTER (WHERE e.event_name = 'product_view'),
           count(*) FILTER (WHERE e.event_name = 'add_to_cart_click'),
           count(*) FILTER (WHERE e.event_name = 'checkout_complete')
    FROM clickstream_events AS e
    JOIN refresh_hours AS h ON h.hour_start = date_trunc('hour', e.event_timestamp)
    WHERE e.event_timestamp >= hours_from AND e.event_timestamp < hours_until
    GROUP BY h.hour_start;

    DELETE FROM rollup_funnel_daily AS r USING refresh_days AS d WHERE r.day = d.day;
    INSERT INTO rollup_funnel_daily (
        day, sessions, product_view_sessions, add_to_cart_sessions, checkout_start_sessions,
        checkout_complete_sessions
    )
    SELECT day,
           count(*),
           count(*) FILTER (WHERE viewed),
           count(*) FILTER (WHERE carted),
           count(*) FILTER (WHERE checkout_started),
           count(*) FILTER (WHERE checkout_completed)
    FROM (
        SELECT d.day,
               e.session_id,
               bool_or(e.event_name = 'product_view') AS viewed,
               bool_or(e.event_name = 'add_to_cart_click') AS carted,
               bool_or(e.event_name = 'checkout_start') AS checkout_started,
               bool_or(e.event_name = 'checkout_complete') AS checkout_completed
        FROM clickstream_events AS e
        JOIN refresh_days AS d ON d.day = (e.event_timestamp AT TIME ZONE reporting_tz)::date
        WHERE e.event_timestamp >= days_from AND e.event_timestamp < days_until
          AND e.session_id IS NOT NULL
        GROUP BY d.day, e.session_id
    ) AS session_days
    GROUP BY day;

    DELETE FROM rollup_product_daily AS r USING refresh_days AS d WHERE r.day = d.day;
    INSERT INTO rollup_product_daily (
        day, product_id, product_name, product_category, product_brand, views, add_to_carts,
        viewing_sessions, carting_sessions
    )
    SELECT d.day,
           e.context_product_id,
           max(e.context_product_name),
           max(e.context_product_category),
           max(e.context_product_brand),
           count(*) FILTER (WHERE e.event_name = 'product_view'),
           count(*) FILTER (WHERE e.event_name = 'add_to_cart_click'),
           count(DISTINCT e.session_id) FILTER (WHERE e.event_name = 'product_view'),
           count(DISTINCT e.session_id) FILTER (WHERE e.event_name = 'add_to_cart_click')
    FROM clickstream_events AS e
    JOIN refresh_days AS d ON d.day = (e.event_timestamp AT TIME ZONE reporting_tz)::date
    WHERE e.event_timestamp >= days_from AND e.event_timestamp < days_until
      AND e.context_product_id IS NOT NULL
    GROUP BY d.day, e.context_product_id;

    -- The session-start days whose journeys change: those of the sessions before this refresh
    -- (a late event can move a session's start to an earlier day) and after it (below).
    CREATE TEMP TABLE refresh_session_days ON COMMIT DROP AS
        SELECT DISTINCT (s.session_start AT TIME ZONE reporting_tz)::date AS day
        FROM sessions AS s JOIN refresh_sessions AS r ON r.session_id = s.session_id;

    INSERT INTO sessions (
        session_id, client_id, user_id, session_start, session_end, duration_seconds, events,
        page_views, product_views, add_to_carts, checkout_starts, checkouts_completed, converted,
        refreshed_at
    )
    SELECT e.session_id,
           min(e.client_id),
           max(e.user_id),
           min(e.event_timestamp),
           max(e.event_timestamp),
           extract(epoch FROM max(e.event_timestamp) - min(e.event_timestamp))::integer,
           count(*),
           count(*) FILTER (WHERE e.event_name = 'page_view'),
           count(*) FILTER (WHERE e.event_name = 'product_view'),
           count(*) FILTER (WHERE e.event_name = 'add_to_cart_click'),
           count(*) FILTER (WHERE e.event_name = 'checkout_start'),
           count(*) FILTER (WHERE e.event_name = 'checkout_complete'),
           bool_or(e.event_name = 'checkout_complete'),
           now()
    FROM refresh_sessions AS s
    JOIN clickstream_events AS e ON e.session_id = s.session_id
    GROUP BY e.session_id
    ON CONFLICT (session_id) DO UPDATE SET
        client_id = EXCLUDED.client_id,
        user_id = EXCLUDED.user_id,
        session_start = EXCLUDED.session_start,
        session_end = EXCLUDED.session_end,
        duration_seconds = EXCLUDED.duration_seconds,
        events = EXCLUDED.events,
        page_views = EXCLUDED.page_views,
        product_views = EXCLUDED.product_views,
        add_to_carts = EXCLUDED.add_to_carts,
        checkout_starts = EXCLUDED.checkout_starts,
        checkouts_completed = EXCLUDED.checkouts_completed,
        converted = EXCLUDED.converted,
        refreshed_at = EXCLUDED.refreshed_at;

    -- 0005: the products (category, brand) each refreshed session viewed or carted.
    DELETE FROM session_products AS p USING refresh_sessions AS r WHERE p.session_id = r.session_id;
    INSERT INTO session_products (session_id, product_category, product_brand, viewed, carted)
    SELECT e.session_id,
           coalesce(e.context_product_category, '(none)'),
           coalesce(e.context_product_brand, '(none)'),
           bool_or(e.event_name = 'product_view'),
           bool_or(e.event_name = 'add_to_cart_click')
    FROM refresh_sessions AS r
    JOIN clickstream_events AS e ON e.session_id = r.session_id
    WHERE e.event_name IN ('product_view', 'add_to_cart_click')
      AND e.context_product_id IS NOT NULL
    GROUP BY e.session_id, 2, 3;

    -- 0005: page transitions of every session that starts on a touched day, recomputed whole.
    INSERT INTO refresh_session_days (day)
    SELECT DISTINCT (s.session_start AT TIME ZONE reporting_tz)::date
    FROM sessions AS s JOIN refresh_sessions AS r ON r.session_id = s.session_id;
    CREATE TEMP TABLE refresh_page_views ON COMMIT DROP AS
        SELECT (s.session_start AT TIME ZONE reporting_tz)::date AS day,
               page_path(e.page_url) AS page,
               lag(page_path(e.page_url)) OVER w AS previous_page,
               lead(e.event_id) OVER w IS NULL AS is_last
        FROM (SELECT DISTINCT day FROM refresh_session_days) AS d
        JOIN sessions AS s
          ON s.session_start >= d.day::timestamp AT TIME ZONE reporting_tz
         AND s.session_start < (d.day + 1)::timestamp AT TIME ZONE reporting_tz
        JOIN clickstream_events AS e ON e.session_id = s.session_id
        WHERE e.event_name = 'page_view'
        WINDOW w AS (PARTITION BY e.session_id ORDER BY e.event_timestamp, e.event_id);
    DELETE FROM rollup_page_transitions_daily AS t
    WHERE t.day IN (SELECT day FROM refresh_session_days);
    INSERT INTO rollup_page_transitions_daily (day, from_page, to_page, transitions)
    SELECT day, from_page, to_page, count(*)
    FROM (
        SELECT day, coalesce(previous_page, '(entry)') AS from_page, page AS to_page
        FROM refresh_page_views
        UNION ALL
        SELECT day, page, '(exit)' FROM refresh_page_views WHERE is_last
    ) AS moves
    GROUP BY day, from_page, to_page;

    hours_refreshed := (SELECT count(*) FROM refresh_hours);
    days_refreshed := (SELECT count(*) FROM refresh_days);
    sessions_refreshed := (SELECT count(*) FROM refresh_sessions);
END;
$$;

REVOKE EXECUTE ON FUNCTION public.refresh_dirty_aggregates() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.refresh_dirty_aggregates() TO clickstream_etl_writer;

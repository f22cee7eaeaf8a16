-- Sessions and the rollups the dashboards read, refreshed incrementally for what a load touched.
--
-- Funnel steps (shared/notes/sbw-event-format.md): product_view → add_to_cart_click →
-- checkout_start → checkout_complete. A session is the tracker's sessionId (renewed after 30
-- minutes without activity); events without one count in the hourly activity only.

CREATE TABLE public.sessions (
    session_id text NOT NULL,
    client_id text,
    user_id text,
    session_start timestamptz NOT NULL,
    session_end timestamptz NOT NULL,
    duration_seconds integer NOT NULL,
    events integer NOT NULL,
    page_views integer NOT NULL,
    product_views integer NOT NULL,
    add_to_carts integer NOT NULL,
    checkout_starts integer NOT NULL,
    checkouts_completed integer NOT NULL,
    converted boolean NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_pkey PRIMARY KEY (session_id)
);

CREATE INDEX sessions_session_start_idx ON public.sessions (session_start);

-- Sessions active on a day (reporting time zone) and how far down the funnel they got that day.
CREATE TABLE public.rollup_funnel_daily (
    day date NOT NULL,
    sessions integer NOT NULL,
    product_view_sessions integer NOT NULL,
    add_to_cart_sessions integer NOT NULL,
    checkout_start_sessions integer NOT NULL,
    checkout_complete_sessions integer NOT NULL,
    CONSTRAINT rollup_funnel_daily_pkey PRIMARY KEY (day)
);

-- Engagement per product and day (reporting time zone).
CREATE TABLE public.rollup_product_daily (
    day date NOT NULL,
    product_id text NOT NULL,
    product_name text,
    product_category text,
    product_brand text,
    views integer NOT NULL,
    add_to_carts integer NOT NULL,
    viewing_sessions integer NOT NULL,
    carting_sessions integer NOT NULL,
    CONSTRAINT rollup_product_daily_pkey PRIMARY KEY (day, product_id)
);

-- Activity per UTC hour; dashboards shift it to the shop's time zone.
CREATE TABLE public.rollup_activity_hourly (
    hour_start timestamptz NOT NULL,
    events integer NOT NULL,
    sessions integer NOT NULL,
    clients integer NOT NULL,
    page_views integer NOT NULL,
    product_views integer NOT NULL,
    add_to_carts integer NOT NULL,
    checkouts_completed integer NOT NULL,
    CONSTRAINT rollup_activity_hourly_pkey PRIMARY KEY (hour_start)
);

-- Mark every hour with events in [range_start, range_end) for refresh: after a change of the
-- reporting time zone, or to rebuild the rollups of backfilled days.
CREATE FUNCTION public.mark_range_dirty(range_start timestamptz, range_end timestamptz)
RETURNS integer
LANGUAGE sql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
    WITH marked AS (
        INSERT INTO etl_dirty_hours (hour_start)
        SELECT DISTINCT date_trunc('hour', event_timestamp) FROM clickstream_events
        WHERE event_timestamp >= range_start AND event_timestamp < range_end
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer FROM marked;
$$;

-- Recompute the hours that loads marked dirty, their days and every session with an event in
-- them, from the events table, and clear the marks, all in the caller's transaction.
-- Recomputing (not adding) keeps the result right whatever happened: duplicates, late events,
-- forced reloads.
CREATE FUNCTION public.refresh_dirty_aggregates(
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
    DROP TABLE IF EXISTS pg_temp.refresh_hours, pg_temp.refresh_days, pg_temp.refresh_sessions;

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

    hours_refreshed := (SELECT count(*) FROM refresh_hours);
    days_refreshed := (SELECT count(*) FROM refresh_days);
    sessions_refreshed := (SELECT count(*) FROM refresh_sessions);
END;
$$;

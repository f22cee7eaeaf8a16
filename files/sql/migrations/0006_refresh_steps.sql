-- The refresh of sessions and rollups (0003, 0005), split into one function per aggregate and
-- driven from what the loads touched, so that its cost follows the batch, not the table.
--
-- Why: refresh_dirty_aggregates() as 0005 left it let the planner decide how to find a batch's
-- events. A new hour always lies beyond the events table's statistics and its temporary tables
-- were read before (or without) being analyzed, so every statement scanned the whole events
-- table: 500 events in a new hour took 0.8 s to refresh in a warehouse of 1M events, 1.3 s when
-- that hour's day already held events. Now:
--
-- * the events of dirty hours and days are read by time ranges that EXECUTE ... USING hands to
--   the planner as values, each run planned afresh (the BRIN index on event_timestamp prunes the
--   rest, however stale the statistics);
-- * the events of a touched session are read session by session, a LATERAL subquery that probes
--   the session_id index and that no estimate can turn into a scan of the table;
-- * every temporary table is analyzed once filled;
-- * the BRIN index is summarized over what the loads appended before it is read: a page range not
--   summarized yet matches every query, and autovacuum leaves them so until a fifth of the table
--   is new (its insert threshold), so that every range read scanned all of them (0.5M events in
--   a warehouse of 1M: 40 ms per statement for 500 new events).
--
-- Each aggregate has its function refresh_<table>(), listed in aggregate_refresh_steps. A later
-- migration adds an aggregate by creating its function and inserting its step; it does not
-- restate this driver.

-- Each session's page views as page paths, in order: what its page transitions are made of, so
-- that a day's transitions are recomputed from its sessions rather than from their events.
ALTER TABLE public.sessions ADD COLUMN page_paths text[] NOT NULL DEFAULT '{}';

-- Summarize the page ranges of clickstream_events appended since the last summary: the refresh's
-- first act. Only the table's owner may, hence SECURITY DEFINER; it takes no argument. Ranges
-- filled between refreshes are summarized by autovacuum too (autosummarize).
ALTER INDEX public.clickstream_events_event_timestamp_brin SET (autosummarize = on);
CREATE FUNCTION public.summarize_new_event_ranges()
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN brin_summarize_new_values('public.clickstream_events_event_timestamp_brin');

-- The zone that cuts days, the one place that reads it.
CREATE FUNCTION public.reporting_time_zone()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = public, pg_temp
RETURN coalesce(
    (SELECT value FROM warehouse_settings WHERE name = 'reporting_time_zone'), 'UTC');

-- Recompute the rows of ``target`` for every run of consecutive dirty hours: delete those whose
-- hour_start is in it, then run ``statement`` with $1 and $2 the run's start and end. EXECUTE
-- plans each run with those values: the planner sees the range it will read.
CREATE FUNCTION public.refresh_by_hour(target regclass, statement text)
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    hours record;
BEGIN
    FOR hours IN SELECT range_start, range_end FROM refresh_hour_ranges ORDER BY range_start LOOP
        EXECUTE format('DELETE FROM %s WHERE hour_start >= $1 AND hour_start < $2', target)
            USING hours.range_start, hours.range_end;
        EXECUTE statement USING hours.range_start, hours.range_end;
    END LOOP;
END;
$$;

-- Recompute the rows of ``target`` for each of ``days``: delete the day's rows, then run
-- ``statement`` with $1 the day, $2 and $3 its start and end in the reporting time zone
-- (timestamptz), $4 that zone; planned with those values, as above.
CREATE FUNCTION public.refresh_by_day(target regclass, days date[], statement text)
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    zone text := reporting_time_zone();
    refreshed date;
BEGIN
    FOREACH refreshed IN ARRAY days LOOP
        EXECUTE format('DELETE FROM %s WHERE day = $1', target) USING refreshed;
        EXECUTE statement USING refreshed,
            refreshed::timestamp AT TIME ZONE zone,
            (refreshed + 1)::timestamp AT TIME ZONE zone,
            zone;
    END LOOP;
END;
$$;

-- The steps of a refresh, run in step_order; each function takes no argument and reads the
-- slice that refresh_dirty_aggregates() prepares (temporary tables, dropped at commit):
--   refresh_hours (hour_start)                     the dirty hours (UTC)
--   refresh_hour_ranges (range_start, range_end)   the same as runs of consecutive hours
--   refresh_days (day)                             their days in the reporting time zone
--   touched_sessions (session_id)                  the sessions with an event in a dirty hour
--   touched_sessions_before                        their sessions rows before this refresh
--   touched_session_products_before                their session_products rows before it
-- A step that reads sessions or session_products as refreshed comes after the step that
-- refreshes them.
CREATE TABLE public.aggregate_refresh_steps (
    step_order integer NOT NULL,
    refresh_function regproc NOT NULL,
    refreshes text NOT NULL,
    CONSTRAINT aggregate_refresh_steps_pkey PRIMARY KEY (step_order),
    CONSTRAINT aggregate_refresh_steps_function_key UNIQUE (refresh_function)
);

CREATE FUNCTION public.refresh_rollup_activity_hourly()
RETURNS void
LANGUAGE sql
RETURN refresh_by_hour('public.rollup_activity_hourly', $step$
        INSERT INTO rollup_activity_hourly (
            hour_start, events, sessions, clients, page_views, product_views, add_to_carts,
            checkouts_completed
        )
        SELECT date_trunc('hour', e.event_timestamp),
               count(*),
               count(DISTINCT e.session_id),
               count(DISTINCT e.client_id),
               count(*) FILTER (WHERE e.event_name = 'page_view'),
               count(*) FILTER (WHERE e.event_name = 'product_view'),
               count(*) FILTER (WHERE e.event_name = 'add_to_cart_click'),
               count(*) FILTER (WHERE e.event_name = 'checkout_complete')
        FROM clickstream_events AS e
        WHERE e.event_timestamp >= $1 AND e.event_timestamp < $2
        GROUP BY 1
        $step$);

-- The days (reporting time zone) of the dirty hours.
CREATE FUNCTION public.refreshed_days()
RETURNS date[]
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
BEGIN
    RETURN ARRAY(SELECT day FROM refresh_days ORDER BY day);
END;
$$;

-- Sessions active on a day and how far down the funnel they got that day (0003's definition).
CREATE FUNCTION public.refresh_rollup_funnel_daily()
RETURNS void
LANGUAGE sql
RETURN refresh_by_day('public.rollup_funnel_daily', refreshed_days(), $step$
        INSERT INTO rollup_funnel_daily (
            day, sessions, product_view_sessions, add_to_cart_sessions, checkout_start_sessions,
            checkout_complete_sessions
        )
        SELECT $1,
               count(*),
               count(*) FILTER (WHERE viewed),
               count(*) FILTER (WHERE carted),
               count(*) FILTER (WHERE checkout_started),
               count(*) FILTER (WHERE checkout_completed)
        FROM (
            SELECT bool_or(e.event_name = 'product_view') AS viewed,
                   bool_or(e.event_name = 'add_to_cart_click') AS carted,
                   bool_or(e.event_name = 'checkout_start') AS checkout_started,
                   bool_or(e.event_name = 'checkout_complete') AS checkout_completed
            FROM clickstream_events AS e
            WHERE e.event_timestamp >= $2 AND e.event_timestamp < $3
              AND e.session_id IS NOT NULL
            GROUP BY e.session_id
        ) AS session_day
        HAVING count(*) > 0
        $step$);

CREATE FUNCTION public.refresh_rollup_product_daily()
RETURNS void
LANGUAGE sql
RETURN refresh_by_day('public.rollup_product_daily', refreshed_days(), $step$
        INSERT INTO rollup_product_daily (
            day, product_id, product_name, product_category, product_brand, views,
            add_to_carts, viewing_sessions, carting_sessions
        )
        SELECT $1,
               e.context_product_id,
               max(e.context_product_name),
               max(e.context_product_category),
               max(e.context_product_brand),
               count(*) FILTER (WHERE e.event_name = 'product_view'),
               count(*) FILTER (WHERE e.event_name = 'add_to_cart_click'),
               count(DISTINCT e.session_id) FILTER (WHERE e.event_name = 'product_view'),
               count(DISTINCT e.session_id) FILTER (WHERE e.event_name = 'add_to_cart_click')
        FROM clickstream_events AS e
        WHERE e.event_timestamp >= $2 AND e.event_timestamp < $3
          AND e.context_product_id IS NOT NULL
        GROUP BY e.context_product_id
        $step$);

-- Every touched session recomputed whole from its events, read through the session_id index.
CREATE FUNCTION public.refresh_sessions()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    INSERT INTO sessions (
        session_id, client_id, user_id, session_start, session_end, duration_seconds, events,
        page_views, product_views, add_to_carts, checkout_starts, checkouts_completed, converted,
        page_paths, refreshed_at
    )
    SELECT r.session_id, s.client_id, s.user_id, s.session_start, s.session_end,
           extract(epoch FROM s.session_end - s.session_start)::integer,
           s.events, s.page_views, s.product_views, s.add_to_carts, s.checkout_starts,
           s.checkouts_completed, s.checkouts_completed > 0, coalesce(s.page_paths, '{}'), now()
    FROM touched_sessions AS r
    CROSS JOIN LATERAL (
        SELECT min(e.client_id) AS client_id,
               max(e.user_id) AS user_id,
               min(e.event_timestamp) AS session_start,
               max(e.event_timestamp) AS session_end,
               count(*) AS events,
               count(*) FILTER (WHERE e.event_name = 'page_view') AS page_views,
               count(*) FILTER (WHERE e.event_name = 'product_view') AS product_views,
               count(*) FILTER (WHERE e.event_name = 'add_to_cart_click') AS add_to_carts,
               count(*) FILTER (WHERE e.event_name = 'checkout_start') AS checkout_starts,
               count(*) FILTER (WHERE e.event_name = 'checkout_complete') AS checkouts_completed,
               array_agg(page_path(e.page_url) ORDER BY e.event_timestamp, e.event_id)
                   FILTER (WHERE e.event_name = 'page_view') AS page_paths
        FROM clickstream_events AS e
        WHERE e.session_id = r.session_id
    ) AS s
    WHERE s.events > 0
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
        page_paths = EXCLUDED.page_paths,
        refreshed_at = EXCLUDED.refreshed_at;
END;
$$;

CREATE FUNCTION public.refresh_session_products()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    DELETE FROM session_products AS p USING touched_sessions AS r
    WHERE p.session_id = r.session_id;
    INSERT INTO session_products (session_id, product_category, product_brand, viewed, carted)
    SELECT r.session_id, p.product_category, p.product_brand, p.viewed, p.carted
    FROM touched_sessions AS r
    CROSS JOIN LATERAL (
        SELECT coalesce(e.context_product_category, '(none)') AS product_category,
               coalesce(e.context_product_brand, '(none)') AS product_brand,
               bool_or(e.event_name = 'product_view') AS viewed,
               bool_or(e.event_name = 'add_to_cart_click') AS carted
        FROM clickstream_events AS e
        WHERE e.session_id = r.session_id
          AND e.event_name IN ('product_view', 'add_to_cart_click')
          AND e.context_product_id IS NOT NULL
        GROUP BY 1, 2
    ) AS p;
END;
$$;

-- The days (reporting time zone) the touched sessions started on before this refresh (a late
-- event can move a start to an earlier day) or start on after it: those whose rollups by
-- session start change. Read after the sessions step.
CREATE FUNCTION public.touched_session_days()
RETURNS date[]
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    zone text := reporting_time_zone();
BEGIN
    RETURN ARRAY(
        SELECT (session_start AT TIME ZONE zone)::date FROM touched_sessions_before
        UNION
        SELECT (s.session_start AT TIME ZONE zone)::date
        FROM touched_sessions AS t JOIN sessions AS s USING (session_id)
        ORDER BY 1
    );
END;
$$;

-- Page transitions of every session that starts on those days, recomputed whole from the
-- sessions' page paths: '(entry)' before the first page, '(exit)' after the last.
CREATE FUNCTION public.refresh_rollup_page_transitions_daily()
RETURNS void
LANGUAGE sql
RETURN refresh_by_day('public.rollup_page_transitions_daily', touched_session_days(), $step$
        INSERT INTO rollup_page_transitions_daily (day, from_page, to_page, transitions)
        SELECT $1, m.from_page, m.to_page, count(*)
        FROM sessions AS s
        CROSS JOIN LATERAL (
            SELECT coalesce(s.page_paths[position - 1], '(entry)'), s.page_paths[position]
            FROM generate_subscripts(s.page_paths, 1) AS position
            UNION ALL
            SELECT s.page_paths[cardinality(s.page_paths)], '(exit)'
            WHERE cardinality(s.page_paths) > 0
        ) AS m (from_page, to_page)
        WHERE s.session_start >= $2 AND s.session_start < $3
        GROUP BY m.from_page, m.to_page
        $step$);

INSERT INTO public.aggregate_refresh_steps (step_order, refresh_function, refreshes) VALUES
    (10, 'public.refresh_rollup_activity_hourly', 'rollup_activity_hourly: the dirty hours'),
    (20, 'public.refresh_rollup_funnel_daily', 'rollup_funnel_daily: the dirty days'),
    (30, 'public.refresh_rollup_product_daily', 'rollup_product_daily: the dirty days'),
    (40, 'public.refresh_sessions', 'sessions: the touched sessions'),
    (50, 'public.refresh_session_products', 'session_products: the touched sessions'),
    (60, 'public.refresh_rollup_page_transitions_daily',
     'rollup_page_transitions_daily: the days the touched sessions start on');

-- Take the dirty hours, prepare the slice, run the steps; all in the caller's transaction.
CREATE OR REPLACE FUNCTION public.refresh_dirty_aggregates(
    OUT hours_refreshed integer, OUT days_refreshed integer, OUT sessions_refreshed integer
)
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
-- Its aggregates hash a batch's sessions in memory instead of sorting them on disk.
SET work_mem = '64MB'
-- Compiling its statements would take longer than running them on a batch.
SET jit = off
AS $$
DECLARE
    zone text := reporting_time_zone();
    hours record;
    step record;
BEGIN
    DROP TABLE IF EXISTS pg_temp.refresh_hours, pg_temp.refresh_hour_ranges,
        pg_temp.refresh_days, pg_temp.touched_sessions, pg_temp.touched_sessions_before,
        pg_temp.touched_session_products_before;

    PERFORM summarize_new_event_ranges();
    CREATE TEMP TABLE refresh_hours ON COMMIT DROP AS
        WITH taken AS (DELETE FROM etl_dirty_hours RETURNING hour_start)
        SELECT hour_start FROM taken;
    ANALYZE refresh_hours;
    CREATE TEMP TABLE refresh_hour_ranges ON COMMIT DROP AS
        SELECT min(hour_start) AS range_start, max(hour_start) + interval '1 hour' AS range_end
        FROM (
            SELECT hour_start,
                   hour_start - interval '1 hour' * row_number() OVER (ORDER BY hour_start)
                       AS run
            FROM refresh_hours
        ) AS numbered
        GROUP BY run;
    -- An hour belongs to one local day, or two where the zone's offset is not whole hours.
    CREATE TEMP TABLE refresh_days ON COMMIT DROP AS
        SELECT DISTINCT (moment AT TIME ZONE zone)::date AS day
        FROM refresh_hours,
             LATERAL (VALUES (hour_start),
                             (hour_start + interval '1 hour' - interval '1 microsecond'))
                 AS edges (moment);

    CREATE TEMP TABLE touched_sessions (session_id text PRIMARY KEY) ON COMMIT DROP;
    FOR hours IN SELECT range_start, range_end FROM refresh_hour_ranges LOOP
        -- EXECUTE: planned with the range's values (see refresh_by_hour).
        EXECUTE 'INSERT INTO touched_sessions (session_id)
                 SELECT DISTINCT session_id FROM clickstream_events
                 WHERE event_timestamp >= $1 AND event_timestamp < $2 AND session_id IS NOT NULL
                 ON CONFLICT DO NOTHING'
            USING hours.range_start, hours.range_end;
    END LOOP;
    ANALYZE touched_sessions;
    CREATE TEMP TABLE touched_sessions_before ON COMMIT DROP AS
        SELECT s.* FROM touched_sessions AS r JOIN sessions AS s USING (session_id);
    CREATE TEMP TABLE touched_session_products_before ON COMMIT DROP AS
        SELECT p.* FROM touched_sessions AS r JOIN session_products AS p USING (session_id);
    ANALYZE touched_sessions_before;
    ANALYZE touched_session_products_before;

    FOR step IN SELECT refresh_function FROM aggregate_refresh_steps ORDER BY step_order LOOP
        EXECUTE format('SELECT %s()', step.refresh_function);
    END LOOP;

    hours_refreshed := (SELECT count(*) FROM refresh_hours);
    days_refreshed := (SELECT count(*) FROM refresh_days);
    sessions_refreshed := (SELECT count(*) FROM touched_sessions);
END;
$$;

-- Only the ETL's writer runs the refresh and its parts (as with 0003's function).
CREATE FUNCTION public.grant_refresh_to_etl_writer(VARIADIC functions regprocedure[])
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    refresh_part regprocedure;
BEGIN
    FOREACH refresh_part IN ARRAY functions LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', refresh_part);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO clickstream_etl_writer', refresh_part);
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION public.grant_refresh_to_etl_writer(regprocedure[]) FROM PUBLIC;

SELECT public.grant_refresh_to_etl_writer(
    'public.summarize_new_event_ranges()',
    'public.refresh_by_hour(regclass, text)',
    'public.refresh_by_day(regclass, date[], text)',
    'public.refreshed_days()',
    'public.refresh_rollup_activity_hourly()',
    'public.refresh_rollup_funnel_daily()',
    'public.refresh_rollup_product_daily()',
    'public.refresh_sessions()',
    'public.refresh_session_products()',
    'public.touched_session_days()',
    'public.refresh_rollup_page_transitions_daily()'
);
GRANT SELECT ON public.aggregate_refresh_steps TO clickstream_etl_writer;

-- The page paths of the sessions loaded already: every aggregate rebuilt by the new steps.
SELECT public.mark_range_dirty('-infinity', 'infinity');
SELECT public.refresh_dirty_aggregates();

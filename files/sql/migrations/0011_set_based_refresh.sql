-- The refresh's session steps, set-based: one pass over the batch's events instead of a probe per
-- session, and the visitors' days written once.
--
-- Why: a batch of 300,000 events over a week (96,285 sessions) took 24 s to refresh and 7.5 s to
-- load (issue 15's benchmark). Its plans (EXPLAIN ANALYZE through auto_explain) showed where:
--
-- * refresh_visitor_days(), three quarters of it: each visitor day read its sessions by an index
--   probe (a LATERAL over a UNION ALL, which no estimate can turn into a join), then each session
--   its session_products rows through session_scopes() (another probe); new visitor days were
--   inserted with no previous days, then every one of them updated with its previous days, which
--   wrote each row twice, and those previous days were computed series by series (a LATERAL
--   window per visitor and scope).
-- * refresh_sessions(), refresh_session_products() and refresh_session_journeys() read each
--   touched session's events through the session_id index, three probes per session.
-- * refresh_rollup_sessions_daily() called session_scopes() once per session of every touched day.
--
-- Now:
--
-- * the driver keeps the dirty hours' events with a session (touched_events) from the range scan
--   it already made to find the touched sessions; a new step adds the events of the touched
--   sessions that lie outside the dirty hours, by probes, for those sessions only: a session whose
--   stored span lies inside one run of dirty hours has no event elsewhere (every event outside the
--   dirty hours was refreshed before, into its session's span). The three session steps group
--   touched_events, one hash aggregate each.
-- * session_scope_steps() replaces session_scopes() with the scopes of a table of sessions at
--   once: one join with session_products, which the planner may hash or probe, as the sizes say.
--   funnel_step() is the one rule of how far a session got.
-- * refresh_visitor_days() joins visitor days to their sessions, and computes each changed
--   series' previous days before it writes: a row is inserted, updated or deleted once.

CREATE FUNCTION public.funnel_step(
    viewed boolean, carted boolean, checkout_started boolean, converted boolean
)
RETURNS smallint
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN NOT viewed THEN 0
            WHEN NOT carted THEN 1
            WHEN NOT checkout_started THEN 2
            WHEN NOT converted THEN 3
            ELSE 4
       END::smallint;

-- The scopes of every session of ``source``, a table of (session_id, checkout_started,
-- converted): each session's scopes and the furthest step it reached in each. The scope ('', '')
-- holds every session, with what any of its products say; the others come from its products.
CREATE FUNCTION public.session_scope_steps(source regclass)
RETURNS TABLE (session_id text, product_category text, product_brand text, furthest_step smallint)
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format($query$
        SELECT s.session_id, c.product_category, c.product_brand,
               funnel_step(bool_or(c.viewed), bool_or(c.carted), s.checkout_started, s.converted)
        FROM %s AS s
        LEFT JOIN session_products AS p ON p.session_id = s.session_id
        CROSS JOIN LATERAL (
            SELECT '', '', coalesce(p.viewed, false), coalesce(p.carted, false)
            UNION ALL
            SELECT x.product_category, x.product_brand, p.viewed, p.carted
            FROM product_scopes(p.product_category, p.product_brand) AS x
            WHERE p.session_id IS NOT NULL
              AND NOT (x.product_category = '' AND x.product_brand = '')
        ) AS c (product_category, product_brand, viewed, carted)
        GROUP BY s.session_id, c.product_category, c.product_brand, s.checkout_started,
                 s.converted
        $query$, source);
END;
$$;

-- 0006's driver, with touched_events: the events of the dirty hours (in_dirty_hours), kept from
-- the scan that finds the touched sessions; the steps of the dirty hours and of the touched
-- sessions read them, not the events table, and analyzed, with estimates to plan by.
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
        pg_temp.refresh_days, pg_temp.touched_events, pg_temp.touched_sessions,
        pg_temp.touched_sessions_before, pg_temp.touched_session_products_before;

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

    CREATE TEMP TABLE touched_events ON COMMIT DROP AS
        SELECT session_id, event_id, event_timestamp, event_name, client_id, user_id, page_url,
               context_product_id, context_product_category, context_product_brand,
               true AS in_dirty_hours
        FROM clickstream_events
        WITH NO DATA;
    FOR hours IN SELECT range_start, range_end FROM refresh_hour_ranges LOOP
        -- EXECUTE: planned with the range's values, which the BRIN index then reads.
        EXECUTE 'INSERT INTO touched_events
                 SELECT session_id, event_id, event_timestamp, event_name, client_id, user_id,
                        page_url, context_product_id, context_product_category,
                        context_product_brand, true
                 FROM clickstream_events
                 WHERE event_timestamp >= $1 AND event_timestamp < $2'
            USING hours.range_start, hours.range_end;
    END LOOP;
    CREATE TEMP TABLE touched_sessions (session_id text PRIMARY KEY) ON COMMIT DROP;
    INSERT INTO touched_sessions (session_id)
    SELECT DISTINCT session_id FROM touched_events WHERE session_id IS NOT NULL;
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

-- Refresh step 7, after the erasure's step 5 has added its sessions: the events of the touched
-- sessions outside the dirty hours, for the sessions whose stored span leaves the run of dirty
-- hours it starts in (the others have none), each read through the session_id index (OFFSET 0
-- keeps the subquery a probe per session, whatever the estimates).
CREATE FUNCTION public.refresh_touched_events()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    INSERT INTO touched_events
    SELECT e.*
    FROM touched_sessions_before AS b
    CROSS JOIN LATERAL (
        SELECT session_id, event_id, event_timestamp, event_name, client_id, user_id, page_url,
               context_product_id, context_product_category, context_product_brand, false
        FROM clickstream_events
        WHERE session_id = b.session_id
        OFFSET 0
    ) AS e
    WHERE NOT EXISTS (
            SELECT FROM refresh_hour_ranges AS r
            WHERE b.session_start >= r.range_start AND b.session_end < r.range_end)
      AND NOT EXISTS (
            SELECT FROM refresh_hour_ranges AS r
            WHERE e.event_timestamp >= r.range_start AND e.event_timestamp < r.range_end);
    ANALYZE touched_events;
END;
$$;

-- The three session steps of 0006 and 0008, each one aggregate over touched_events.
CREATE OR REPLACE FUNCTION public.refresh_sessions()
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
    SELECT s.session_id, s.client_id, s.user_id, s.session_start, s.session_end,
           extract(epoch FROM s.session_end - s.session_start)::integer,
           s.events, s.page_views, s.product_views, s.add_to_carts, s.checkout_starts,
           s.checkouts_completed, s.checkouts_completed > 0, coalesce(s.page_paths, '{}'), now()
    FROM (
        SELECT e.session_id,
               min(e.client_id) AS client_id,
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
        FROM touched_events AS e
        WHERE e.session_id IS NOT NULL
        GROUP BY e.session_id
    ) AS s
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

CREATE OR REPLACE FUNCTION public.refresh_session_products()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    DELETE FROM session_products AS p USING touched_sessions AS r
    WHERE p.session_id = r.session_id;
    INSERT INTO session_products (session_id, product_category, product_brand, viewed, carted)
    SELECT e.session_id,
           coalesce(e.context_product_category, '(none)'),
           coalesce(e.context_product_brand, '(none)'),
           bool_or(e.event_name = 'product_view'),
           bool_or(e.event_name = 'add_to_cart_click')
    FROM touched_events AS e
    WHERE e.session_id IS NOT NULL
      AND e.event_name IN ('product_view', 'add_to_cart_click')
      AND e.context_product_id IS NOT NULL
    GROUP BY 1, 2, 3;
END;
$$;

CREATE OR REPLACE FUNCTION public.refresh_session_journeys()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    INSERT INTO session_journeys (session_id, path)
    SELECT e.session_id,
           journey_path(array_agg(e.event_name ORDER BY e.event_timestamp, e.event_id))
    FROM touched_events AS e
    WHERE e.session_id IS NOT NULL
    GROUP BY e.session_id
    ON CONFLICT (session_id) DO UPDATE SET path = EXCLUDED.path
    WHERE session_journeys.path IS DISTINCT FROM EXCLUDED.path;
END;
$$;

-- The rollups of the dirty hours (0006's and 0007's steps), from touched_events' events of those
-- hours: one hash aggregate over the batch, planned with the temporary table's statistics rather
-- than with the events table's, which never cover a new hour.
CREATE OR REPLACE FUNCTION public.refresh_rollup_activity_hourly()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    DELETE FROM rollup_activity_hourly AS r USING refresh_hours AS h
    WHERE r.hour_start = h.hour_start;
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
    FROM touched_events AS e
    WHERE e.in_dirty_hours
    GROUP BY 1;
END;
$$;

CREATE OR REPLACE FUNCTION public.refresh_rollup_events_hourly()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    DELETE FROM rollup_events_hourly AS r USING refresh_hours AS h
    WHERE r.hour_start = h.hour_start;
    INSERT INTO rollup_events_hourly (product_category, product_brand, hour_start, events)
    SELECT s.product_category, s.product_brand, date_trunc('hour', e.event_timestamp), count(*)
    FROM touched_events AS e
    CROSS JOIN LATERAL product_scopes(coalesce(e.context_product_category, '(none)'),
                                      coalesce(e.context_product_brand, '(none)')) AS s
    WHERE e.in_dirty_hours
      AND (s.product_category = '' AND s.product_brand = ''
           OR e.event_name IN ('product_view', 'add_to_cart_click')
              AND e.context_product_id IS NOT NULL)
    GROUP BY 1, 2, 3;
END;
$$;

-- The sessions of every day a touched session started on, before or after this refresh (0007's
-- step), their scopes found for all of them at once.
CREATE OR REPLACE FUNCTION public.refresh_rollup_sessions_daily()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    zone text := reporting_time_zone();
    days date[] := touched_session_days();
BEGIN
    DELETE FROM rollup_sessions_daily WHERE day = ANY (days);
    IF cardinality(days) = 0 THEN
        RETURN;
    END IF;
    DROP TABLE IF EXISTS pg_temp.day_sessions;
    -- EXECUTE: planned with the days' bounds, which the session_start index then reads.
    EXECUTE 'CREATE TEMP TABLE day_sessions ON COMMIT DROP AS
             SELECT session_id, (session_start AT TIME ZONE $1)::date AS day,
                    checkout_starts > 0 AS checkout_started, converted
             FROM sessions
             WHERE session_start >= $2 AND session_start < $3
               AND (session_start AT TIME ZONE $1)::date = ANY ($4)'
        USING zone, days[1]::timestamp AT TIME ZONE zone,
              (days[cardinality(days)] + 1)::timestamp AT TIME ZONE zone, days;
    ANALYZE day_sessions;
    INSERT INTO rollup_sessions_daily (
        product_category, product_brand, day, sessions, product_view_sessions,
        add_to_cart_sessions, checkout_sessions, purchase_sessions, converted_sessions
    )
    SELECT c.product_category, c.product_brand, d.day,
           count(*),
           count(*) FILTER (WHERE c.furthest_step >= 1),
           count(*) FILTER (WHERE c.furthest_step >= 2),
           count(*) FILTER (WHERE c.furthest_step >= 3),
           count(*) FILTER (WHERE c.furthest_step >= 4),
           count(*) FILTER (WHERE d.converted)
    FROM day_sessions AS d
    JOIN session_scope_steps('pg_temp.day_sessions') AS c USING (session_id)
    GROUP BY c.product_category, c.product_brand, d.day;
END;
$$;

-- 0007's visitor days, set-based: the visitor days of the touched sessions, what they hold now
-- (every session of the visitor that day), what differs from the stored rows, and each changed
-- series' (visitor and scope) previous days over its days as they are to be, all before the
-- first write; then the rollup of every day, scope and visitor kind that changed.
CREATE OR REPLACE FUNCTION public.refresh_visitor_days()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    zone text := reporting_time_zone();
BEGIN
    DROP TABLE IF EXISTS pg_temp.touched_visitor_days, pg_temp.visitor_day_sessions,
        pg_temp.visitor_days_now, pg_temp.visitor_days_changed, pg_temp.visitor_series,
        pg_temp.visitor_days_written, pg_temp.visitor_groups_changed;

    CREATE TEMP TABLE touched_visitor_days ON COMMIT DROP AS
        SELECT DISTINCT v.visitor_kind, v.visitor_id,
               (x.session_start AT TIME ZONE zone)::date AS day
        FROM (
            SELECT session_start, client_id, user_id FROM touched_sessions_before
            UNION ALL
            SELECT s.session_start, s.client_id, s.user_id
            FROM touched_sessions AS t JOIN sessions AS s USING (session_id)
        ) AS x
        CROSS JOIN LATERAL (VALUES ('client', x.client_id), ('user', x.user_id))
            AS v (visitor_kind, visitor_id)
        WHERE v.visitor_id IS NOT NULL;
    ANALYZE touched_visitor_days;

    -- Every session of those visitors on those days, touched or not.
    CREATE TEMP TABLE visitor_day_sessions ON COMMIT DROP AS
        SELECT t.visitor_kind, t.visitor_id, t.day, s.session_id,
               s.checkout_starts > 0 AS checkout_started, s.converted
        FROM touched_visitor_days AS t
        JOIN sessions AS s ON s.client_id = t.visitor_id
        WHERE t.visitor_kind = 'client'
          AND s.session_start >= t.day::timestamp AT TIME ZONE zone
          AND s.session_start < (t.day + 1)::timestamp AT TIME ZONE zone
        UNION ALL
        SELECT t.visitor_kind, t.visitor_id, t.day, s.session_id,
               s.checkout_starts > 0, s.converted
        FROM touched_visitor_days AS t
        JOIN sessions AS s ON s.user_id = t.visitor_id
        WHERE t.visitor_kind = 'user'
          AND s.session_start >= t.day::timestamp AT TIME ZONE zone
          AND s.session_start < (t.day + 1)::timestamp AT TIME ZONE zone;
    ANALYZE visitor_day_sessions;

    CREATE TEMP TABLE visitor_days_now ON COMMIT DROP AS
        SELECT v.visitor_kind, v.visitor_id, c.product_category, c.product_brand, v.day,
               max(c.furthest_step) AS furthest_step
        FROM visitor_day_sessions AS v
        JOIN session_scope_steps('pg_temp.visitor_day_sessions') AS c USING (session_id)
        GROUP BY 1, 2, 3, 4, 5;
    ANALYZE visitor_days_now;

    -- The rows that differ from what is stored. Stored rows to compare are those of now and
    -- those the touched sessions put there before this refresh (the scopes of their products).
    CREATE TEMP TABLE visitor_days_changed ON COMMIT DROP AS
        WITH candidates AS (
            SELECT visitor_kind, visitor_id, product_category, product_brand, day
            FROM visitor_days_now
            UNION
            SELECT visitor_kind, visitor_id, '', '', day FROM touched_visitor_days
            UNION
            SELECT v.visitor_kind, v.visitor_id, s.product_category, s.product_brand,
                   (b.session_start AT TIME ZONE zone)::date
            FROM touched_session_products_before AS p
            JOIN touched_sessions_before AS b USING (session_id)
            CROSS JOIN LATERAL (VALUES ('client', b.client_id), ('user', b.user_id))
                AS v (visitor_kind, visitor_id)
            CROSS JOIN LATERAL product_scopes(p.product_category, p.product_brand) AS s
            WHERE v.visitor_id IS NOT NULL
        )
        SELECT c.*, n.furthest_step AS step_now, d.furthest_step AS step_stored
        FROM candidates AS c
        LEFT JOIN visitor_days_now AS n
            USING (visitor_kind, visitor_id, product_category, product_brand, day)
        LEFT JOIN visitor_days AS d
            ON d.visitor_kind = c.visitor_kind AND d.visitor_id = c.visitor_id
           AND d.product_category = c.product_category AND d.product_brand = c.product_brand
           AND d.day = c.day
        WHERE n.furthest_step IS DISTINCT FROM d.furthest_step;
    ANALYZE visitor_days_changed;

    CREATE TEMP TABLE visitor_series ON COMMIT DROP AS
        SELECT visitor_kind, visitor_id, product_category, product_brand,
               min(day) AS first_changed
        FROM visitor_days_changed
        GROUP BY 1, 2, 3, 4;
    ANALYZE visitor_series;

    -- Each changed series' days as they are to be (its stored days with the changes applied)
    -- and their previous days; kept from the first changed day on where a row is new or differs.
    CREATE TEMP TABLE visitor_days_written ON COMMIT DROP AS
        SELECT w.*
        FROM (
            SELECT m.visitor_kind, m.visitor_id, m.product_category, m.product_brand, m.day,
                   m.furthest_step, m.stored_step, m.stored_previous_days,
                   ARRAY[
                       coalesce(max(m.day) OVER earlier, '-infinity'),
                       coalesce(max(m.day) FILTER (WHERE m.furthest_step >= 1) OVER earlier,
                                '-infinity'),
                       coalesce(max(m.day) FILTER (WHERE m.furthest_step >= 2) OVER earlier,
                                '-infinity'),
                       coalesce(max(m.day) FILTER (WHERE m.furthest_step >= 3) OVER earlier,
                                '-infinity'),
                       coalesce(max(m.day) FILTER (WHERE m.furthest_step >= 4) OVER earlier,
                                '-infinity')
                   ]::date[] AS previous_days
            FROM (
                -- A FULL JOIN is a hash or merge join, never a loop over either side.
                SELECT coalesce(c.visitor_kind, d.visitor_kind) AS visitor_kind,
                       coalesce(c.visitor_id, d.visitor_id) AS visitor_id,
                       coalesce(c.product_category, d.product_category) AS product_category,
                       coalesce(c.product_brand, d.product_brand) AS product_brand,
                       coalesce(c.day, d.day) AS day,
                       CASE WHEN c.day IS NULL THEN d.furthest_step ELSE c.step_now END
                           AS furthest_step,
                       d.furthest_step AS stored_step,
                       d.previous_days AS stored_previous_days
                FROM (
                    SELECT d.*
                    FROM visitor_series AS s
                    JOIN visitor_days AS d
                        ON d.visitor_kind = s.visitor_kind AND d.visitor_id = s.visitor_id
                       AND d.product_category = s.product_category
                       AND d.product_brand = s.product_brand
                ) AS d
                FULL JOIN visitor_days_changed AS c
                    ON c.visitor_kind = d.visitor_kind AND c.visitor_id = d.visitor_id
                   AND c.product_category = d.product_category
                   AND c.product_brand = d.product_brand AND c.day = d.day
            ) AS m
            WHERE m.furthest_step IS NOT NULL  -- a day whose last session left it
            WINDOW earlier AS (
                PARTITION BY m.visitor_kind, m.visitor_id, m.product_category, m.product_brand
                ORDER BY m.day ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ) AS w
        JOIN visitor_series AS s USING (visitor_kind, visitor_id, product_category, product_brand)
        WHERE w.day >= s.first_changed
          AND (w.stored_step IS DISTINCT FROM w.furthest_step
               OR w.stored_previous_days IS DISTINCT FROM w.previous_days);
    ANALYZE visitor_days_written;

    DELETE FROM visitor_days AS d USING visitor_days_changed AS c
    WHERE c.step_now IS NULL
      AND d.visitor_kind = c.visitor_kind AND d.visitor_id = c.visitor_id
      AND d.product_category = c.product_category AND d.product_brand = c.product_brand
      AND d.day = c.day;
    UPDATE visitor_days AS d SET furthest_step = w.furthest_step, previous_days = w.previous_days
    FROM visitor_days_written AS w
    WHERE w.stored_step IS NOT NULL
      AND d.visitor_kind = w.visitor_kind AND d.visitor_id = w.visitor_id
      AND d.product_category = w.product_category AND d.product_brand = w.product_brand
      AND d.day = w.day;
    INSERT INTO visitor_days (
        visitor_kind, visitor_id, product_category, product_brand, day, furthest_step,
        previous_days
    )
    SELECT visitor_kind, visitor_id, product_category, product_brand, day, furthest_step,
           previous_days
    FROM visitor_days_written
    WHERE stored_step IS NULL
    -- In the primary key's order: each index page is written once, not once per row.
    ORDER BY visitor_kind, visitor_id, product_category, product_brand, day;

    -- Few groups of many rows: a hash aggregate, not the sort that UNION's estimate picks.
    CREATE TEMP TABLE visitor_groups_changed ON COMMIT DROP AS
        SELECT visitor_kind, product_category, product_brand, day
        FROM (
            SELECT visitor_kind, product_category, product_brand, day FROM visitor_days_changed
            UNION ALL
            SELECT visitor_kind, product_category, product_brand, day FROM visitor_days_written
        ) AS changed
        GROUP BY 1, 2, 3, 4;
    ANALYZE visitor_groups_changed;
    DELETE FROM rollup_visitors_daily AS r USING visitor_groups_changed AS g
    WHERE r.visitor_kind = g.visitor_kind AND r.product_category = g.product_category
      AND r.product_brand = g.product_brand AND r.day = g.day;
    INSERT INTO rollup_visitors_daily (
        visitor_kind, product_category, product_brand, day, step, previous_day, visitors
    )
    SELECT g.visitor_kind, g.product_category, g.product_brand, g.day, k.step,
           d.previous_days[k.step + 1], count(*)
    FROM visitor_groups_changed AS g
    JOIN visitor_days AS d
      ON d.day = g.day AND d.visitor_kind = g.visitor_kind
     AND d.product_category = g.product_category AND d.product_brand = g.product_brand
    CROSS JOIN LATERAL generate_series(0, d.furthest_step) AS k (step)
    GROUP BY 1, 2, 3, 4, 5, 6;
END;
$$;

-- Replaced by the set-based steps above and called by nothing else: session_scopes(), a probe
-- per session (session_scope_steps() is its rule for a table of sessions), and refresh_by_hour(),
-- the loop of 0006's hourly steps (they now read touched_events;
-- their old bodies depended on it until replaced, hence here).
DROP FUNCTION public.session_scopes(text, boolean, boolean);
DROP FUNCTION public.refresh_by_hour(regclass, text);

INSERT INTO public.aggregate_refresh_steps (step_order, refresh_function, refreshes) VALUES
    (7, 'public.refresh_touched_events',
     'touched_events: the touched sessions'' events outside the dirty hours');

SELECT public.grant_refresh_to_etl_writer(
    'public.session_scope_steps(regclass)',
    'public.refresh_touched_events()'
);

-- Daily rollups for the dashboards' global filters (category, brand) and their distinct counts,
-- kept by the ETL through refresh steps (0006), so that no panel counts sessions or visitors over
-- its whole range at query time.
--
-- A scope is a product category and brand, '' standing for any: ('', '') is everything, then
-- (category, ''), ('', brand) and (category, brand). A session belongs to ('', '') and to every
-- scope of a product it viewed or added to the cart (session_products); its events in a scope
-- other than ('', '') are the product views and add-to-carts of that scope's products.
--
-- Funnel steps of a session in a scope: 0 it belongs to it, 1 it viewed a product of the scope,
-- 2 it also added one to the cart, 3 it also started checkout, 4 it also completed checkout.
--
-- Distinct visitors over a range cannot be summed from days; they are exact this way: each day a
-- visitor is active in a scope up to a step is a row of visitor_days holding the visitor's
-- previous such day. Visitors active over [a, b] are the rows of days a..b whose previous day is
-- before a, counted per day and previous day in rollup_visitors_daily: a range is one index scan.

-- Events per scope and UTC hour: every event in ('', ''), product views and add-to-carts else.
CREATE TABLE public.rollup_events_hourly (
    product_category text NOT NULL,
    product_brand text NOT NULL,
    hour_start timestamptz NOT NULL,
    events integer NOT NULL,
    CONSTRAINT rollup_events_hourly_pkey PRIMARY KEY (product_category, product_brand, hour_start)
);

-- Sessions by the day they started (reporting time zone) and scope: how many, how many reached
-- each funnel step there, how many completed a checkout.
CREATE TABLE public.rollup_sessions_daily (
    product_category text NOT NULL,
    product_brand text NOT NULL,
    day date NOT NULL,
    sessions integer NOT NULL,
    product_view_sessions integer NOT NULL,
    add_to_cart_sessions integer NOT NULL,
    checkout_sessions integer NOT NULL,
    purchase_sessions integer NOT NULL,
    converted_sessions integer NOT NULL,
    CONSTRAINT rollup_sessions_daily_pkey PRIMARY KEY (product_category, product_brand, day)
);

-- A visitor is a client id ('client') or, for logged-in sessions, a user id ('user'). One row per
-- visitor, scope and day with a session started that day in the scope: the furthest step any of
-- them reached there, and per step k (previous_days[k + 1]) the visitor's previous day in the
-- scope that reached step k or further, '-infinity' when there is none.
CREATE TABLE public.visitor_days (
    visitor_kind text NOT NULL CHECK (visitor_kind IN ('client', 'user')),
    visitor_id text NOT NULL,
    product_category text NOT NULL,
    product_brand text NOT NULL,
    day date NOT NULL,
    furthest_step smallint NOT NULL CHECK (furthest_step BETWEEN 0 AND 4),
    previous_days date[] NOT NULL,
    CONSTRAINT visitor_days_pkey
        PRIMARY KEY (visitor_kind, visitor_id, product_category, product_brand, day)
);

CREATE INDEX visitor_days_day_idx
    ON public.visitor_days (day, visitor_kind, product_category, product_brand);

-- Visitors of a day, scope and step by their previous day there: the distinct visitors of days
-- a..b are the sum over those days of the rows whose previous_day is before a.
CREATE TABLE public.rollup_visitors_daily (
    visitor_kind text NOT NULL,
    product_category text NOT NULL,
    product_brand text NOT NULL,
    day date NOT NULL,
    step smallint NOT NULL,
    previous_day date NOT NULL,
    visitors integer NOT NULL,
    CONSTRAINT rollup_visitors_daily_pkey PRIMARY KEY (
        visitor_kind, product_category, product_brand, day, step, previous_day
    )
);

-- Journeys: the moves from a chosen page (and from '(entry)'), and those to '(exit)', of a range
-- of days, without reading every move of those days.
CREATE INDEX rollup_page_transitions_daily_from_page_idx
    ON public.rollup_page_transitions_daily (from_page, day);
CREATE INDEX rollup_page_transitions_daily_to_page_idx
    ON public.rollup_page_transitions_daily (to_page, day);

-- A visitor's sessions of a day, found without scanning.
CREATE INDEX sessions_client_id_idx ON public.sessions (client_id, session_start);
CREATE INDEX sessions_user_id_idx ON public.sessions (user_id, session_start)
    WHERE user_id IS NOT NULL;

-- The scopes a product of this category and brand puts a session in.
CREATE FUNCTION public.product_scopes(category text, brand text)
RETURNS TABLE (product_category text, product_brand text)
LANGUAGE sql
IMMUTABLE
AS $$
    VALUES ('', ''), (category, ''), ('', brand), (category, brand)
$$;

-- The scopes a session belongs to and the furthest funnel step it reached in each, from its
-- session_products rows (checkout is a step of the session, whatever it viewed).
CREATE FUNCTION public.session_scopes(
    for_session text, checkout_started boolean, converted boolean
)
RETURNS TABLE (product_category text, product_brand text, furthest_step smallint)
LANGUAGE sql
STABLE
AS $$
    SELECT scope.product_category,
           scope.product_brand,
           CASE WHEN NOT bool_or(scope.viewed) THEN 0
                WHEN NOT bool_or(scope.carted) THEN 1
                WHEN NOT checkout_started THEN 2
                WHEN NOT converted THEN 3
                ELSE 4
           END::smallint
    FROM (
        SELECT '' AS product_category, '' AS product_brand, false AS viewed, false AS carted
        UNION ALL
        SELECT s.product_category, s.product_brand, p.viewed, p.carted
        FROM public.session_products AS p
        CROSS JOIN LATERAL public.product_scopes(p.product_category, p.product_brand) AS s
        WHERE p.session_id = for_session
    ) AS scope
    GROUP BY scope.product_category, scope.product_brand
$$;

CREATE FUNCTION public.refresh_rollup_events_hourly()
RETURNS void
LANGUAGE sql
RETURN refresh_by_hour('public.rollup_events_hourly', $step$
        INSERT INTO rollup_events_hourly (product_category, product_brand, hour_start, events)
        SELECT s.product_category, s.product_brand, date_trunc('hour', e.event_timestamp),
               count(*)
        FROM clickstream_events AS e
        CROSS JOIN LATERAL product_scopes(coalesce(e.context_product_category, '(none)'),
                                          coalesce(e.context_product_brand, '(none)')) AS s
        WHERE e.event_timestamp >= $1 AND e.event_timestamp < $2
          AND (s.product_category = '' AND s.product_brand = ''
               OR e.event_name IN ('product_view', 'add_to_cart_click')
                  AND e.context_product_id IS NOT NULL)
        GROUP BY 1, 2, 3
        $step$);

-- The sessions of every day a touched session started on, before or after this refresh.
CREATE FUNCTION public.refresh_rollup_sessions_daily()
RETURNS void
LANGUAGE sql
RETURN refresh_by_day('public.rollup_sessions_daily', touched_session_days(), $step$
        INSERT INTO rollup_sessions_daily (
            product_category, product_brand, day, sessions, product_view_sessions,
            add_to_cart_sessions, checkout_sessions, purchase_sessions, converted_sessions
        )
        SELECT c.product_category, c.product_brand, $1,
               count(*),
               count(*) FILTER (WHERE c.furthest_step >= 1),
               count(*) FILTER (WHERE c.furthest_step >= 2),
               count(*) FILTER (WHERE c.furthest_step >= 3),
               count(*) FILTER (WHERE c.furthest_step >= 4),
               count(*) FILTER (WHERE s.converted)
        FROM sessions AS s
        CROSS JOIN LATERAL session_scopes(s.session_id, s.checkout_starts > 0, s.converted) AS c
        WHERE s.session_start >= $2 AND s.session_start < $3
        GROUP BY c.product_category, c.product_brand
        $step$);

-- visitor_days of the visitors of the touched sessions, on the days those sessions started
-- before or after this refresh; then the previous days of what changed, and the rollup of every
-- day, scope and visitor kind that changed.
CREATE FUNCTION public.refresh_visitor_days()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    zone text := reporting_time_zone();
BEGIN
    DROP TABLE IF EXISTS pg_temp.touched_visitor_days, pg_temp.visitor_days_now,
        pg_temp.visitor_days_changed, pg_temp.visitor_days_renumbered,
        pg_temp.visitor_groups_changed;

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

    -- What those visitor days hold now, from every session of the visitor that day.
    CREATE TEMP TABLE visitor_days_now ON COMMIT DROP AS
        SELECT t.visitor_kind, t.visitor_id, c.product_category, c.product_brand, t.day,
               max(c.furthest_step) AS furthest_step
        FROM touched_visitor_days AS t
        CROSS JOIN LATERAL (
            SELECT s.session_id, s.checkout_starts, s.converted
            FROM sessions AS s
            WHERE t.visitor_kind = 'client' AND s.client_id = t.visitor_id
              AND s.session_start >= t.day::timestamp AT TIME ZONE zone
              AND s.session_start < (t.day + 1)::timestamp AT TIME ZONE zone
            UNION ALL
            SELECT s.session_id, s.checkout_starts, s.converted
            FROM sessions AS s
            WHERE t.visitor_kind = 'user' AND s.user_id = t.visitor_id
              AND s.session_start >= t.day::timestamp AT TIME ZONE zone
              AND s.session_start < (t.day + 1)::timestamp AT TIME ZONE zone
        ) AS s
        CROSS JOIN LATERAL session_scopes(s.session_id, s.checkout_starts > 0, s.converted) AS c
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
        SELECT c.*, n.furthest_step AS step_now, stored.furthest_step AS step_stored
        FROM candidates AS c
        LEFT JOIN visitor_days_now AS n
            USING (visitor_kind, visitor_id, product_category, product_brand, day)
        LEFT JOIN LATERAL (
            SELECT d.furthest_step
            FROM visitor_days AS d
            WHERE d.visitor_kind = c.visitor_kind AND d.visitor_id = c.visitor_id
              AND d.product_category = c.product_category AND d.product_brand = c.product_brand
              AND d.day = c.day
            LIMIT 1
        ) AS stored ON true
        WHERE n.furthest_step IS DISTINCT FROM stored.furthest_step;
    ANALYZE visitor_days_changed;

    DELETE FROM visitor_days AS d USING visitor_days_changed AS c
    WHERE c.step_now IS NULL
      AND d.visitor_kind = c.visitor_kind AND d.visitor_id = c.visitor_id
      AND d.product_category = c.product_category AND d.product_brand = c.product_brand
      AND d.day = c.day;
    UPDATE visitor_days AS d SET furthest_step = c.step_now
    FROM visitor_days_changed AS c
    WHERE c.step_now IS NOT NULL AND c.step_stored IS NOT NULL
      AND d.visitor_kind = c.visitor_kind AND d.visitor_id = c.visitor_id
      AND d.product_category = c.product_category AND d.product_brand = c.product_brand
      AND d.day = c.day;
    INSERT INTO visitor_days (
        visitor_kind, visitor_id, product_category, product_brand, day, furthest_step,
        previous_days
    )
    SELECT visitor_kind, visitor_id, product_category, product_brand, day, step_now, '{}'
    FROM visitor_days_changed
    WHERE step_stored IS NULL;

    -- Previous days, from each changed visitor and scope's first changed day on.
    CREATE TEMP TABLE visitor_days_renumbered ON COMMIT DROP AS
        SELECT series.visitor_kind, series.visitor_id, series.product_category,
               series.product_brand, d.day, d.previous_days
        FROM (
            SELECT visitor_kind, visitor_id, product_category, product_brand,
                   min(day) AS first_changed
            FROM visitor_days_changed
            GROUP BY 1, 2, 3, 4
        ) AS series
        CROSS JOIN LATERAL (
            SELECT o.day,
                   o.previous_days AS stored,
                   ARRAY[
                       coalesce(max(o.day) OVER earlier, '-infinity'),
                       coalesce(max(o.day) FILTER (WHERE o.furthest_step >= 1) OVER earlier,
                                '-infinity'),
                       coalesce(max(o.day) FILTER (WHERE o.furthest_step >= 2) OVER earlier,
                                '-infinity'),
                       coalesce(max(o.day) FILTER (WHERE o.furthest_step >= 3) OVER earlier,
                                '-infinity'),
                       coalesce(max(o.day) FILTER (WHERE o.furthest_step >= 4) OVER earlier,
                                '-infinity')
                   ]::date[] AS previous_days
            FROM visitor_days AS o
            WHERE o.visitor_kind = series.visitor_kind AND o.visitor_id = series.visitor_id
              AND o.product_category = series.product_category
              AND o.product_brand = series.product_brand
            WINDOW earlier AS (ORDER BY o.day ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ) AS d
        WHERE d.day >= series.first_changed AND d.previous_days IS DISTINCT FROM d.stored;
    ANALYZE visitor_days_renumbered;
    UPDATE visitor_days AS d SET previous_days = r.previous_days
    FROM visitor_days_renumbered AS r
    WHERE d.visitor_kind = r.visitor_kind AND d.visitor_id = r.visitor_id
      AND d.product_category = r.product_category AND d.product_brand = r.product_brand
      AND d.day = r.day;

    CREATE TEMP TABLE visitor_groups_changed ON COMMIT DROP AS
        SELECT visitor_kind, product_category, product_brand, day FROM visitor_days_changed
        UNION
        SELECT visitor_kind, product_category, product_brand, day FROM visitor_days_renumbered;
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

INSERT INTO public.aggregate_refresh_steps (step_order, refresh_function, refreshes) VALUES
    (15, 'public.refresh_rollup_events_hourly', 'rollup_events_hourly: the dirty hours'),
    (70, 'public.refresh_rollup_sessions_daily',
     'rollup_sessions_daily: the days the touched sessions start on'),
    (80, 'public.refresh_visitor_days',
     'visitor_days and rollup_visitors_daily: the visitors of the touched sessions');

GRANT SELECT, INSERT, UPDATE, DELETE ON
    public.rollup_events_hourly, public.rollup_sessions_daily, public.visitor_days,
    public.rollup_visitors_daily
    TO clickstream_etl_writer;
GRANT SELECT ON
    public.rollup_events_hourly, public.rollup_sessions_daily, public.visitor_days,
    public.rollup_visitors_daily
    TO clickstream_dashboard_reader;
SELECT public.grant_refresh_to_etl_writer(
    'public.session_scopes(text, boolean, boolean)',
    'public.refresh_rollup_events_hourly()',
    'public.refresh_rollup_sessions_daily()',
    'public.refresh_visitor_days()'
);

-- Fill them from what is loaded already.
SELECT public.mark_range_dirty('-infinity', 'infinity');
SELECT public.refresh_dirty_aggregates();

-- The Journeys page's most common paths: each session's path of steps, and the sessions of each
-- path by the day they started (reporting time zone), kept by the ETL through two refresh steps
-- (0006's driver).
--
-- A session's path is its events in order, by name, with three simplifications that make paths
-- comparable: page_view and click are left out (every page sends a page_view beside its own view
-- event, and a click says nothing of where it led); a step repeated back to back is kept once
-- (three product views in a row are one product_view step); the first 8 steps are kept and
-- ' → …' marks a longer path. A session with no other events than those has the path
-- '(page views only)'.

CREATE FUNCTION public.journey_path(event_names text[])
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $$
    WITH steps AS (
        SELECT name, position, lag(name) OVER (ORDER BY position) AS previous
        FROM unnest(event_names) WITH ORDINALITY AS e (name, position)
        WHERE name NOT IN ('page_view', 'click')
    ), kept AS (
        SELECT name, row_number() OVER (ORDER BY position) AS step
        FROM steps
        WHERE previous IS DISTINCT FROM name
    )
    SELECT coalesce(
        string_agg(name, ' → ' ORDER BY step) FILTER (WHERE step <= 8)
            || CASE WHEN max(step) > 8 THEN ' → …' ELSE '' END,
        '(page views only)')
    FROM kept
$$;

CREATE TABLE public.session_journeys (
    session_id text NOT NULL,
    path text NOT NULL,
    CONSTRAINT session_journeys_pkey PRIMARY KEY (session_id)
);

CREATE TABLE public.rollup_journey_paths_daily (
    day date NOT NULL,
    path text NOT NULL,
    sessions integer NOT NULL,
    converted_sessions integer NOT NULL,
    CONSTRAINT rollup_journey_paths_daily_pkey PRIMARY KEY (day, path)
);

-- Every touched session's path, recomputed whole from its events read through the session_id
-- index (as refresh_sessions() reads them).
CREATE FUNCTION public.refresh_session_journeys()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
BEGIN
    INSERT INTO session_journeys (session_id, path)
    SELECT r.session_id, journey_path(e.event_names)
    FROM touched_sessions AS r
    CROSS JOIN LATERAL (
        SELECT array_agg(event_name ORDER BY event_timestamp, event_id) AS event_names
        FROM clickstream_events
        WHERE session_id = r.session_id
    ) AS e
    WHERE e.event_names IS NOT NULL
    ON CONFLICT (session_id) DO UPDATE SET path = EXCLUDED.path
    WHERE session_journeys.path IS DISTINCT FROM EXCLUDED.path;
END;
$$;

-- The paths of every session that starts on the days the touched sessions start on (before or
-- after this refresh), and how many of those sessions completed a checkout.
CREATE FUNCTION public.refresh_rollup_journey_paths_daily()
RETURNS void
LANGUAGE sql
RETURN refresh_by_day('public.rollup_journey_paths_daily', touched_session_days(), $step$
        INSERT INTO rollup_journey_paths_daily (day, path, sessions, converted_sessions)
        SELECT $1, j.path, count(*), count(*) FILTER (WHERE s.converted)
        FROM sessions AS s
        JOIN session_journeys AS j USING (session_id)
        WHERE s.session_start >= $2 AND s.session_start < $3
        GROUP BY j.path
        $step$);

INSERT INTO public.aggregate_refresh_steps (step_order, refresh_function, refreshes) VALUES
    (55, 'public.refresh_session_journeys', 'session_journeys: the touched sessions'),
    (65, 'public.refresh_rollup_journey_paths_daily',
     'rollup_journey_paths_daily: the days the touched sessions start on');

GRANT SELECT, INSERT, UPDATE, DELETE ON
    public.session_journeys, public.rollup_journey_paths_daily
    TO clickstream_etl_writer;
GRANT SELECT ON public.session_journeys, public.rollup_journey_paths_daily
    TO clickstream_dashboard_reader;
SELECT public.grant_refresh_to_etl_writer(
    'public.refresh_session_journeys()',
    'public.refresh_rollup_journey_paths_daily()'
);

-- Fill both from the sessions loaded already, with the same two steps over all of them (the
-- other aggregates are left as they are).
CREATE TEMP TABLE touched_sessions ON COMMIT DROP AS
    SELECT session_id FROM public.sessions;
CREATE TEMP TABLE touched_sessions_before ON COMMIT DROP AS
    SELECT * FROM public.sessions WHERE false;
ANALYZE touched_sessions;
SELECT public.refresh_session_journeys();
SELECT public.refresh_rollup_journey_paths_daily();

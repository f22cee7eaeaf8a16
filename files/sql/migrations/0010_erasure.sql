-- Erasing one person ("right to be forgotten"): the audit of each erasure, the functions that
-- find and remove a person's events, and two refresh steps (0006's driver) that make the
-- person's sessions disappear with their events.
--
-- A person is named by one identifier: a user_id (a logged-in account) or a client_id (a
-- browser). playbooks/erase_user.yml runs the erasure as the database owner (postgres), never as
-- the ETL writer or the dashboard reader:
--
-- 1. person_raw_hours() names the raw hour partitions that hold the person's events and rejected
--    lines;
-- 2. the clickstream_erase_raw module rewrites the raw objects of those hours without the
--    person's lines (clickstream.erasure);
-- 3. erase_person() deletes the person's events and rejected lines, queues their sessions for the
--    refresh and writes the audit row, and refresh_dirty_aggregates() recomputes what they were
--    part of, in one transaction.
--
-- The raw objects go first so that nothing can load the person again: once the warehouse has
-- forgotten them, a forced reload reads objects that no longer hold them.

-- One row per erasure that removed something. The identifier itself is not kept, only its
-- SHA-256: enough to answer "was this person erased, when, by whom", not to read back who it was.
CREATE TABLE public.erasures (
    erasure_id uuid NOT NULL DEFAULT gen_random_uuid(),
    erased_at timestamptz NOT NULL DEFAULT now(),
    key_kind text NOT NULL CHECK (key_kind IN ('user_id', 'client_id')),
    key_sha256 text NOT NULL CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    events_deleted bigint NOT NULL,
    rejects_deleted bigint NOT NULL,
    -- What the raw side did (clickstream_erase_raw); NULL when the erasure ran without it.
    raw_objects_rewritten integer,
    raw_objects_deleted integer,
    raw_versions_deleted integer,
    raw_lines_removed bigint,
    run_by text NOT NULL DEFAULT current_user,
    -- completed: warehouse and raw objects; warehouse_only: erase_person() called alone, the raw
    -- objects still hold the person (run playbooks/erase_user.yml).
    status text NOT NULL CHECK (status IN ('completed', 'warehouse_only')),
    CONSTRAINT erasures_pkey PRIMARY KEY (erasure_id)
);

CREATE INDEX erasures_key_sha256_idx ON public.erasures (key_sha256);

-- Sessions that lost events to an erasure, for the next refresh. Their events are gone, so the
-- dirty hours alone no longer lead to them; like etl_dirty_hours, a refresh consumes the queue in
-- its transaction, whoever runs it (this playbook or the next ETL run).
CREATE TABLE public.etl_erased_sessions (
    session_id text NOT NULL,
    CONSTRAINT etl_erased_sessions_pkey PRIMARY KEY (session_id)
);

-- The one identifier an erasure is given: exactly one of the two, not empty.
CREATE FUNCTION public.erasure_key(
    p_user_id text, p_client_id text, OUT key_kind text, OUT identifier text
)
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    IF (p_user_id IS NULL) = (p_client_id IS NULL) THEN
        RAISE EXCEPTION 'an erasure names one person: give either a user_id or a client_id';
    END IF;
    key_kind := CASE WHEN p_user_id IS NOT NULL THEN 'user_id' ELSE 'client_id' END;
    identifier := coalesce(p_user_id, p_client_id);
    IF identifier = '' THEN
        RAISE EXCEPTION 'the % to erase is empty', key_kind;
    END IF;
END;
$$;

-- Whether a raw line (a rejected line's raw_text) is the person's. The same rule as
-- clickstream.erasure.line_belongs_to, so that the warehouse and the raw bucket forget the same
-- lines:
-- * a raw record (a JSON object whose "event" is an object) is the person's when its event's
--   identity field is the identifier: userId / clientId in the tracker shape (an event with
--   eventName, as clickstream.mapping reads it), user_id / client_id in the warehouse shape;
-- * any other line is the person's when it holds the identifier as a JSON string.
CREATE FUNCTION public.raw_line_belongs_to(raw_text text, key_kind text, identifier text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
AS $$
DECLARE
    record json;
    event json;
    identity json;
BEGIN
    BEGIN
        -- The json type cannot navigate a document that spells U+0000 anywhere; such a
        -- character is never part of an identifier it stores.
        record := replace(raw_text, '\u0000', '\ufffd')::json;
        IF json_typeof(record) = 'object' THEN
            event := record -> 'event';
        END IF;
        IF event IS NOT NULL AND json_typeof(event) = 'object' THEN
            identity := event -> CASE
                WHEN event -> 'eventName' IS NULL THEN key_kind
                WHEN key_kind = 'user_id' THEN 'userId'
                ELSE 'clientId'
            END;
            RETURN coalesce(json_typeof(identity) = 'string' AND identity #>> '{}' = identifier,
                            false);
        END IF;
    EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
        NULL;  -- not JSON (or nested past the parser's depth): read it as text below
    END;
    RETURN strpos(raw_text, to_json(identifier)::text) > 0;
END;
$$;

-- The raw hour partitions (UTC) that hold the person's events and rejected lines: the receive
-- hours of their events (an object's key is its request's receive hour) and the partitions of
-- the objects their rejected lines came from. Retried copies of an event in other hours are not
-- in the warehouse; the playbook's window (erase_start, erase_end) reaches them.
CREATE FUNCTION public.person_raw_hours(p_user_id text, p_client_id text)
RETURNS SETOF timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    person record;
BEGIN
    SELECT * INTO person FROM erasure_key(p_user_id, p_client_id);
    RETURN QUERY
        SELECT date_trunc('hour', e.received_at)
        FROM clickstream_events AS e
        WHERE e.user_id = p_user_id OR e.client_id = p_client_id
        UNION
        SELECT o.partition_hour
        FROM etl_rejects AS r JOIN etl_loaded_objects AS o USING (object_key)
        WHERE raw_line_belongs_to(r.raw_text, person.key_kind, person.identifier)
        ORDER BY 1;
END;
$$;

-- Delete the person's events and rejected lines, mark the hours their events were in dirty and
-- queue their sessions for refresh_dirty_aggregates() (to run in the same transaction, as the
-- playbook does), and write the audit row when anything was removed, here or in the raw bucket.
--
-- p_scanned_hours are the raw hours whose objects the raw side rewrote, and p_scan_started_at
-- the time (this server's clock) before it listed them. An event or rejected line of the person
-- in another hour, or loaded since then (from an object the listing may have missed), makes it
-- refuse, whole, so that the warehouse never forgets what the raw bucket still holds: run the
-- erasure again. Without p_scanned_hours there is no such check, and the erasure is recorded as
-- warehouse_only. The p_raw_* counts are what the raw side did, for the audit row.
--
-- It waits for a running ETL load to finish (the load's run lock, clickstream.loader.RUN_LOCK_KEY)
-- so that no load can be writing the person's rows while they are deleted.
CREATE FUNCTION public.erase_person(
    p_user_id text,
    p_client_id text,
    p_scanned_hours timestamptz[] DEFAULT NULL,
    p_scan_started_at timestamptz DEFAULT NULL,
    p_raw_objects_rewritten integer DEFAULT NULL,
    p_raw_objects_deleted integer DEFAULT NULL,
    p_raw_versions_deleted integer DEFAULT NULL,
    p_raw_lines_removed bigint DEFAULT NULL,
    OUT erasure_id uuid,
    OUT events_deleted bigint,
    OUT rejects_deleted bigint,
    OUT sessions_queued bigint,
    OUT raw_hours timestamptz[]
)
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    person record;
    unscanned_hours timestamptz[];
BEGIN
    SELECT * INTO person FROM erasure_key(p_user_id, p_client_id);
    PERFORM pg_advisory_xact_lock(7164216982964106348);  -- 0x636C69636B65746C, "clickstream etl"

    DROP TABLE IF EXISTS pg_temp.erased_events, pg_temp.erased_rejects;
    CREATE TEMP TABLE erased_events ON COMMIT DROP AS
        WITH deleted AS (
            DELETE FROM clickstream_events
            WHERE user_id = p_user_id OR client_id = p_client_id
            RETURNING event_timestamp, received_at, loaded_at, session_id
        )
        SELECT * FROM deleted;
    CREATE TEMP TABLE erased_rejects ON COMMIT DROP AS
        WITH deleted AS (
            DELETE FROM etl_rejects
            WHERE raw_line_belongs_to(raw_text, person.key_kind, person.identifier)
            RETURNING object_key, rejected_at
        )
        SELECT * FROM deleted;

    raw_hours := ARRAY(
        SELECT date_trunc('hour', received_at) FROM erased_events
        UNION
        SELECT o.partition_hour
        FROM erased_rejects AS r JOIN etl_loaded_objects AS o USING (object_key)
        ORDER BY 1
    );
    IF p_scanned_hours IS NOT NULL THEN
        unscanned_hours := ARRAY(
            SELECT hour FROM unnest(raw_hours) AS hour
            EXCEPT
            SELECT date_trunc('hour', scanned) FROM unnest(p_scanned_hours) AS scanned
            ORDER BY 1
        );
        IF cardinality(unscanned_hours) > 0 THEN
            RAISE EXCEPTION 'the person has events or rejected lines in raw hours that were not '
                'rewritten (%): nothing was erased, run the erasure again',
                array_to_string(unscanned_hours, ', ');
        END IF;
        IF EXISTS (SELECT FROM erased_events WHERE loaded_at >= p_scan_started_at)
                OR EXISTS (SELECT FROM erased_rejects WHERE rejected_at >= p_scan_started_at) THEN
            RAISE EXCEPTION 'events or rejected lines of the person loaded while their raw '
                'objects were rewritten: nothing was erased, run the erasure again';
        END IF;
    END IF;

    -- The refresh reads the hours by event time.
    INSERT INTO etl_dirty_hours (hour_start)
    SELECT DISTINCT date_trunc('hour', event_timestamp) FROM erased_events
    ON CONFLICT DO NOTHING;
    WITH queued AS (
        INSERT INTO etl_erased_sessions (session_id)
        SELECT DISTINCT session_id FROM erased_events WHERE session_id IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO sessions_queued FROM queued;

    events_deleted := (SELECT count(*) FROM erased_events);
    rejects_deleted := (SELECT count(*) FROM erased_rejects);
    IF events_deleted + rejects_deleted + coalesce(p_raw_lines_removed, 0)
            + coalesce(p_raw_versions_deleted, 0) > 0 THEN
        INSERT INTO erasures (
            key_kind, key_sha256, events_deleted, rejects_deleted, raw_objects_rewritten,
            raw_objects_deleted, raw_versions_deleted, raw_lines_removed, status
        )
        VALUES (
            person.key_kind, encode(sha256(convert_to(person.identifier, 'UTF8')), 'hex'),
            events_deleted, rejects_deleted, p_raw_objects_rewritten, p_raw_objects_deleted,
            p_raw_versions_deleted, p_raw_lines_removed,
            CASE WHEN p_scanned_hours IS NULL THEN 'warehouse_only' ELSE 'completed' END
        )
        RETURNING erasures.erasure_id INTO erasure_id;
    END IF;
END;
$$;

-- Refresh step 5, before every other: the queued sessions join the refresh's touched sessions,
-- with their rows before it, so that the steps after it recompute or remove them, their
-- session-start days and their visitors (0006's slice; the queue is left in erased_sessions for
-- the step below).
CREATE FUNCTION public.refresh_touch_erased_sessions()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    DROP TABLE IF EXISTS pg_temp.erased_sessions, pg_temp.erased_sessions_added;
    -- The ETL's every refresh comes through here; only one after an erasure has work to do.
    IF NOT EXISTS (SELECT FROM etl_erased_sessions) THEN
        RETURN;
    END IF;
    CREATE TEMP TABLE erased_sessions ON COMMIT DROP AS
        WITH taken AS (DELETE FROM etl_erased_sessions RETURNING session_id)
        SELECT session_id FROM taken;
    CREATE TEMP TABLE erased_sessions_added ON COMMIT DROP AS
        SELECT q.session_id FROM erased_sessions AS q
        WHERE NOT EXISTS (SELECT FROM touched_sessions AS t WHERE t.session_id = q.session_id);
    INSERT INTO touched_sessions (session_id) SELECT session_id FROM erased_sessions_added;
    INSERT INTO touched_sessions_before
    SELECT s.* FROM erased_sessions_added AS a JOIN sessions AS s USING (session_id);
    INSERT INTO touched_session_products_before
    SELECT p.* FROM erased_sessions_added AS a JOIN session_products AS p USING (session_id);
    ANALYZE erased_sessions;
    ANALYZE touched_sessions;
    ANALYZE touched_sessions_before;
    ANALYZE touched_session_products_before;
END;
$$;

-- Refresh step 45, after refresh_sessions(): a queued session left without events is removed,
-- with its path. refresh_sessions() and refresh_session_journeys() recompute a session from its
-- events and skip one that has none, which would leave its old row, user and client ids included.
CREATE FUNCTION public.refresh_remove_emptied_sessions()
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF to_regclass('pg_temp.erased_sessions') IS NULL THEN
        RETURN;  -- no erasure queued sessions for this refresh
    END IF;
    CREATE TEMP TABLE emptied_sessions ON COMMIT DROP AS
        SELECT q.session_id FROM erased_sessions AS q
        WHERE NOT EXISTS (SELECT FROM clickstream_events AS e WHERE e.session_id = q.session_id);
    DELETE FROM sessions AS s USING emptied_sessions AS q WHERE s.session_id = q.session_id;
    DELETE FROM session_journeys AS j USING emptied_sessions AS q WHERE j.session_id = q.session_id;
    DROP TABLE emptied_sessions;
END;
$$;

INSERT INTO public.aggregate_refresh_steps (step_order, refresh_function, refreshes) VALUES
    (5, 'public.refresh_touch_erased_sessions',
     'touched sessions: those an erasure took events from (etl_erased_sessions)'),
    (45, 'public.refresh_remove_emptied_sessions',
     'sessions and session_journeys: remove erased sessions left without events');

-- The refresh runs as the ETL writer too (its hourly run may be the one that finds the queue).
-- Sessions are derived from the events like every rollup it rebuilds, so it may now delete a
-- sessions row; it still cannot delete an event.
GRANT SELECT, DELETE ON public.etl_erased_sessions TO clickstream_etl_writer;
GRANT DELETE ON public.sessions TO clickstream_etl_writer;
SELECT public.grant_refresh_to_etl_writer(
    'public.refresh_touch_erased_sessions()',
    'public.refresh_remove_emptied_sessions()'
);

-- Erasing is the database owner's (postgres's) act alone: functions are executable by PUBLIC
-- unless revoked, and neither the writer nor the reader gets them back.
REVOKE EXECUTE ON FUNCTION
    public.person_raw_hours(text, text),
    public.erase_person(text, text, timestamptz[], timestamptz, integer, integer, integer, bigint)
    FROM PUBLIC;

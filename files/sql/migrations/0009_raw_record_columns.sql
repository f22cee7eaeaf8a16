-- What the raw record holds, the warehouse holds (issue 12): every clock the client sent, the id
-- as sent, the browser, the click target and the order facts of checkout events. Rows loaded
-- before this migration have NULL here until a forced backfill of their hours rewrites them
-- (README, "Backfill a window of hours"): the mapping that fills them is the ETL's, not SQL's.
--
-- event_timestamp stays the time the dashboards use; it is now derived from these clocks
-- (clickstream.mapping.event_time): receive time minus how long the event waited on the device
-- when both device times are there, else the client's time when plausible, else the receive time.

ALTER TABLE public.clickstream_events
    -- The eventId / event_id as the client sent it; event_id is its UUIDv5 when it is no UUID.
    ADD COLUMN client_event_id text,
    -- The device's clock: when the event happened, and when its batch left the device (sentAt).
    ADD COLUMN client_timestamp timestamptz,
    ADD COLUMN client_sent_at timestamptz,
    ADD COLUMN user_agent text,
    -- The click target as the tracker sent it ({tag, id, role, text, dataset}).
    ADD COLUMN element jsonb,
    -- Checkout facts, typed from element.dataset's strings; NULL (and counted in the run's
    -- unparsable_values) when a value does not parse.
    ADD COLUMN order_id text,
    ADD COLUMN cart_id text,
    ADD COLUMN order_total numeric(15, 2),
    ADD COLUMN item_count integer;

-- A run that died (killed, timed out, lost its connection) is marked abandoned by the next run,
-- which holds the run lock and so knows that no other run is alive.
ALTER TABLE public.etl_runs DROP CONSTRAINT etl_runs_status_check;
ALTER TABLE public.etl_runs ADD CONSTRAINT etl_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'incomplete', 'abandoned'));

-- Per column, how many values of the run's events did not parse (order facts), and how many
-- lines the load isolated because PostgreSQL refused them (kept in etl_rejects).
ALTER TABLE public.etl_runs
    ADD COLUMN unparsable_values jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN isolated_lines bigint NOT NULL DEFAULT 0;

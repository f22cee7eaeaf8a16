-- What the ETL needs to load every raw object exactly once and to keep what it could not load.

-- The load ledger: a raw object is loaded when its row is here, committed in the same
-- transaction as its events, so that a crash leaves all of an object or none of it.
CREATE TABLE public.etl_loaded_objects (
    object_key text NOT NULL,
    partition_hour timestamptz NOT NULL,
    etag text,
    size_bytes bigint NOT NULL,
    lines integer NOT NULL,
    rejected_lines integer NOT NULL,
    run_id uuid NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT etl_loaded_objects_pkey PRIMARY KEY (object_key)
);

-- A scheduled run lists only the hours from the newest loaded partition (minus a lookback).
CREATE INDEX etl_loaded_objects_partition_hour_idx
    ON public.etl_loaded_objects (partition_hour);

-- Lines that broke the contract: kept with their reason and text, never dropped.
CREATE TABLE public.etl_rejects (
    object_key text NOT NULL,
    line_number integer NOT NULL,
    reason text NOT NULL,
    raw_text text NOT NULL,
    run_id uuid NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT etl_rejects_pkey PRIMARY KEY (object_key, line_number)
);

-- One row per ETL run, for the data-quality page and for operators.
CREATE TABLE public.etl_runs (
    run_id uuid NOT NULL,
    trigger text NOT NULL CHECK (trigger IN ('schedule', 'window')),
    window_start timestamptz,
    window_end timestamptz,
    forced boolean NOT NULL DEFAULT false,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'incomplete')),
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    objects integer NOT NULL DEFAULT 0,
    events_loaded bigint NOT NULL DEFAULT 0,
    events_updated bigint NOT NULL DEFAULT 0,
    duplicates_skipped bigint NOT NULL DEFAULT 0,
    rejected_lines bigint NOT NULL DEFAULT 0,
    pending_objects integer NOT NULL DEFAULT 0,
    lag_seconds double precision,
    detail text,
    CONSTRAINT etl_runs_pkey PRIMARY KEY (run_id)
);

CREATE INDEX etl_runs_started_at_idx ON public.etl_runs (started_at);

-- The hours a load touched that the aggregates have not caught up with yet. Marked in the load's
-- transaction, consumed by refresh_dirty_aggregates(): a crash between the two only delays it.
CREATE TABLE public.etl_dirty_hours (
    hour_start timestamptz NOT NULL,
    CONSTRAINT etl_dirty_hours_pkey PRIMARY KEY (hour_start)
);

-- Settings the ETL and the dashboards must agree on, kept in the warehouse itself.
CREATE TABLE public.warehouse_settings (
    name text NOT NULL,
    value text NOT NULL,
    CONSTRAINT warehouse_settings_pkey PRIMARY KEY (name)
);

-- Daily rollups are cut at midnight in the shop's time zone; the dwh_schema role sets it.
INSERT INTO public.warehouse_settings (name, value) VALUES ('reporting_time_zone', 'UTC');

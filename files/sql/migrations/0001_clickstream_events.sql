-- The event table of seed 003 (clickstream_dw.public.clickstream_events), one row per event.
--
-- Append-only time data: a BRIN index on the event time is a few pages for millions of rows and
-- serves every range scan of the ETL's rollup refresh and the dashboards; b-tree only where a
-- lookup needs one (the event_id key that deduplicates, session_id for sessionization).

CREATE TABLE public.clickstream_events (
    event_id uuid NOT NULL,
    event_timestamp timestamptz NOT NULL,
    event_name text NOT NULL,
    user_id text,
    user_login_state text,
    identity_source text,
    client_id text,
    session_id text,
    is_first_visit boolean,
    context_product_id text,
    context_product_name text,
    context_product_category text,
    context_product_brand text,
    -- VND amounts; the contract bounds them to 1e12 so that they always fit.
    context_product_price numeric(15, 2),
    context_product_discount_price numeric(15, 2),
    context_product_url_path text,
    -- Beyond the 16 fields of seed 003: the page (journeys need it) and the server receive time.
    page_url text,
    referrer text,
    received_at timestamptz NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clickstream_events_pkey PRIMARY KEY (event_id)
);

COMMENT ON TABLE public.clickstream_events IS
    'One row per clickstream event, loaded by Lambda ETL from the raw bucket; event_id deduplicates.';

CREATE INDEX clickstream_events_event_timestamp_brin
    ON public.clickstream_events USING brin (event_timestamp) WITH (pages_per_range = 32);

CREATE INDEX clickstream_events_session_id_idx
    ON public.clickstream_events (session_id);

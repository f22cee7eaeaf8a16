-- Group roles that carry the privileges; the login users (with passwords from Vault / SSM,
-- created by the dwh_schema role) are granted membership. Nobody but the migration owner owns a
-- table, so neither group can DROP, TRUNCATE or ALTER anything.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clickstream_etl_writer') THEN
        CREATE ROLE clickstream_etl_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clickstream_dashboard_reader') THEN
        CREATE ROLE clickstream_dashboard_reader NOLOGIN;
    END IF;
    -- The ETL stages each batch in a temporary table.
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO clickstream_etl_writer',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO clickstream_dashboard_reader',
                   current_database());
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO clickstream_etl_writer, clickstream_dashboard_reader;

-- The ETL appends events (and rewrites them on a forced reload), never deletes them.
GRANT SELECT, INSERT, UPDATE ON public.clickstream_events TO clickstream_etl_writer;
GRANT SELECT, INSERT, UPDATE ON
    public.etl_loaded_objects, public.etl_rejects, public.etl_runs, public.sessions
    TO clickstream_etl_writer;
-- Marks and rollups are consumed and rebuilt by refresh_dirty_aggregates().
GRANT SELECT, INSERT, UPDATE, DELETE ON
    public.etl_dirty_hours,
    public.rollup_funnel_daily, public.rollup_product_daily, public.rollup_activity_hourly
    TO clickstream_etl_writer;
GRANT SELECT ON public.warehouse_settings, public.schema_migrations TO clickstream_etl_writer;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO clickstream_dashboard_reader;
-- Tables of later migrations (created by the same owner) are readable by the dashboards too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO clickstream_dashboard_reader;

REVOKE EXECUTE ON FUNCTION public.refresh_dirty_aggregates(), public.mark_range_dirty(timestamptz, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.refresh_dirty_aggregates(), public.mark_range_dirty(timestamptz, timestamptz)
    TO clickstream_etl_writer;

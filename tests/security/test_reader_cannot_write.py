"""The dashboards' login can read the warehouse and change nothing in it (docs/security.md,
"Warehouse"): what the catalog grants it, for every object the migrations made, and what the
server answers when it tries. tests/test_migrations.py checks the reads and the first writes."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2 import errors

from tests.fixtures.warehouse import READER_USER

# Privileges that change a relation's rows, empty it, or hang something on it.
WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
WAREHOUSE_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"


def reader_relations(warehouse, kinds: str, holds: str) -> list[str]:
    """The warehouse's relations of the given kinds (pg_class.relkind letters) for which the SQL
    test ``holds`` (on ``c.oid`` and the reader's name ``%(reader)s``) is true."""
    rows = warehouse.query(
        f"""
        SELECT n.nspname || '.' || c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind::text = ANY(%(kinds)s) AND {WAREHOUSE_SCHEMAS}
          -- CASE: the planner may call a privilege function before it filters on the kind.
          AND CASE WHEN c.relkind::text = ANY(%(kinds)s) THEN {holds} END
        """,
        {"reader": READER_USER, "kinds": list(kinds)},
    )
    return [name for (name,) in rows]


def test_the_reader_holds_no_write_privilege_on_any_table_view_or_rollup(warehouse):
    # Tables, partitioned tables, views, materialized views, foreign tables.
    holds = f"has_table_privilege(%(reader)s, c.oid, '{WRITE_PRIVILEGES}')"
    assert reader_relations(warehouse, "rpvmf", holds) == []


def test_the_reader_reads_every_table_so_the_catalog_check_above_saw_them(warehouse):
    holds = "NOT has_table_privilege(%(reader)s, c.oid, 'SELECT')"
    assert reader_relations(warehouse, "rp", holds) == []


def test_the_reader_can_advance_no_sequence(warehouse):
    # USAGE allows nextval(), UPDATE setval(): both change the sequence.
    holds = "has_sequence_privilege(%(reader)s, c.oid, 'USAGE, UPDATE')"
    assert reader_relations(warehouse, "S", holds) == []


def test_the_reader_may_create_nothing_in_any_schema_or_the_database(warehouse):
    creatable = warehouse.query(
        f"""
        SELECT n.nspname FROM pg_namespace n
        WHERE {WAREHOUSE_SCHEMAS} AND has_schema_privilege(%(reader)s, n.oid, 'CREATE')
        UNION ALL
        SELECT current_database()
        WHERE has_database_privilege(%(reader)s, current_database(), 'CREATE')
        """,
        {"reader": READER_USER},
    )
    assert creatable == []


def test_the_reader_can_run_no_function_with_its_owners_rights(warehouse):
    # A SECURITY DEFINER function would write with the migration owner's privileges.
    definer_functions = warehouse.query(
        f"""
        SELECT p.oid::regprocedure::text
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prosecdef AND {WAREHOUSE_SCHEMAS}
          AND has_function_privilege(%(reader)s, p.oid, 'EXECUTE')
        """,
        {"reader": READER_USER},
    )
    assert definer_functions == []


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE clickstream_events",
        "DROP TABLE sessions",
        "ALTER TABLE clickstream_events ADD COLUMN note text",
        "CREATE TABLE public.dashboard_notes (note text)",
        "CREATE SCHEMA dashboard_scratch",
        "UPDATE warehouse_settings SET value = 'UTC'",
        "INSERT INTO etl_loaded_objects DEFAULT VALUES",
        "DELETE FROM schema_migrations",
        "SELECT mark_range_dirty(now() - interval '1 hour', now())",
    ],
)
def test_the_reader_is_refused_when_it_tries_to_change_anything(warehouse, statement):
    connection = warehouse.reader_connection()
    try:
        with pytest.raises(psycopg2.Error) as raised, connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()
    assert isinstance(raised.value, errors.InsufficientPrivilege), raised.value

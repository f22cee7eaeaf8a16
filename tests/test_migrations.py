"""The warehouse schema: one set of ordered migrations, applied once, with least-privilege roles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors

from clickstream import migrations

REPOSITORY = Path(__file__).resolve().parents[1]

INSERT_ONE_EVENT = (
    "INSERT INTO clickstream_events (event_id, event_timestamp, event_name, received_at)"
    " VALUES (gen_random_uuid(), now(), 'page_view', now())"
)


@pytest.fixture
def empty_database(postgres):
    name = "clickstream_dw_empty"
    postgres.execute_autocommit(f"CREATE DATABASE {name}")
    yield name
    postgres.execute_autocommit(f"DROP DATABASE {name} WITH (FORCE)")


def test_migrations_apply_in_order_and_record_their_versions(postgres, empty_database):
    connection = postgres.connect(empty_database)
    try:
        applied = migrations.apply_migrations(connection)
        with connection.cursor() as cursor:
            cursor.execute("SELECT version, checksum FROM schema_migrations ORDER BY version")
            recorded = cursor.fetchall()
    finally:
        connection.close()
    on_disk = migrations.discover()
    assert [m.version for m in applied] == [m.version for m in on_disk]
    assert recorded == [(m.version, m.checksum) for m in on_disk]


def test_a_second_run_applies_nothing(postgres, empty_database):
    connection = postgres.connect(empty_database)
    try:
        migrations.apply_migrations(connection)
        assert migrations.apply_migrations(connection) == []
    finally:
        connection.close()


def test_an_edited_applied_migration_is_refused(postgres, empty_database):
    connection = postgres.connect(empty_database)
    try:
        migrations.apply_migrations(connection)
        edited = migrations.discover()
        edited[0] = migrations.Migration(edited[0].version, edited[0].name, edited[0].sql + "\n--")
        with pytest.raises(migrations.MigrationError, match="edited after it was applied"):
            migrations.apply_migrations(connection, edited)
    finally:
        connection.close()


def test_a_failing_migration_leaves_no_trace_and_names_itself(postgres, empty_database):
    broken = [*migrations.discover()]
    broken.append(migrations.Migration(len(broken) + 1, "broken", "CREATE TABLE x (); SELECT 1/0;"))
    connection = postgres.connect(empty_database)
    try:
        with pytest.raises(migrations.MigrationError, match=f"{len(broken):04d}_broken failed"):
            migrations.apply_migrations(connection, broken)
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('public.x'), max(version) FROM schema_migrations")
            assert cursor.fetchone() == (None, len(broken) - 1)
    finally:
        connection.close()


def test_migration_files_must_be_numbered_without_gaps(tmp_path):
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "0003_third.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match="without gaps"):
        migrations.discover(tmp_path)


def test_the_etl_writer_inserts_events_but_cannot_drop_truncate_or_delete(warehouse):
    connection = warehouse.etl_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(INSERT_ONE_EVENT)
        connection.commit()
        for statement in (
            "DROP TABLE clickstream_events",
            "TRUNCATE clickstream_events",
            "DELETE FROM clickstream_events",
            "ALTER TABLE clickstream_events ADD COLUMN x int",
            "CREATE TABLE public.intruder (id int)",
        ):
            with pytest.raises(psycopg2.Error) as raised, connection.cursor() as cursor:
                cursor.execute(statement)
            assert isinstance(
                raised.value, errors.InsufficientPrivilege | errors.UndefinedTable
            ) or "must be owner" in str(raised.value), statement
            connection.rollback()
    finally:
        connection.close()
    assert warehouse.scalar("SELECT count(*) FROM clickstream_events") == 1


@pytest.mark.parametrize(
    "statement",
    [
        INSERT_ONE_EVENT,
        "UPDATE sessions SET events = 0",
        "DELETE FROM rollup_funnel_daily",
        "SELECT refresh_dirty_aggregates()",
    ],
)
def test_the_dashboard_reader_can_only_read(warehouse, statement):
    connection = warehouse.reader_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM clickstream_events")
            cursor.execute("SELECT count(*) FROM rollup_funnel_daily")
            with pytest.raises(errors.InsufficientPrivilege):
                cursor.execute(statement)
    finally:
        connection.close()


def run_cli(postgres, database, *arguments):
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY / "lambda_src"),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres.port),
        "PGUSER": "postgres",
        "PGPASSWORD": postgres.superuser_password,
        "PGDATABASE": database,
    }
    completed = subprocess.run(
        [sys.executable, "-m", "clickstream.migrations", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.returncode, json.loads(completed.stdout)


def test_the_command_line_reports_pending_in_check_mode_then_applies_once(postgres, empty_database):
    labels = [m.label for m in migrations.discover()]
    assert run_cli(postgres, empty_database, "--check") == (0, {"applied": [], "pending": labels})
    assert run_cli(postgres, empty_database) == (0, {"applied": labels, "pending": []})
    assert run_cli(postgres, empty_database) == (0, {"applied": [], "pending": []})
    assert run_cli(postgres, empty_database, "--check") == (0, {"applied": [], "pending": []})


def test_the_journey_paths_migration_fills_them_for_what_was_loaded_before_it(
    postgres, empty_database
):
    every = migrations.discover()
    journeys = next(m for m in every if m.name == "journey_paths")
    connection = postgres.connect(empty_database)
    try:
        migrations.apply_migrations(connection, [m for m in every if m.version < journeys.version])
        with connection.cursor() as cursor:
            for session, start, names in (
                ("bought", "2025-12-01 10:00+00", "page_view home_view page_view product_view "
                 "add_to_cart_click page_view checkout_start checkout_complete"),
                ("browsed", "2025-12-02 23:50+00", "page_view category_view page_view"),
            ):  # fmt: skip
                for offset, name in enumerate(names.split()):
                    cursor.execute(
                        "INSERT INTO clickstream_events (event_id, event_timestamp, event_name, "
                        "received_at, session_id, page_url) VALUES (gen_random_uuid(), "
                        "%s::timestamptz + %s * interval '1 minute', %s, now(), %s, '/')",
                        (start, offset, name, session),
                    )
            cursor.execute("SELECT mark_range_dirty('-infinity', 'infinity')")
            cursor.execute("SELECT refresh_dirty_aggregates()")
        up_to_journeys = [m for m in every if m.version <= journeys.version]
        assert migrations.apply_migrations(connection, up_to_journeys) == [journeys]
        with connection.cursor() as cursor:
            cursor.execute("SELECT session_id, path FROM session_journeys ORDER BY 1")
            paths = cursor.fetchall()
            cursor.execute("SELECT day::text, path, sessions, converted_sessions "
                           "FROM rollup_journey_paths_daily ORDER BY 1")  # fmt: skip
            rollup = cursor.fetchall()
    finally:
        connection.close()
    bought = "home_view → product_view → add_to_cart_click → checkout_start → checkout_complete"
    assert paths == [("bought", bought), ("browsed", "category_view")]
    assert rollup == [("2025-12-01", bought, 1, 1), ("2025-12-02", "category_view", 1, 0)]

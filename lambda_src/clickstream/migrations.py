"""Apply the warehouse migrations (files/sql/migrations/NNNN_name.sql) in order, once each.

The one schema of the warehouse is those files. This runner is what the tests, the benchmark and
the dwh_schema role use: it records each applied version with the checksum of its file in
``schema_migrations``, applies each pending file in its own transaction together with that
record, and refuses to run when an applied file has since been edited (a new migration is the
way to change the schema). Concurrent runners serialise on an advisory lock.

Usage (the connection comes from the standard libpq PG* environment variables):

    python -m clickstream.migrations            apply what is pending
    python -m clickstream.migrations --check    only report what is pending

Both print one JSON object, {"applied": [...], "pending": [...]}, and exit 1 with
{"error": "..."} when the migrations cannot be applied as they are.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from clickstream.resources import shared_file

MIGRATIONS_DIRECTORY = "sql/migrations"
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# pg_advisory_lock key: "clickstream migrations" hashed to a stable 63-bit integer.
MIGRATION_LOCK_KEY = 0x636C69636B6D6967

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (version)
)
"""


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they are; the message says why."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def discover(directory: Path | None = None) -> list[Migration]:
    """The migrations in ``directory``, ordered; gaps, duplicates and odd names are errors."""
    directory = directory or shared_file(MIGRATIONS_DIRECTORY)
    migrations = []
    for path in sorted(directory.iterdir()):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(
            Migration(int(match["version"]), match["name"], path.read_text(encoding="utf-8"))
        )
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3... without gaps: {versions}")
    return migrations


def applied_versions(connection) -> dict[int, str]:
    """Version → checksum of every migration applied to the connected database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return {}
        cursor.execute("SELECT version, checksum FROM public.schema_migrations")
        return dict(cursor.fetchall())


def pending(connection, migrations: list[Migration]) -> list[Migration]:
    """The migrations not yet applied; raises when an applied one was edited or is unknown."""
    applied = applied_versions(connection)
    known = {migration.version: migration for migration in migrations}
    for version, checksum in sorted(applied.items()):
        if version not in known:
            raise MigrationError(
                f"the database has migration {version:04d}, which this checkout does not know: "
                "it is newer than this code"
            )
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {known[version].label} was edited after it was applied; "
                "change the schema with a new migration instead"
            )
    return [migration for migration in migrations if migration.version not in applied]


def apply_migrations(connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what is pending, each file in one transaction with its record; return those applied.

    ``connection`` is a psycopg2 connection of the schema owner; it is left in autocommit mode.
    """
    migrations = discover() if migrations is None else migrations
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        with connection.cursor() as cursor:
            cursor.execute(_CREATE_LEDGER)
        to_apply = pending(connection, migrations)
        for migration in to_apply:
            connection.autocommit = False
            try:
                with connection.cursor() as cursor:
                    cursor.execute(migration.sql)
                    cursor.execute(
                        "INSERT INTO public.schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                connection.commit()
            except Exception as error:
                connection.rollback()
                raise MigrationError(f"migration {migration.label} failed: {error}") from error
            finally:
                connection.autocommit = True
        return to_apply
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    import psycopg2

    parser = argparse.ArgumentParser(description="Apply the clickstream warehouse migrations.")
    parser.add_argument(
        "--check", action="store_true", help="report what is pending, apply nothing"
    )
    arguments = parser.parse_args(argv)
    connection = psycopg2.connect("")  # the libpq environment (PGHOST, PGDATABASE, ...) says where
    try:
        if arguments.check:
            result = {"applied": [], "pending": [m.label for m in pending(connection, discover())]}
        else:
            result = {"applied": [m.label for m in apply_migrations(connection)], "pending": []}
    except MigrationError as error:
        print(json.dumps({"error": str(error)}))
        return 1
    finally:
        connection.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

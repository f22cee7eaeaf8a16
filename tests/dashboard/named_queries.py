"""The dashboards' named queries (files/dashboard/queries.sql), run as the app runs them."""

from __future__ import annotations

import re
from pathlib import Path

QUERIES_FILE = Path(__file__).resolve().parents[2] / "files" / "dashboard" / "queries.sql"
_NAME = re.compile(r"^-- name: (\w+)\s*$")
_PARAMETER = re.compile(r"\?(\w+)")


def load(path: Path = QUERIES_FILE) -> dict[str, str]:
    """Every query of the file by name; comment lines are dropped, as the app drops them."""
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _NAME.match(line)
        if match:
            current = queries.setdefault(match.group(1), [])
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";") for name, lines in queries.items()}


def to_psycopg(statement: str) -> str:
    """?name parameters as psycopg2's %(name)s (a literal % doubled)."""
    return _PARAMETER.sub(r"%(\1)s", statement.replace("%", "%%"))


def run(connection, statement: str, parameters: dict[str, str]) -> list[dict]:
    """Rows as dicts, parameters bound as text literals (what DBI::sqlInterpolate makes)."""
    with connection.cursor() as cursor:
        cursor.execute(to_psycopg(statement), {k: str(v) for k, v in parameters.items()})
        columns = [column.name for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    connection.rollback()
    return rows

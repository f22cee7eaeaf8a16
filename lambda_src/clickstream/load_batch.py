"""A load's batch, prepared in Python: raw objects split into transactions, their lines parsed,
mapped and deduplicated, and the rows encoded as COPY input. Pure: no database, no AWS.

The loader (``clickstream.loader``) prepares the next chunk while the warehouse writer
(``clickstream.warehouse_writer``) merges this one.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass

from clickstream.mapping import (
    EVENT_ID,
    EVENT_TIMESTAMP,
    RECEIVED_AT,
    RejectedLine,
    parse_raw_line,
)
from clickstream.raw_store import RawObject

# A transaction holds whole objects up to about this many lines, bounding memory and the work a
# crash can roll back (objects are never split across transactions); small enough that parsing
# the next chunk overlaps merging this one. It never holds two hour partitions: the loader then
# knows each hour's figures as its last object commits (its progress).
CHUNK_TARGET_LINES = 10_000


@dataclass(frozen=True)
class PreparedChunk:
    """A transaction's worth of objects, parsed, ready for the warehouse.

    ``rows`` are the rows of every line that mapped, repeats included (a forced reload stages
    them all and keeps the right copy), ``origins`` where each came from (object key, line), and
    ``unique`` the first row of each event_id, with ``csv_rows`` the same as COPY input.
    ``bodies`` are the objects' bytes, by key: a row PostgreSQL refuses is kept as a reject
    with its line's text.
    """

    rows: list[tuple]
    origins: list[tuple[str, int]]
    unique: list[tuple]
    unique_origins: list[tuple[str, int]]
    csv_rows: io.StringIO
    dirty_hours: set[str]
    rejects: list[tuple]
    ledger_rows: list[tuple]
    missing: int
    unparsable: Counter
    bodies: dict[str, bytes]
    run_id: str


def chunks(
    fetched: Iterable[tuple[RawObject, bytes | None]],
) -> Iterator[list[tuple[RawObject, bytes | None]]]:
    chunk: list[tuple[RawObject, bytes | None]] = []
    lines = 0
    for item, body in fetched:
        if chunk and item.hour != chunk[-1][0].hour:
            yield chunk
            chunk, lines = [], 0
        chunk.append((item, body))
        lines += body.count(b"\n") + 1 if body else 0
        if lines >= CHUNK_TARGET_LINES:
            yield chunk
            chunk, lines = [], 0
    if chunk:
        yield chunk


def prepare_chunk(chunk: list[tuple[RawObject, bytes | None]], run_id: str) -> PreparedChunk:
    rows: list[tuple] = []
    origins: list[tuple[str, int]] = []
    rejects: list[tuple] = []
    ledger_rows: list[tuple] = []
    bodies: dict[str, bytes] = {}
    unparsable: Counter = Counter()
    missing = 0
    for item, body in chunk:
        if body is None:  # expired between listing and reading: nothing to load, nothing to mark
            missing += 1
            continue
        bodies[item.key] = body
        line_count = rejected = 0
        for line_number, raw_line in enumerate(body.split(b"\n"), start=1):
            if not raw_line.strip():
                continue
            line_count += 1
            parsed = _parse_line(raw_line, line_number, unparsable)
            if isinstance(parsed, RejectedLine):
                rejected += 1
                rejects.append((item.key, line_number, parsed.reason, parsed.raw_text, run_id))
            else:
                rows.append(parsed)
                origins.append((item.key, line_number))
        ledger_rows.append(
            (item.key, item.hour, item.etag, item.size, line_count, rejected, run_id)
        )
    unique_indexes = _first_of_each_event(rows)
    unique = [rows[index] for index in unique_indexes]
    return PreparedChunk(
        rows=rows,
        origins=origins,
        unique=unique,
        unique_origins=[origins[index] for index in unique_indexes],
        csv_rows=csv_of(unique),
        dirty_hours={utc_hour(row[EVENT_TIMESTAMP]) for row in unique},
        rejects=rejects,
        ledger_rows=ledger_rows,
        missing=missing,
        unparsable=unparsable,
        bodies=bodies,
        run_id=run_id,
    )


def _first_of_each_event(rows: list[tuple]) -> list[int]:
    """The indexes of the first row of each event_id."""
    return _first_indexes(rows, lambda row: row[EVENT_ID])


def first_copy_of_each_receive(prepared: PreparedChunk) -> tuple[list[tuple], list[tuple]]:
    """The rows (and their origins) a forced reload stages: of each event, the first copy of
    each receive time. Copies received at the same moment (repeats within one request) are not
    told apart by the database's choice, so the one a load would store, the first, is kept."""
    indexes = _first_indexes(prepared.rows, lambda row: (row[EVENT_ID], row[RECEIVED_AT]))
    return [prepared.rows[i] for i in indexes], [prepared.origins[i] for i in indexes]


def _first_indexes(rows: list[tuple], key: Callable[[tuple], Hashable]) -> list[int]:
    seen: set = set()
    first = []
    for index, row in enumerate(rows):
        row_key = key(row)
        if row_key not in seen:
            seen.add(row_key)
            first.append(index)
    return first


def csv_of(rows: Iterable[tuple]) -> io.StringIO:
    """The rows as COPY's CSV input, total over every text: with a CR LF line terminator, the
    csv module quotes every field holding a CR or a LF (it quotes any character of the
    terminator), so a lone carriage return in a URL is data, never the end of a row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    buffer.seek(0)
    return buffer


def utc_hour(event_timestamp: str) -> str:
    """'2025-12-01T10' for a row's event time: the mapping writes every one in UTC, with a Z."""
    return event_timestamp[:13]


def _parse_line(raw_line: bytes, line_number: int, unparsable: Counter):
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        return RejectedLine(line_number, f"not valid UTF-8: {error}", storable_text(raw_line))
    parsed = parse_raw_line(line, line_number, unparsable)
    if isinstance(parsed, RejectedLine) and "\x00" in parsed.raw_text:
        # PostgreSQL text cannot hold U+0000; keep the line, visibly marked where it was.
        return RejectedLine(line_number, parsed.reason, parsed.raw_text.replace("\x00", "\ufffd"))
    return parsed


def storable_text(raw_line: bytes) -> str:
    """A line's bytes as text PostgreSQL can store: invalid UTF-8 and U+0000 as U+FFFD."""
    return raw_line.decode("utf-8", errors="replace").replace("\x00", "\ufffd")

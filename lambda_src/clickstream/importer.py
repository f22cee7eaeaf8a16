"""Import history into the raw bucket: events whose times are kept as given.

    python -m clickstream.importer --bucket RAW_BUCKET events-2024.ndjson [more.ndjson ...]

A browser's clock is believed only near the time the ingest received the event (a wrong device
clock must not move today's events to last year). History from another system is different:
its ``event_timestamp`` is the truth. So an import does not go through POST /clickstream. It
writes raw records marked ``"origin": "import"`` (contract ``rawRecord/origin``), which only a
holder of write access to the raw bucket can write, and the ETL keeps their event times as given
(``clickstream.mapping.event_time``). Everything else is the ordinary path: the records land in
the current hour's partition (their receive hour is the import's), and the next scheduled ETL
run, or a window run of that hour, loads them exactly once.

Each input line is one event of the contract (``incomingEvent``: the warehouse shape of seed 003,
or the tracker's), with the same limits as the ingest: what the contract refuses, and what the
warehouse could not store (U+0000, integers beyond what the ETL reads exactly), is listed with
its file, line and reason, and then nothing at all is written. Query parameters that the ingest
redacts by default (``privacy.DEFAULT_REDACTED_QUERY_PARAMETERS``) are redacted here too.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickstream import contract, mapping, partitions, privacy, raw_format

# Records per raw object: what the loader takes in one transaction (load_batch.CHUNK_TARGET_LINES).
RECORDS_PER_OBJECT = 10_000


@dataclass(frozen=True)
class ImportProblem:
    source: str
    line_number: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line_number}: {self.reason}"


def _event_of(line: str) -> Any:
    return json.loads(line, parse_int=raw_format.exact_integer)


def read_events(
    sources: Iterable[tuple[str, Iterable[str]]],
) -> tuple[list[dict[str, Any]], list[ImportProblem]]:
    """Every event of the (name, lines) sources, and every problem of a line that is none."""
    events: list[dict[str, Any]] = []
    problems: list[ImportProblem] = []
    for source, lines in sources:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = _event_of(line)
            except (ValueError, RecursionError) as error:
                problems.append(ImportProblem(source, line_number, f"not a JSON event: {error}"))
                continue
            found = contract.problems(event, contract.INCOMING_EVENT)
            unstorable = None if found else raw_format.unstorable_value(event)
            if found or unstorable:
                reasons = unstorable or "; ".join(map(str, found))
                problems.append(ImportProblem(source, line_number, reasons))
            else:
                # Privacy by default, as at the ingest: no secret query parameter is stored.
                events.append(
                    privacy.redact_event_urls(event, privacy.DEFAULT_REDACTED_QUERY_PARAMETERS)
                )
    return events, problems


def import_records(
    events: list[dict[str, Any]], *, imported_at: datetime
) -> Iterator[dict[str, Any]]:
    """The raw records of an import: received (written) now, marked as an import."""
    for event in events:
        yield mapping.new_raw_record(
            event,
            received_at=imported_at,
            request_id=None,
            user_agent=None,
            origin=mapping.ORIGIN_IMPORT,
        )


def write_import(
    s3_client, bucket: str, events: list[dict[str, Any]], *, imported_at: datetime
) -> list[str]:
    """Write the events as raw objects of the import's hour partition; return their keys."""
    records = list(import_records(events, imported_at=imported_at))
    keys = []
    for first in range(0, len(records), RECORDS_PER_OBJECT):
        key = partitions.object_key(imported_at, uuid.uuid4().hex)
        s3_client.put_object(
            Bucket=bucket,
            Key=key,
            Body=raw_format.encode_raw_object(records[first : first + RECORDS_PER_OBJECT]),
            ContentType=raw_format.CONTENT_TYPE,
        )
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clickstream.importer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--bucket", required=True, help="the raw bucket")
    parser.add_argument("files", nargs="+", type=Path, help="NDJSON files, one event a line")
    options = parser.parse_args(argv)

    sources = [(str(path), path.read_text(encoding="utf-8").splitlines()) for path in options.files]
    events, problems = read_events(sources)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            f"{len(problems)} lines are no importable event; nothing was written.", file=sys.stderr
        )
        return 1
    import boto3  # only a run that writes needs it

    keys = write_import(boto3.client("s3"), options.bucket, events, imported_at=datetime.now(UTC))
    print(json.dumps({"events": len(events), "objects": keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The raw object format: newline-delimited JSON, one raw record (contract rawRecord) per line.

Loaders stream NDJSON line by line, a bad line spoils only itself, and one object per request
keeps S3 writes to one PUT however large the batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "application/x-ndjson"


def encode_raw_object(records: Iterable[dict[str, Any]]) -> bytes:
    """The bytes of a raw object holding ``records``, each line ending in a newline."""
    return "".join(
        json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n" for record in records
    ).encode("utf-8")

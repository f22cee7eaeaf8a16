"""The raw object format: newline-delimited JSON, one raw record (contract rawRecord) per line.

Loaders stream NDJSON line by line, a bad line spoils only itself, and one object per request
keeps S3 writes to one PUT however large the batch.

A raw line must also hold only what the ETL can load. This module is the one definition of that:
the ingest refuses a body that breaks it (``exact_integer`` as its JSON parser's integer hook,
``unstorable_value`` on the parsed body), and the ETL rejects a line that breaks it all the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "application/x-ndjson"

# The ETL parses raw lines with orjson, which reads an integer exactly only from int64's minimum
# to uint64's maximum. Beyond that it reads a float, rounded (2**64 → 1.8446744073709552e+19),
# and a number beyond a double fails the whole line ("number is infinity"). Python's json would
# write either happily, so the ingest refuses such an integer rather than store what cannot load.
MIN_EXACT_INTEGER = -(2**63)
MAX_EXACT_INTEGER = 2**64 - 1
# JSON integer text has no "+" and no leading zeros, so longer text is out of range unread (and
# int() is never asked to convert thousands of digits).
_MAX_EXACT_INTEGER_CHARS = max(len(str(MIN_EXACT_INTEGER)), len(str(MAX_EXACT_INTEGER)))

# PostgreSQL text and jsonb cannot hold U+0000, and JSON can spell it only as this escape (a raw
# control character is invalid JSON): a line without it needs no walk.
NUL = "\x00"
NUL_ESCAPE = "\\u0000"

# How much of an offending name or number a reason quotes.
_QUOTED_CHARS = 40


class IntegerOutOfRange(ValueError):
    """An integer that the ETL's JSON parser cannot read exactly."""


def encode_raw_object(records: Iterable[dict[str, Any]]) -> bytes:
    """The bytes of a raw object holding ``records``, each line ending in a newline."""
    return "".join(
        json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n" for record in records
    ).encode("utf-8")


def is_exact_integer(number: int) -> bool:
    """Whether the ETL reads ``number`` back exactly from a raw line."""
    return MIN_EXACT_INTEGER <= number <= MAX_EXACT_INTEGER


def _out_of_range_reason(integer_text: str) -> str:
    return (
        f"the integer {_quoted(integer_text)} is outside {MIN_EXACT_INTEGER} to "
        f"{MAX_EXACT_INTEGER}, the integers the ETL reads exactly"
    )


def exact_integer(text: str) -> int:
    """A JSON integer literal as an int; IntegerOutOfRange when the ETL could not read it exactly.

    Made for ``json.loads(..., parse_int=exact_integer)``, which passes valid JSON integer text.
    """
    if len(text) <= _MAX_EXACT_INTEGER_CHARS:
        number = int(text)
        if is_exact_integer(number):
            return number
    raise IntegerOutOfRange(_out_of_range_reason(text))


def unstorable_value(document: Any) -> str | None:
    """Why a parsed raw line (or body) cannot be stored, naming the JSON pointer of the first
    offending value in document order, or None when everything in it can be.

    Checks every name and string for U+0000 and every integer for the exact range, at any depth.
    The walk is iterative, so a document nested as deep as a JSON parser allows cannot overflow
    the stack; a path is a (parent, segment) chain, so that deep nesting costs no copying.
    """
    pending: list[tuple[_Path, Any]] = [(None, document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if NUL in value:
                return f"{_pointer(path)}: contains U+0000, which PostgreSQL text cannot store"
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not is_exact_integer(value):
                return f"{_pointer(path)}: {_out_of_range_reason(_integer_text(value))}"
        elif isinstance(value, dict):
            for name in value:
                if NUL in name:
                    return (
                        f"{_pointer((path, name))}: the name contains U+0000, which PostgreSQL "
                        "text cannot store"
                    )
            # Reversed onto the stack, so that members are taken in document order.
            pending.extend(((path, name), member) for name, member in reversed(value.items()))
        elif isinstance(value, list):
            pending.extend(
                ((path, str(index)), item) for index, item in reversed(list(enumerate(value)))
            )
    return None


# A JSON pointer under construction: None for the document, else (parent, name or index).
_Path = tuple["_Path", str] | None


def _integer_text(number: int) -> str:
    # str() refuses integers of more than 4300 digits (CVE-2020-10735); their size says enough.
    return str(number) if number.bit_length() <= 1024 else f"of {number.bit_length()} bits"


def _quoted(text: str) -> str:
    return text if len(text) <= _QUOTED_CHARS else f"{text[:_QUOTED_CHARS]}… ({len(text)} chars)"


def _pointer(path: _Path) -> str:
    """A JSON pointer (RFC 6901) for messages and logs: a NUL in a name is shown as its escape,
    since the reason itself is stored as text, and a long name is cut."""
    segments = []
    while path is not None:
        path, segment = path
        segments.append(segment.replace("~", "~0").replace("/", "~1").replace(NUL, NUL_ESCAPE))
    if not segments:
        return "the document"
    return "".join(f"/{_quoted(segment)}" for segment in reversed(segments))

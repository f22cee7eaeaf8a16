"""The event contract: validation against files/contract/clickstream-event.schema.json.

Two validators read the one schema file. fastjsonschema compiles it to Python code: it is
imported in 15 ms and checks an event in microseconds, so it guards every request and every
loaded line. It stops at the first problem, though, so when an instance fails, the jsonschema
library (imported only then) lists every problem with its path for the error response or the
rejects table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from clickstream.resources import shared_file

CONTRACT_PATH = shared_file("contract/clickstream-event.schema.json")
CONTRACT: dict[str, Any] = json.loads(CONTRACT_PATH.read_text(encoding="utf-8"))

INCOMING_EVENT = "incomingEvent"
RAW_RECORD = "rawRecord"
RAW_RECORD_VERSION = 1


@dataclass(frozen=True)
class Problem:
    """One reason an instance breaks the contract: where (a JSON pointer) and why."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.reason}"


def _schema_of(definition: str) -> dict[str, Any]:
    return {
        "$schema": CONTRACT["$schema"],
        "$ref": f"#/definitions/{definition}",
        "definitions": CONTRACT["definitions"],
    }


_FAST_VALIDATORS = {
    name: fastjsonschema.compile(_schema_of(name)) for name in (INCOMING_EVENT, RAW_RECORD)
}


def is_valid(instance: Any, definition: str) -> bool:
    """True when ``instance`` satisfies ``definitions/<definition>`` of the contract."""
    try:
        _FAST_VALIDATORS[definition](instance)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def problems(instance: Any, definition: str, path_prefix: str = "") -> list[Problem]:
    """Every way ``instance`` breaks ``definitions/<definition>``; empty when it is valid."""
    if is_valid(instance, definition):
        return []
    import jsonschema  # only failures pay its import time (see the module docstring)

    validator = jsonschema.Draft7Validator(_schema_of(definition))
    found = [
        Problem(path_prefix + _json_pointer(error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]
    if not found:  # the two libraries disagree: never call an invalid instance valid
        try:
            _FAST_VALIDATORS[definition](instance)
        except fastjsonschema.JsonSchemaException as error:
            found = [Problem(path_prefix, error.message)]
    return found


def _json_pointer(parts: Any) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)

"""Erase one person from the raw bucket: the raw half of a "right to be forgotten" erasure.

playbooks/erase_user.yml runs it (module clickstream_erase_raw) on the hours the warehouse names,
then erases the person from the warehouse (erase_person(), migration 0010). Both halves decide
which lines are the person's by one rule, ``line_belongs_to`` here and raw_line_belongs_to()
there, so that a forced reload of a rewritten object brings back nothing the warehouse forgot.

- An erased line becomes an empty line: every other line keeps its bytes and its line number,
  which ``etl_rejects`` rows name, and the loader skips empty lines. An object left with no line
  is deleted.
- The raw bucket is versioned: once an object is rewritten, every older version of it (and any
  delete marker) is deleted, so the old bytes are gone. The hours are listed by version, so that
  older versions an interrupted run or an expiry left behind are found and deleted too.
- Only the current versions that change are written; a second run changes nothing.

No boto3 here: the S3 client is passed in.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

from clickstream import raw_store
from clickstream.partitions import floor_hour, hour_of_key, hour_prefix, hours_between
from clickstream.raw_format import CONTENT_TYPE

KEY_KINDS = ("user_id", "client_id")
# The identity fields of the tracker shape (an event with eventName), as clickstream.mapping reads
# them; the warehouse shape spells them like the key kinds.
_TRACKER_FIELDS = {"user_id": "userId", "client_id": "clientId"}
# S3's name for the version of an object written while the bucket was not versioned.
NULL_VERSION = "null"
READ_CONCURRENCY = 16


@dataclass(frozen=True)
class Person:
    """Whom to erase: a user_id (an account) or a client_id (a browser)."""

    key_kind: str
    identifier: str

    def __post_init__(self) -> None:
        if self.key_kind not in KEY_KINDS:
            raise ValueError(f"a person is named by one of {KEY_KINDS}, not {self.key_kind!r}")
        if not isinstance(self.identifier, str) or not self.identifier:
            raise ValueError(f"the {self.key_kind} to erase is empty")

    @property
    def as_json_string(self) -> str:
        """The identifier as a JSON string, as PostgreSQL's to_json(text) spells it."""
        return json.dumps(self.identifier, ensure_ascii=False)


def _refuse_constant(name: str) -> None:
    # NaN and Infinity are not JSON (PostgreSQL's json type refuses them too).
    raise ValueError(f"{name} is not JSON")


def line_belongs_to(text: str, person: Person) -> bool:
    """Whether a raw line is the person's.

    A raw record (a JSON object whose ``event`` is an object) is theirs when its event's identity
    field is the identifier: ``userId`` / ``clientId`` in the tracker shape, ``user_id`` /
    ``client_id`` in the warehouse shape. Any other line (not JSON, or not a record) is theirs
    when it holds the identifier as a JSON string.
    """
    try:
        record = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        record = None
    event = record.get("event") if isinstance(record, dict) else None
    if not isinstance(event, dict):
        return person.as_json_string in text
    field_name = _TRACKER_FIELDS[person.key_kind] if "eventName" in event else person.key_kind
    return event.get(field_name) == person.identifier


def _line_text(raw_line: bytes) -> str:
    # As the loader keeps a rejected line's raw_text: what the warehouse's rule reads.
    return raw_line.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


@dataclass(frozen=True)
class ErasedBody:
    body: bytes
    lines_removed: int

    @property
    def is_empty(self) -> bool:
        return not self.body.strip()


def erase_lines(body: bytes, person: Person) -> ErasedBody:
    """The object's bytes with each of the person's lines emptied; other lines untouched."""
    lines = body.split(b"\n")
    removed = 0
    for index, raw_line in enumerate(lines):
        if raw_line.strip() and line_belongs_to(_line_text(raw_line), person):
            lines[index] = b""
            removed += 1
    return ErasedBody(b"\n".join(lines) if removed else body, removed)


def hours_to_scan(
    hours: Iterable[datetime], start: datetime | None = None, end: datetime | None = None
) -> list[datetime]:
    """The given hours and, when given, every hour from ``start`` to ``end``: sorted, once each."""
    scanned = {floor_hour(hour) for hour in hours}
    if start is not None and end is not None:
        if end < start:
            raise ValueError(f"the window ends ({end:%Y-%m-%dT%H}) before it starts")
        scanned.update(hours_between(start, end))
    return sorted(scanned)


@dataclass(frozen=True)
class _Version:
    key: str
    version_id: str
    is_latest: bool
    is_delete_marker: bool


@dataclass
class ObjectErasure:
    """What the erasure did (or, in a dry run, would do) to one key."""

    key: str
    action: str  # rewritten | deleted | old_versions_deleted
    lines_removed: int = 0
    versions_deleted: int = 0


@dataclass
class RawErasureReport:
    hours: list[str]
    objects_scanned: int = 0
    objects_rewritten: int = 0
    objects_deleted: int = 0
    # Versions other than the current one (older versions, delete markers) that were deleted.
    versions_deleted: int = 0
    lines_removed: int = 0
    objects: list[ObjectErasure] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.objects)

    def as_dict(self) -> dict:
        return {**asdict(self), "changed": self.changed}


def erase_raw_objects(
    s3_client,
    bucket: str,
    hours: Iterable[datetime],
    person: Person,
    *,
    dry_run: bool = False,
    concurrency: int = READ_CONCURRENCY,
) -> RawErasureReport:
    """Remove the person's lines from every raw object (and every version) of ``hours``.

    With ``dry_run`` it reads everything and writes nothing, reporting what a run would do.
    """
    scanned_hours = sorted({floor_hour(hour) for hour in hours})
    report = RawErasureReport(hours=[hour.isoformat() for hour in scanned_hours])
    keys = [
        (key, versions)
        for hour in scanned_hours
        for key, versions in _versions_of_hour(s3_client, bucket, hour).items()
    ]

    def erase(item: tuple[str, list[_Version]]) -> ObjectErasure | None:
        key, versions = item
        return _erase_key(s3_client, bucket, key, versions, person, dry_run)

    report.objects_scanned = sum(
        any(not version.is_delete_marker for version in versions) for _, versions in keys
    )
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for erased in pool.map(erase, keys):
            if erased is None:
                continue
            report.objects.append(erased)
            report.objects_rewritten += erased.action == "rewritten"
            report.objects_deleted += erased.action == "deleted"
            report.lines_removed += erased.lines_removed
            report.versions_deleted += erased.versions_deleted
    return report


def _versions_of_hour(s3_client, bucket: str, hour: datetime) -> dict[str, list[_Version]]:
    """Every version and delete marker under the hour's prefix, by key, in key order."""
    by_key: dict[str, list[_Version]] = defaultdict(list)
    paginator = s3_client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=hour_prefix(hour)):
        for listed, is_marker in (
            *((item, False) for item in page.get("Versions", [])),
            *((item, True) for item in page.get("DeleteMarkers", [])),
        ):
            if hour_of_key(listed["Key"]) is None:
                continue
            by_key[listed["Key"]].append(
                _Version(
                    key=listed["Key"],
                    version_id=listed.get("VersionId") or NULL_VERSION,
                    is_latest=bool(listed.get("IsLatest")),
                    is_delete_marker=is_marker,
                )
            )
    return dict(sorted(by_key.items()))


def _erase_key(
    s3_client, bucket: str, key: str, versions: list[_Version], person: Person, dry_run: bool
) -> ObjectErasure | None:
    current = next((v for v in versions if v.is_latest and not v.is_delete_marker), None)
    body = raw_store.read_object(s3_client, bucket, key) if current else None
    erased = erase_lines(body, person) if body is not None else None

    if erased is not None and erased.lines_removed:
        if erased.is_empty:
            # Nothing of the object is left: every version and marker goes, the key with them.
            doomed = versions
            result = ObjectErasure(key, "deleted", erased.lines_removed, len(versions) - 1)
        else:
            new_version = NULL_VERSION
            if not dry_run:
                written = s3_client.put_object(
                    Bucket=bucket, Key=key, Body=erased.body, ContentType=CONTENT_TYPE
                )
                new_version = written.get("VersionId") or NULL_VERSION
            # Unversioned (or suspended) buckets overwrite the null version in place.
            doomed = [v for v in versions if v.version_id != new_version]
            result = ObjectErasure(key, "rewritten", erased.lines_removed, len(doomed))
    else:
        # The current version is clean (or gone): older versions may still hold the person,
        # left by an interrupted run or by an expiry (a delete marker over the last version).
        doomed = [
            v
            for v in versions
            if not v.is_latest
            and not v.is_delete_marker
            and _version_holds(s3_client, bucket, v, person)
        ]
        if not doomed:
            return None
        result = ObjectErasure(key, "old_versions_deleted", versions_deleted=len(doomed))
    if not dry_run:
        for version in doomed:
            s3_client.delete_object(Bucket=bucket, Key=key, VersionId=version.version_id)
    return result


def _version_holds(s3_client, bucket: str, version: _Version, person: Person) -> bool:
    body = s3_client.get_object(Bucket=bucket, Key=version.key, VersionId=version.version_id)
    return erase_lines(body["Body"].read(), person).lines_removed > 0

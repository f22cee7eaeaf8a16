"""The raw bucket's I/O: listing an hour partition and reading an object. Clients come in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import ClientError

from clickstream.partitions import hour_of_key, hour_prefix


@dataclass(frozen=True)
class RawObject:
    key: str
    hour: datetime
    size: int
    etag: str
    last_modified: datetime


def list_hour(s3_client, bucket: str, hour: datetime) -> list[RawObject]:
    """Every raw object of the partition ``events/YYYY/MM/DD/HH/``, in key order."""
    found = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=hour_prefix(hour)):
        for item in page.get("Contents", []):
            key_hour = hour_of_key(item["Key"])
            if key_hour is not None:
                found.append(
                    RawObject(
                        key=item["Key"],
                        hour=key_hour,
                        size=item["Size"],
                        etag=item["ETag"].strip('"'),
                        last_modified=item["LastModified"],
                    )
                )
    return found


def read_object(s3_client, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when it no longer exists (expired since it was listed)."""
    try:
        return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise

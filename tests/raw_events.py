"""Building tracker events and raw objects for tests, through the production mapping code."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from clickstream.mapping import new_raw_record
from clickstream.partitions import object_key
from clickstream.raw_format import CONTENT_TYPE, encode_raw_object


def tracker_event(event_name: str = "product_view", **fields: Any) -> dict[str, Any]:
    """A body as the shop's tracker sends it (camelCase), with a product by default."""
    event: dict[str, Any] = {
        "eventName": event_name,
        "pageUrl": "https://shop.example.com/products/dell-xps-13",
        "referrer": "https://shop.example.com/",
        "userId": None,
        "userLoginState": "anonymous",
        "clientId": "client-1",
        "sessionId": "session-1",
        "isFirstVisit": False,
        "product": {
            "id": "p-100",
            "name": "Dell XPS 13",
            "category": "laptop",
            "brand": "Dell",
            "price": 32990000,
            "discountPrice": 29990000,
            "urlPath": "/products/dell-xps-13",
        },
    }
    event.update(fields)
    return event


def raw_record(event: dict[str, Any], received_at: datetime, **overrides: Any) -> dict[str, Any]:
    record = new_raw_record(event, received_at=received_at, request_id="req-1", user_agent="ua")
    record.update(overrides)
    return record


def put_raw_object(
    s3_client, bucket: str, records: list[dict[str, Any]], received_at: datetime
) -> str:
    """Write ``records`` as one raw object in the partition of ``received_at``; return its key."""
    key = object_key(received_at, uuid.uuid4().hex)
    s3_client.put_object(
        Bucket=bucket, Key=key, Body=encode_raw_object(records), ContentType=CONTENT_TYPE
    )
    return key


def put_raw_bytes(s3_client, bucket: str, body: bytes, received_at: datetime) -> str:
    """Write an object of arbitrary bytes (malformed on purpose) into a partition."""
    key = object_key(received_at, uuid.uuid4().hex)
    s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return key

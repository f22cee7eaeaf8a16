"""One warehouse for the dashboard tests: a seeded synthetic shop, through ingest and ETL.

Made once per test session (about 15 s): the shop's two weeks go through the real ingest handler
into moto S3 (tools/synthetic_shop.py write-raw) and the real loader (loader.run_window) into a
clone of the migrated warehouse, with the reporting time zone set to the shop's. A few broken
raw lines give the data-quality page rejects to show.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from clickstream import loader
from clickstream.partitions import object_key
from tests.fixtures.aws import REGION, aws_environment
from tests.fixtures.warehouse import TEMPLATE_DATABASE, Warehouse
from tools import synthetic_shop
from tools.synthetic_shop import SHOP_TIME_ZONE, Shop

SEED = 11
START = date(2025, 12, 1)
DAYS = 15
SESSIONS_PER_DAY = 250
BUCKET = "clickstream-dashboard-tests"
# Lines that break the contract, in an object of their own.
BROKEN_LINES = [b"this is not json", b'{"record_version": 1, "event_id": "nope"}', b"[1, 2"]


@dataclass(frozen=True)
class ShopData:
    warehouse: Warehouse
    sessions: list[list[dict]]
    time_zone: str

    @property
    def events(self) -> list[dict]:
        return [event for session in self.sessions for event in session]


@pytest.fixture(scope="session")
def shop_data(postgres, migrated_template, moto_server) -> Iterator[ShopData]:
    database = "clickstream_dw_dashboard"
    postgres.execute_autocommit(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE_DATABASE}")
    warehouse = Warehouse(postgres, database, migrated_template.etl, migrated_template.reader)
    _set_time_zone(warehouse)
    moto_server.reset()
    start = datetime.combine(START, datetime.min.time(), UTC)
    end = start + timedelta(days=DAYS)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in aws_environment(moto_server.endpoint_url).items():
            patch.setenv(name, value)
        s3 = moto_server.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        arguments = ["write-raw", "--bucket", BUCKET, "--start", START.isoformat(),
                     "--days", str(DAYS), "--sessions-per-day", str(SESSIONS_PER_DAY),
                     "--seed", str(SEED)]  # fmt: skip
        assert synthetic_shop.main(arguments) == 0
        broken_at = start + timedelta(days=DAYS - 1, hours=12)  # an hour the window loads
        s3.put_object(
            Bucket=BUCKET,
            Key=object_key(broken_at, str(uuid.uuid4())),
            Body=b"\n".join(BROKEN_LINES) + b"\n",
        )
        connection = warehouse.etl_connection()
        try:
            report = loader.run_window(
                connection, s3, BUCKET, start=start, end=end + timedelta(hours=3)
            )
        finally:
            connection.close()
    assert report.rejected_lines == len(BROKEN_LINES)
    sessions = list(Shop(seed=SEED).sessions_between(start, end, SESSIONS_PER_DAY))
    assert report.events_loaded == sum(len(session) for session in sessions)
    yield ShopData(warehouse, sessions, SHOP_TIME_ZONE)
    postgres.execute_autocommit(f"DROP DATABASE {database} WITH (FORCE)")


def _set_time_zone(warehouse: Warehouse) -> None:
    connection = warehouse.admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE warehouse_settings SET value = %s WHERE name = 'reporting_time_zone'",
                (SHOP_TIME_ZONE,),
            )
        connection.commit()
    finally:
        connection.close()

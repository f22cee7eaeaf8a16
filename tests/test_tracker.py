"""The browser tracker in real headless Chromium: a demo shop visit lands in the warehouse once.

Chromium loads files/demo_shop from one loopback origin and posts to the local HTTP API (the
stand-in for API Gateway, with CORS) on another, which calls the real ingest handler writing to
moto S3; the ETL then loads into the real PostgreSQL. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import functools
import http.server
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clickstream import loader
from ingest.handler import handle_request
from tests.fixtures.browser import chromium_installed, headless_chromium
from tests.fixtures.processes import wait_until
from tools.local_platform.http_api import HttpApi

REPOSITORY = Path(__file__).resolve().parents[1]
ARTIFACTS = REPOSITORY / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not chromium_installed(),
    reason="Debian's chromium and chromium-driver are not installed (tools/bootstrap.sh does it)",
)


@pytest.fixture
def shop_site():
    """files/ served on a loopback origin of its own, as a shop's web server would."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(REPOSITORY / "files")
    )
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def ingest_api(aws, raw_bucket, shop_site):
    s3 = aws.client("s3")
    api = HttpApi(
        ("127.0.0.1", 0),
        lambda event, context: handle_request(event, s3_client=s3, bucket=raw_bucket),
        allowed_origins=[shop_site],
    )
    api.start_in_background()
    yield api
    api.shutdown()


@pytest.fixture
def browser(tmp_path):
    driver = headless_chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


def events_in_bucket(aws, bucket, session_id: str | None = None) -> int:
    """The events stored in the bucket; with ``session_id``, only that session's (a page of the
    previous test can still beacon its queue while its browser quits, into the next test's
    bucket of the same name)."""
    s3 = aws.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    lines = [
        line
        for key in keys
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    ]
    return sum(1 for line in lines if session_id is None or session_id.encode() in line)


def screenshot(browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"tracker-{name}.png"))


def test_a_shop_visit_lands_in_the_warehouse_once_in_order(
    browser, shop_site, ingest_api, aws, raw_bucket, warehouse
):
    browser.get(f"{shop_site}/demo_shop/index.html?endpoint={ingest_api.url}")
    for element in (
        "nav-laptops",
        "view-lap-001",
        "add-to-cart",
        "nav-cart",
        "checkout",
        "place-order",
    ):
        browser.find_element("id", element).click()
    screenshot(browser, "after-order")
    browser.execute_script("return window.shopTracker.flush()")
    expected = [
        "page_view", "home_view", "page_view", "category_view", "page_view", "product_view",
        "add_to_cart_click", "page_view", "checkout_start", "checkout_complete",
    ]  # fmt: skip
    wait_until(
        lambda: events_in_bucket(aws, raw_bucket) >= len(expected), "the visit's events in S3"
    )

    connection = warehouse.etl_connection()
    try:
        report = loader.run_scheduled(
            connection, aws.client("s3"), raw_bucket, now=datetime.now(UTC) + timedelta(minutes=1)
        )
    finally:
        connection.close()

    assert (report.events_loaded, report.rejected_lines) == (len(expected), 0)
    rows = warehouse.query(
        "SELECT event_name, session_id, context_product_id, page_url FROM clickstream_events "
        "ORDER BY event_timestamp, received_at"
    )
    assert [row[0] for row in rows] == expected
    assert len({row[1] for row in rows}) == 1
    assert {row[2] for row in rows if row[0] in ("product_view", "add_to_cart_click")} == {
        "lap-001"
    }
    assert warehouse.query("SELECT converted, add_to_carts FROM sessions") == [(True, 1)]
    # Every clock is kept: the device's event and send times, and the receive time.
    clocks = warehouse.query(
        "SELECT client_timestamp, client_sent_at, received_at FROM clickstream_events"
    )
    assert all(None not in row and row[0] <= row[1] for row in clocks), clocks


def test_events_queued_when_the_page_is_left_arrive_by_beacon(
    browser, shop_site, ingest_api, aws, raw_bucket
):
    browser.get(f"{shop_site}/demo_shop/index.html?endpoint={ingest_api.url}")
    browser.find_element("id", "view-mou-001").click()  # queued: below the batch size
    session_id = browser.execute_script("return window.shopTracker.sessionId()")
    assert events_in_bucket(aws, raw_bucket, session_id) == 0
    browser.get("about:blank")  # pagehide → navigator.sendBeacon
    wait_until(
        lambda: events_in_bucket(aws, raw_bucket, session_id) == 4, "the beaconed events in S3"
    )


def test_a_failed_send_is_retried_and_nothing_is_lost(
    browser, shop_site, ingest_api, aws, raw_bucket
):
    # The ingest's bucket is away: every POST gets 503, and the tracker keeps the batch.
    s3 = aws.client("s3")
    saved = [o["Key"] for o in s3.list_objects_v2(Bucket=raw_bucket).get("Contents", [])]
    assert saved == []
    s3.delete_bucket(Bucket=raw_bucket)
    browser.get(f"{shop_site}/demo_shop/index.html?endpoint={ingest_api.url}")
    browser.find_element("id", "view-lap-002").click()
    browser.execute_script("return window.shopTracker.flush()")
    wait_until(
        lambda: browser.execute_script("return window.shopTracker.failures") >= 1,
        "a failed send",
    )
    assert browser.execute_script("return window.shopTracker.queue.length") == 4

    s3.create_bucket(
        Bucket=raw_bucket, CreateBucketConfiguration={"LocationConstraint": "ap-southeast-1"}
    )
    browser.execute_script("window.shopTracker.retryAt = 0; return window.shopTracker.flush()")
    wait_until(lambda: events_in_bucket(aws, raw_bucket) == 4, "the retried events in S3")
    assert browser.execute_script("return window.shopTracker.queue.length") == 0

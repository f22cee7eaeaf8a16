"""The whole platform on one machine, end to end, through the README's own commands.

`make up` (moto for AWS, a systemd-nspawn DWH instance, site.yml -i inventories/local, the local
Lambda runtime); a visit to the demo shop in headless Chromium and a known synthetic batch over
HTTP; the ETL invoked through the Lambda Invoke API; the warehouse holds exactly those events,
with their sessions and rollups; the dashboard, through the port forward, shows the same numbers;
`make up` again changes nothing; `make down` leaves no process, container or listener behind.

The tests run in file order on one platform (module scope). Wall times are printed (pytest -s)
and written with the logs and screenshots to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg2
import pytest

from tests.fixtures.browser import chromium_installed, headless_chromium
from tests.fixtures.processes import port_answers, processes_whose_command_has, wait_until
from tools.local_platform import cli
from tools.molecule_nspawn import MACHINES_DIRECTORY, container_command, find_instance
from tools.synthetic_shop import live_events

REPOSITORY = Path(__file__).resolve().parents[2]
ARTIFACTS = REPOSITORY / "test-artifacts"
SHOP_VISIT = [
    "page_view", "home_view", "page_view", "category_view", "page_view", "product_view",
    "add_to_cart_click", "page_view", "checkout_start", "checkout_complete",
]  # fmt: skip
SYNTHETIC_SEED, SYNTHETIC_SESSIONS = 5, 25
# The body of issue 12's curl: accepted, then it failed every ETL run ("unquoted carriage return").
LONE_CARRIAGE_RETURN_EVENT = {
    "eventName": "page_view",
    "pageUrl": "https://shop.example.vn/a\rb",
    "clientId": "c1",
    "sessionId": "e2e-carriage-return",
    "isFirstVisit": True,
}
REPORTING_TIME_ZONE = ZoneInfo("Asia/Ho_Chi_Minh")  # dwh_schema_reporting_time_zone
FUNNEL_STEPS = ("product_view", "add_to_cart_click", "checkout_start", "checkout_complete")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
MAKE_TIMEOUT_SECONDS = 40 * 60
MAKE = shutil.which("make") or "/usr/bin/make"
# The DWH host's inventory name: its Name tag (compute_dwh_name), found by the aws_ec2 inventory.
DWH_HOST = "clickstream-local-dwh"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="systemd-nspawn needs root"),
    pytest.mark.skipif(
        not (chromium_installed() and shutil.which("systemd-nspawn")),
        reason="Chromium and systemd-nspawn come with tools/bootstrap.sh",
    ),
]


def make(target: str, log_name: str, *variables: str) -> tuple[subprocess.CompletedProcess, float]:
    """``make TARGET [VARIABLE=VALUE ...]`` in the checkout, its output kept in test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    result = subprocess.run(
        [MAKE, target, *variables],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=MAKE_TIMEOUT_SECONDS,
        check=False,
    )
    seconds = time.monotonic() - started
    (ARTIFACTS / f"local-platform-{log_name}.log").write_text(result.stdout + result.stderr)
    print(f"\nmake {target} ({log_name}): exit {result.returncode} in {seconds:.0f} s")
    return result, seconds


def listening(settings: cli.Settings) -> list[str]:
    """Which of the platform's addresses accept connections."""
    return [f"{host}:{port}" for host, port in settings.listeners() if port_answers(port, host)]


def platform_processes(settings: cli.Settings) -> list[str]:
    return processes_whose_command_has(
        str(settings.state_dir), *(f"--machine={machine}" for machine in machines(settings))
    )


def machines(settings: cli.Settings) -> tuple[str, str]:
    """The platform's systemd-nspawn machines: the DWH instance and the package mirror's builder."""
    return settings.dwh_machine, settings.mirror_builder_machine


def leftover_instances(settings: cli.Settings) -> list[str]:
    """The machines whose directory (root file system, console log) is on disk."""
    return [machine for machine in machines(settings) if (MACHINES_DIRECTORY / machine).exists()]


def in_the_instance(settings: cli.Settings, *argv: str) -> subprocess.CompletedProcess:
    """A command inside the DWH instance, as the nspawn connection runs Ansible's."""
    found = find_instance(settings.dwh_machine)
    leader = found[1] if found else None
    assert leader is not None, f"{settings.dwh_machine} is not running"
    return subprocess.run(
        container_command(leader, *argv), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def settings() -> cli.Settings:
    return cli.read_settings()


@pytest.fixture(scope="module")
def platform(settings):
    """`make up` from nothing; `make down` at the end whatever happened."""
    already = listening(settings) + platform_processes(settings)
    if already:
        # Somebody's platform (or another program) is live: the test does not tear it down.
        pytest.fail(
            "a local platform is already up on this machine (or something holds its ports: "
            f"{already}); run `make down` first"
        )
    if settings.state_dir.exists() or leftover_instances(settings):
        # Files of a platform whose processes were killed (a machine stopped under `make up`):
        # `make down` clears them, so that `make up` below starts from nothing.
        result, _ = make("down", "down-leftovers")
        assert result.returncode == 0, result.stdout + result.stderr
    result, seconds = make("up", "up-first")
    try:
        assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
        yield {"first_up": result, "first_up_seconds": seconds}
    finally:
        make("down", "down-cleanup")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"), "1400,1000")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def warehouse(settings, platform):
    """The ETL login's connection to the warehouse in the instance (its password from SSM)."""
    # The operator's key: the emulator enforces IAM (tools/local_platform/credentials.py).
    ssm = settings.aws_client("ssm")
    password = ssm.get_parameter(Name=settings.etl_password_parameter, WithDecryption=True)
    connection = psycopg2.connect(
        host=settings.warehouse_host,
        port=settings.warehouse_port,
        dbname=settings.warehouse_database,
        user=settings.warehouse_etl_user,
        password=password["Parameter"]["Value"],
    )
    connection.autocommit = True
    yield connection
    connection.close()


def query(connection, sql: str, parameters=()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        return cursor.fetchall()


def run_etl() -> dict:
    result = subprocess.run(
        [str(cli.BIN / "python"), "-m", "tools.local_platform", "etl"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def screenshot(browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"local-platform-{name}.png"))


# --- the tests, in order ----------------------------------------------------------------------


def test_make_up_brings_every_part_up_and_says_where(platform, settings):
    output = platform["first_up"].stdout
    for where in (
        settings.ingest_url,
        settings.shop_url,
        settings.dashboard_url,
        settings.warehouse_url,
        settings.endpoint_url,
    ):
        assert where in output
    assert "make traffic" in output
    assert "make etl" in output
    assert listening(settings) == [f"{host}:{port}" for host, port in settings.listeners()]
    # The stages ran on the emulated account and the instance, and nothing failed.
    # The DWH host was found in the emulated account by its tags (the aws_ec2 inventory), after
    # the compute stage made it; the package mirror's builder came and went.
    recap = {host: int(failed) for host, _, _, failed in RECAP.findall(output)}
    assert {DWH_HOST, "localhost"} <= recap.keys()
    assert set(recap.values()) == {0}, recap


def test_the_warehouse_instance_has_no_route_and_installs_only_from_the_mirror(platform, settings):
    # As the EC2 instance in its private subnet without NAT: no interface but loopback, no route
    # (checked, never tried: the network rule forbids sending anywhere to prove it).
    links = in_the_instance(settings, "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"]
    for family in ("-4", "-6"):
        routes = in_the_instance(settings, "ip", family, "route", "show", "table", "all")
        assert routes.returncode == 0, routes.stderr
        # Every route of every table leads to the loopback device: nothing leaves the instance.
        assert [
            route for route in routes.stdout.splitlines() if " dev lo " not in f"{route} "
        ] == []
    # apt knows one source, the signed snapshot in the emulated S3, reached through the link to
    # the emulator on the instance's own loopback.
    targets = in_the_instance(settings, "apt-get", "indextargets", "--format", "$(URI)")
    assert targets.returncode == 0, targets.stderr
    uris = set(targets.stdout.split())
    assert uris
    assert {
        uri for uri in uris if not uri.startswith(f"http://127.0.0.1:{settings.moto_port}/")
    } == set()
    # A package the roles do not need is not in the mirror, and there is nowhere else to get it.
    install = in_the_instance(
        settings, "apt-get", "install", "--yes", "--no-install-recommends", "cowsay"
    )
    assert install.returncode != 0
    assert "Unable to locate package cowsay" in install.stderr, install.stdout + install.stderr


def test_shop_clicks_and_synthetic_traffic_land_in_the_warehouse_exactly_once(
    platform, settings, browser, warehouse
):
    # A visit to the demo shop: the tracker posts to the local HTTP API (CORS) by itself.
    browser.get(settings.shop_url)
    for element in ("nav-laptops", "view-lap-001", "add-to-cart", "nav-cart", "checkout"):
        browser.find_element("id", element).click()
    browser.find_element("id", "place-order").click()
    browser.execute_script("return window.shopTracker.flush()")
    wait_until(
        lambda: browser.execute_script(
            "return window.shopTracker.queue.length === 0 && !window.shopTracker.inFlight"
        ),
        "the tracker's queue sent",
    )
    screenshot(browser, "shop-after-order")
    assert browser.execute_script("return window.shopTracker.failures") == 0

    # The request that once stopped all loading (issue 12): a lone carriage return in a URL.
    request = urllib.request.Request(  # noqa: S310 - the local platform's loopback URL
        settings.ingest_url,
        data=json.dumps([LONE_CARRIAGE_RETURN_EVENT]).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 202

    # A known synthetic batch, through the traffic command (over HTTP to the same URL).
    traffic = subprocess.run(
        [str(cli.BIN / "python"), "-m", "tools.local_platform", "traffic",
         "--sessions", str(SYNTHETIC_SESSIONS), "--seed", str(SYNTHETIC_SEED), "--rate", "2000"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert traffic.returncode == 0, traffic.stderr[-3000:]
    synthetic = live_events(SYNTHETIC_SEED, SYNTHETIC_SESSIONS, datetime.now(UTC))
    assert json.loads(traffic.stdout.splitlines()[-1])["events"] == len(synthetic)

    report = run_etl()
    assert report["status"] == "succeeded", report
    expected_total = len(SHOP_VISIT) + 1 + len(synthetic)
    assert (report["events_loaded"], report["rejected_lines"]) == (expected_total, 0), report
    assert report["duplicates_skipped"] == 0
    # A second run finds nothing new: no event is loaded twice.
    again = run_etl()
    assert (again["status"], again["events_loaded"]) == ("succeeded", 0), again

    rows = query(warehouse, "SELECT event_id, event_name, session_id FROM clickstream_events")
    assert len(rows) == expected_total
    by_id = {event_id: (name, session) for event_id, name, session in rows}
    assert len(by_id) == expected_total  # no duplicates
    sent = {event["eventId"]: (event["eventName"], event["sessionId"]) for event in synthetic}
    assert {event_id: by_id[event_id] for event_id in sent if event_id in by_id} == sent
    visit = sorted(
        (row for row in rows if row[0] not in sent), key=lambda row: SHOP_VISIT.index(row[1])
    )
    carriage_return = [row for row in rows if row[2] == LONE_CARRIAGE_RETURN_EVENT["sessionId"]]
    stored_url = "SELECT page_url FROM clickstream_events WHERE event_id = %s"
    assert query(warehouse, stored_url, (carriage_return[0][0],)) == [
        (LONE_CARRIAGE_RETURN_EVENT["pageUrl"],)
    ]
    visit = [row for row in visit if row not in carriage_return]
    assert Counter(name for _, name, _ in visit) == Counter(SHOP_VISIT)
    assert len({session for _, _, session in visit}) == 1
    visit_session = visit[0][2]

    # Sessions: one per session id, with the counts of its events.
    expected_sessions = Counter(event["sessionId"] for event in synthetic)
    expected_sessions[visit_session] = len(SHOP_VISIT)
    expected_sessions[LONE_CARRIAGE_RETURN_EVENT["sessionId"]] = 1
    sessions = dict(query(warehouse, "SELECT session_id, events FROM sessions"))
    assert sessions == dict(expected_sessions)
    assert query(
        warehouse, "SELECT converted, add_to_carts FROM sessions WHERE session_id = %s",
        (visit_session,),
    ) == [(True, 1)]  # fmt: skip

    # Rollups: hourly activity and the daily funnel, from what was sent.
    assert query(warehouse, "SELECT sum(events)::int FROM rollup_activity_hourly") == [
        (expected_total,)
    ]
    funnel_days: dict = {}
    stored = query(
        warehouse,
        "SELECT event_timestamp, event_name, session_id FROM clickstream_events "
        "WHERE session_id IS NOT NULL",
    )
    for timestamp, name, session in stored:
        day = timestamp.astimezone(REPORTING_TIME_ZONE).date()
        steps = funnel_days.setdefault(day, {}).setdefault(session, set())
        steps.add(name)
    expected_funnel = sorted(
        (
            day,
            len(by_session),
            *(sum(step in s for s in by_session.values()) for step in FUNNEL_STEPS),
        )
        for day, by_session in funnel_days.items()
    )
    assert (
        query(
            warehouse,
            "SELECT day, sessions, product_view_sessions, add_to_cart_sessions, "
            "checkout_start_sessions, checkout_complete_sessions FROM rollup_funnel_daily "
            "ORDER BY day",
        )
        == expected_funnel
    )


def test_the_dashboard_through_the_port_forward_shows_the_warehouse_numbers(
    platform, settings, browser, warehouse
):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(settings.dashboard_url)
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script(
            "const e = document.getElementById('event_count'); return e && e.innerText.trim();"
        )
    )
    [(events, sessions)] = query(
        warehouse, "SELECT (SELECT count(*) FROM clickstream_events), count(*) FROM sessions"
    )
    synthetic = live_events(SYNTHETIC_SEED, SYNTHETIC_SESSIONS, datetime.now(UTC))
    assert events == len(SHOP_VISIT) + 1 + len(synthetic)  # 1: the lone carriage return
    assert browser.find_element("id", "event_count").text == f"{events:,}"
    overview = ""

    def overview_drawn() -> bool:
        nonlocal overview
        overview = browser.execute_script(
            "const p = document.querySelector('.tab-content > .tab-pane.active');"
            "return p && !document.documentElement.classList.contains('shiny-busy')"
            " && p.querySelector('img') ? p.innerText : '';"
        )
        return "Events" in overview

    wait_until(overview_drawn, "the overview page drawn", timeout_seconds=60)
    screenshot(browser, "dashboard-overview")
    assert f"{events:,}\nEvents" in overview
    assert f"{sessions:,}\nSessions" in overview


def test_a_second_make_up_changes_nothing(platform, settings):
    # -v: a task that changes shows what it changed in the kept log.
    result, _ = make("up", "up-second", "ARGS=-v")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    recap = {host: (int(changed), int(failed)) for host, changed, _, failed in RECAP.findall(
        result.stdout)}  # fmt: skip
    # The mirror already holds the roles' packages: no builder, and apt opened no connection.
    assert recap == {DWH_HOST: (0, 0), "localhost": (0, 0)}, result.stdout[-5000:]
    # The runtime came back (restarted by up) and still serves the ingest.
    assert port_answers(settings.ingest_port)


def test_make_down_leaves_no_process_container_or_listener(platform, settings):
    result, _ = make("down", "down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert platform_processes(settings) == []
    assert listening(settings) == []
    assert not settings.state_dir.exists()
    assert leftover_instances(settings) == []

"""The dashboards in real headless Chromium, served by a local R process, on real data.

The app (files/dashboard) runs under Rscript on a free loopback port, its settings file (0600,
as the r_shiny role writes it) pointing at the test warehouse as the read-only dashboard login;
the warehouse holds the synthetic shop loaded through ingest and ETL (conftest.py). Every page
must show its plots and non-empty tables; screenshots go to test-artifacts/dashboard-<page>.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.dashboard import named_queries
from tests.fixtures.browser import chromium_installed, headless_chromium
from tests.fixtures.processes import free_loopback_port, port_answers, wait_until
from tests.fixtures.warehouse import READER_USER

REPOSITORY = Path(__file__).resolve().parents[2]
APP = REPOSITORY / "files" / "dashboard"
ARTIFACTS = REPOSITORY / "test-artifacts"
RSCRIPT = shutil.which("Rscript")
PAGES = {
    "overview": "Overview",
    "funnel": "Funnel",
    "products": "Products",
    "activity": "Activity",
    "journeys": "Journeys",
    "quality": "Data quality",
}

pytestmark = [
    pytest.mark.skipif(
        RSCRIPT is None,
        reason="Rscript is missing: install r-base-core and the r-cran-* packages of roles/r_shiny",
    ),
    pytest.mark.skipif(
        not chromium_installed(),
        reason="Debian's chromium and chromium-driver are missing (tools/bootstrap.sh)",
    ),
]


def serve_app(directory: Path, settings: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    """Rscript serving the app with ``settings`` in a 0600 file, as the role deploys it."""
    directory.mkdir(parents=True, exist_ok=True)
    settings_file = directory / "dashboard.env"
    settings_file.touch(mode=0o600)
    settings_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    port = free_loopback_port()
    log = directory / "shiny.log"
    command = f"shiny::runApp('{APP}', host = '127.0.0.1', port = {port}, launch.browser = FALSE)"
    environment = {
        **os.environ,
        "CLICKSTREAM_DASHBOARD_SETTINGS": str(settings_file),
        "HOME": str(directory),
        "XDG_CACHE_HOME": str(directory / "cache"),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [RSCRIPT, "-e", command], stdout=output, stderr=subprocess.STDOUT, env=environment
        )
    try:
        wait_until(lambda: port_answers(port) or process.poll() is not None, "the Shiny app", 60)
    except TimeoutError:
        process.kill()
        raise
    if process.poll() is not None:
        raise RuntimeError(f"the Shiny app exited:\n{log.read_text()}")
    return process, f"http://127.0.0.1:{port}", log


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def dashboard(shop_data, tmp_path_factory):
    warehouse = shop_data.warehouse
    process, url, log = serve_app(
        tmp_path_factory.mktemp("dashboard"),
        {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(warehouse.cluster.port),
            "PGDATABASE": warehouse.database,
            "PGUSER": READER_USER,
            "PGPASSWORD": warehouse.reader_password,
        },
    )
    yield url
    stop(process)
    print(log.read_text())


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"), "1400,1000")
    yield driver
    driver.quit()


# Whether the active page has finished drawing: every plot an image, every table rows, nothing
# still recalculating; and what it shows (or why not).
PAGE_STATE = """
const pane = document.querySelector('.tab-content > .tab-pane.active');
const busy = document.documentElement.classList.contains('shiny-busy')
    || pane.querySelector('.recalculating') !== null;
const plots = [...pane.querySelectorAll('.shiny-plot-output')];
const tables = [...pane.querySelectorAll('.datatables')];
const errors = [...pane.querySelectorAll('.shiny-output-error')].map(e => e.innerText);
return {
  busy: busy,
  plots: plots.map(p => { const i = p.querySelector('img'); return i ? i.naturalWidth : 0; }),
  tables: tables.map(t => t.querySelectorAll('tbody tr:not(:has(td.dataTables_empty))').length),
  errors: errors,
  text: pane.innerText,
};
"""


def wait_for_page(browser, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = browser.execute_script(PAGE_STATE)
        drawn = state["plots"] and all(state["plots"]) and state["tables"] and all(state["tables"])
        if not state["busy"] and (drawn or state["errors"]):
            time.sleep(0.3)  # let the last outputs settle before reading them
            return browser.execute_script(PAGE_STATE)
        time.sleep(0.2)
    return state


def open_page(browser, title: str) -> dict:
    from selenium.webdriver.common.by import By

    browser.find_element(By.LINK_TEXT, title).click()
    return wait_for_page(browser)


def screenshot(browser, name: str) -> None:
    """The whole page, beyond the window's height (Chromium's DevTools protocol)."""
    import base64

    ARTIFACTS.mkdir(exist_ok=True)
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    (ARTIFACTS / f"dashboard-{name}.png").write_bytes(base64.b64decode(shot["data"]))


def load(browser, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script(
            "const e = document.getElementById('event_count'); return e && e.innerText.trim();"
        )
    )


def test_every_page_shows_its_plots_and_tables(dashboard, browser, shop_data):
    load(browser, dashboard)
    total = sum(len(session) for session in shop_data.sessions)
    assert browser.find_element("id", "event_count").text == f"{total:,}"
    assert browser.title == "Clickstream analytics"
    for name, title in PAGES.items():
        state = open_page(browser, title)
        assert state["errors"] == [], (name, state["errors"])
        assert state["plots"], name
        assert all(state["plots"]), (name, state)
        assert state["tables"], name
        assert all(state["tables"]), (name, state)
        screenshot(browser, name)


def test_the_overview_shows_the_numbers_of_the_default_range(dashboard, browser, shop_data):
    load(browser, dashboard)
    state = open_page(browser, "Overview")
    dates = browser.execute_script(
        "return [...document.querySelectorAll('#dates input')].map(i => i.value);"
    )
    queries = named_queries.load()
    connection = shop_data.warehouse.reader_connection()
    try:
        [bounds] = named_queries.run(connection, queries["data_bounds"], {})
        [current, _] = named_queries.run(
            connection,
            queries["overview_kpis"],
            {"date_from": dates[0], "date_to": dates[1], "category": "", "brand": ""},
        )
    finally:
        connection.close()
    last_day = bounds["last_day"]
    assert dates == [str(last_day.fromordinal(last_day.toordinal() - 6)), str(last_day)]
    assert f"{current['events']:,}\nEvents" in state["text"]
    assert f"{current['sessions']:,}\nSessions" in state["text"]


def test_a_table_downloads_as_csv(dashboard, browser):
    load(browser, dashboard)
    state = open_page(browser, "Overview")
    link = browser.find_element("id", "overview-daily_csv").get_attribute("href")
    assert link.startswith(dashboard)  # the app's own loopback origin
    with urllib.request.urlopen(link, timeout=30) as response:  # noqa: S310
        lines = response.read().decode().splitlines()
    assert lines[0] == '"day","events","sessions"'
    assert len(lines) == 1 + state["tables"][0]


def choose(browser, input_id: str, value: str) -> None:
    browser.execute_script(
        "document.getElementById(arguments[0]).selectize.setValue(arguments[1]);", input_id, value
    )


def wait_for_change(browser, before: str) -> dict:
    """The active page once what it shows differs from ``before`` (or 20 s have passed)."""
    state = wait_for_page(browser)
    deadline = time.monotonic() + 20
    while state["text"] == before and time.monotonic() < deadline:
        time.sleep(0.3)
        state = wait_for_page(browser)
    return state


FILTERED_PAGES = ("overview", "funnel", "products", "activity")


def test_the_category_filter_applies_to_every_page_that_can_take_it(dashboard, browser):
    load(browser, dashboard)
    before = {page: open_page(browser, PAGES[page])["text"] for page in PAGES}
    choose(browser, "category", "monitor")
    for page in FILTERED_PAGES:
        open_page(browser, PAGES[page])
        state = wait_for_change(browser, before[page])
        assert state["text"] != before[page], page
        assert state["errors"] == [], page
        assert "laptop" not in state["text"], page
        screenshot(browser, f"{page}-monitor")
    assert "category monitor" in open_page(browser, "Overview")["text"]
    for page in set(PAGES) - set(FILTERED_PAGES):
        state = open_page(browser, PAGES[page])
        assert "filters do not apply to this page" in state["text"], page


def test_the_funnel_counts_users_once_over_the_range(dashboard, browser, shop_data):
    from selenium.webdriver.common.by import By

    load(browser, dashboard)
    before = open_page(browser, "Funnel")["text"]
    browser.find_element(By.CSS_SELECTOR, "input[name='funnel-unit'][value='client']").click()
    state = wait_for_change(browser, before)
    assert state["errors"] == []
    dates = browser.execute_script(
        "return [...document.querySelectorAll('#dates input')].map(i => i.value);"
    )
    connection = shop_data.warehouse.reader_connection()
    try:
        [total] = named_queries.run(
            connection,
            named_queries.load()["funnel_visitors_total"],
            {"date_from": dates[0], "date_to": dates[1], "category": "", "brand": "",
             "visitor_kind": "client"},
        )  # fmt: skip
    finally:
        connection.close()
    steps = browser.find_element(By.ID, "funnel-steps").text
    assert "users" in steps.splitlines()[0]
    assert f"Product view {total['product_view_users']:,} 100.0%" in steps
    assert f"Purchase {total['purchase_users']:,}" in steps
    screenshot(browser, "funnel-users")


def test_an_unreachable_warehouse_is_said_clearly(browser, tmp_path):
    process, url, _ = serve_app(
        tmp_path,
        {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(free_loopback_port()),  # nothing listens there
            "PGDATABASE": "clickstream_dw",
            "PGUSER": READER_USER,
            "PGPASSWORD": "unused",
        },
    )
    try:
        load(browser, url)
        status = browser.find_element("id", "warehouse_status").text
        assert status.startswith("Cannot reach the warehouse.")
        assert browser.find_element("id", "event_count").text == "unavailable"
        state = wait_for_page(browser)
        assert state["errors"]
        assert all(e.startswith("Cannot reach the warehouse") for e in state["errors"]), state

        screenshot(browser, "unreachable")
    finally:
        stop(process)

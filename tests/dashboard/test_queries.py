"""Each dashboard panel's SQL, as the app binds it, against an independent count of the events.

The warehouse holds a seeded synthetic shop loaded through the real ingest and ETL (conftest.py);
the expected numbers are computed here in plain Python from the generated events themselves.
"""

from __future__ import annotations

import itertools
import zoneinfo
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from tests.dashboard import named_queries

QUERIES = named_queries.load()
RANGE = {"date_from": "2025-12-08", "date_to": "2025-12-14"}
FILTERS = [("", ""), ("laptop", ""), ("", "Logitech"), ("monitor", "Dell")]
PRODUCT_EVENTS = ("product_view", "add_to_cart_click")
VISITOR_KINDS = {"client": "clientId", "user": "userId"}


@pytest.fixture(scope="module")
def reader(shop_data):
    connection = shop_data.warehouse.reader_connection()
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def shop(shop_data):
    return Expected(shop_data.sessions, zoneinfo.ZoneInfo(shop_data.time_zone))


class Expected:
    """The panels' numbers computed straight from the generated sessions."""

    def __init__(self, sessions: list[list[dict]], zone: zoneinfo.ZoneInfo) -> None:
        self.sessions = sessions
        self.zone = zone

    def local(self, event: dict) -> datetime:
        return datetime.fromisoformat(event["eventTimestamp"]).astimezone(self.zone)

    def day(self, event: dict) -> date:
        return self.local(event).date()

    def events_in(self, first: date, last: date) -> list[dict]:
        return [e for s in self.sessions for e in s if first <= self.day(e) <= last]

    def sessions_in(self, first: date, last: date) -> list[list[dict]]:
        return [s for s in self.sessions if first <= self.start_day(s) <= last]

    def start_day(self, session: list[dict]) -> date:
        return min(self.local(e) for e in session).date()

    @staticmethod
    def in_scope(event: dict, category: str, brand: str) -> bool:
        """A product view or add-to-cart of the category and brand ('' for any)."""
        product = event["product"]
        return (
            event["eventName"] in PRODUCT_EVENTS
            and bool(product)
            and category in ("", product["category"])
            and brand in ("", product["brand"])
        )

    def scope_events(self, first: date, last: date, category: str, brand: str) -> list[dict]:
        """Every event for no filter; with one, the product views and add-to-carts of it."""
        events = self.events_in(first, last)
        if not category and not brand:
            return events
        return [e for e in events if self.in_scope(e, category, brand)]

    def scope_sessions(self, first: date, last: date, category: str, brand: str) -> list:
        """Every session started in the range, or with a filter those with an event of it."""
        return [
            s for s in self.sessions_in(first, last)
            if (not category and not brand) or any(self.in_scope(e, category, brand) for e in s)
        ]  # fmt: skip

    def steps(self, session: list[dict], category: str, brand: str) -> list[bool]:
        """Viewed a product of the scope, also carted one, also checked out, also purchased."""
        chosen = [e for e in session if self.in_scope(e, category, brand)]
        names = {e["eventName"] for e in session}
        reached = [
            any(e["eventName"] == "product_view" for e in chosen),
            any(e["eventName"] == "add_to_cart_click" for e in chosen),
            "checkout_start" in names,
            "checkout_complete" in names,
        ]
        return [all(reached[: index + 1]) for index in range(4)]

    @staticmethod
    def visitor(session: list[dict], kind: str):
        """The session's client id, or its logged-in user's id (None when it has none)."""
        ids = {e[VISITOR_KINDS[kind]] for e in session} - {None}
        return max(ids) if ids else None


def days(parameters: dict) -> tuple[date, date]:
    return date.fromisoformat(parameters["date_from"]), date.fromisoformat(parameters["date_to"])


def test_every_query_of_the_file_is_tested():
    tested = {
        "data_bounds", "filter_options", "warehouse_events", "overview_kpis", "overview_daily",
        "funnel_daily", "funnel_visitors_daily", "funnel_visitors_total", "products_top",
        "products_by_category_brand", "activity_heatmap", "activity_busiest_hours",
        "journey_paths", "journey_pages", "journey_next_pages", "journey_entry_pages",
        "journey_exit_pages", "quality_last_run", "quality_recent_runs",
        "quality_rejects_by_reason", "quality_freshness",
    }  # fmt: skip
    assert set(QUERIES) == tested


def test_data_bounds_and_warehouse_events(reader, shop):
    events = [e for s in shop.sessions for e in s]
    [bounds] = named_queries.run(reader, QUERIES["data_bounds"], {})
    assert bounds["first_day"] == min(shop.day(e) for e in events)
    assert bounds["last_day"] == max(shop.day(e) for e in events)
    assert bounds["time_zone"] == "Asia/Ho_Chi_Minh"
    [total] = named_queries.run(reader, QUERIES["warehouse_events"], {})
    assert total["events"] == len(events)


def test_filter_options(reader, shop):
    expected = {
        (e["product"]["category"], e["product"]["brand"])
        for s in shop.sessions
        for e in s
        if e["eventName"] in ("product_view", "add_to_cart_click") and e["product"]
    }
    rows = named_queries.run(reader, QUERIES["filter_options"], {})
    assert [(r["category"], r["brand"]) for r in rows] == sorted(expected)


@pytest.mark.parametrize(("category", "brand"), FILTERS)
@pytest.mark.parametrize(
    "dates", [RANGE, {"date_from": "2025-12-01", "date_to": "2025-12-03"}], ids=["week", "start"]
)
def test_overview_kpis_of_the_range_and_the_previous_one(reader, shop, dates, category, brand):
    first, last = days(dates)
    length = (last - first).days + 1
    parameters = {**dates, "category": category, "brand": brand}
    rows = named_queries.run(reader, QUERIES["overview_kpis"], parameters)
    assert [r["period"] for r in rows] == ["current", "previous"]
    for row, (p_first, p_last) in zip(
        rows,
        [(first, last), (first - timedelta(days=length), first - timedelta(days=1))],
        strict=True,
    ):
        sessions = shop.scope_sessions(p_first, p_last, category, brand)
        converted = sum(any(e["eventName"] == "checkout_complete" for e in s) for s in sessions)
        assert row["events"] == len(shop.scope_events(p_first, p_last, category, brand))
        assert row["sessions"] == len(sessions)
        assert row["clients"] == len({shop.visitor(s, "client") for s in sessions})
        assert row["logged_in_users"] == len({shop.visitor(s, "user") for s in sessions} - {None})
        assert row["converted_sessions"] == converted
        if sessions:
            assert row["conversion_rate"] == pytest.approx(converted / len(sessions))
    assert rows[0]["sessions"] > 0


def test_the_test_data_has_users_who_come_back_on_other_days(shop):
    """Else distinct users over a range could not be told from a sum of days."""
    first, last = days(RANGE)
    per_day = defaultdict(set)
    for session in shop.sessions_in(first, last):
        per_day[shop.start_day(session)].add(shop.visitor(session, "client"))
    assert sum(map(len, per_day.values())) > len(set().union(*per_day.values()))


@pytest.mark.parametrize(("category", "brand"), FILTERS)
def test_overview_daily(reader, shop, category, brand):
    first, last = days(RANGE)
    events = Counter(shop.day(e) for e in shop.scope_events(first, last, category, brand))
    sessions = Counter(shop.start_day(s) for s in shop.scope_sessions(first, last, category, brand))
    rows = named_queries.run(
        reader, QUERIES["overview_daily"], {**RANGE, "category": category, "brand": brand}
    )
    assert {r["day"]: (r["events"], r["sessions"]) for r in rows} == {
        day: (events[day], sessions[day]) for day in events | sessions
    }


@pytest.mark.parametrize(("category", "brand"), FILTERS)
def test_funnel_daily(reader, shop, category, brand):
    first, last = days(RANGE)
    expected = defaultdict(lambda: [0, 0, 0, 0])
    for session in shop.sessions_in(first, last):
        counts = expected[shop.start_day(session)]
        for index, reached in enumerate(shop.steps(session, category, brand)):
            counts[index] += reached
    expected = {day: tuple(counts) for day, counts in expected.items() if counts[0]}
    rows = named_queries.run(
        reader, QUERIES["funnel_daily"], {**RANGE, "category": category, "brand": brand}
    )
    got = {
        r["day"]: (r["product_view_sessions"], r["add_to_cart_sessions"], r["checkout_sessions"],
                   r["purchase_sessions"])
        for r in rows if r["product_view_sessions"]
    }  # fmt: skip
    assert got == expected
    assert sum(counts[1] for counts in got.values()) > 0


@pytest.mark.parametrize("kind", VISITOR_KINDS)
@pytest.mark.parametrize(("category", "brand"), FILTERS)
def test_funnel_in_users_per_day_and_over_the_range(reader, shop, category, brand, kind):
    first, last = days(RANGE)
    per_day = defaultdict(lambda: [set(), set(), set(), set()])
    for session in shop.sessions_in(first, last):
        visitor = shop.visitor(session, kind)
        for index, reached in enumerate(shop.steps(session, category, brand)):
            if reached and visitor is not None:
                per_day[shop.start_day(session)][index].add(visitor)
    parameters = {**RANGE, "category": category, "brand": brand, "visitor_kind": kind}
    columns = ["product_view_users", "add_to_cart_users", "checkout_users", "purchase_users"]
    rows = named_queries.run(reader, QUERIES["funnel_visitors_daily"], parameters)
    assert {r["day"]: tuple(r[c] for c in columns) for r in rows} == {
        day: tuple(map(len, steps)) for day, steps in per_day.items() if steps[0]
    }
    [total] = named_queries.run(reader, QUERIES["funnel_visitors_total"], parameters)
    assert tuple(total[c] for c in columns) == tuple(
        len(set().union(*(steps[index] for steps in per_day.values()))) for index in range(4)
    )
    assert total["product_view_users"] > 0


def product_counts(shop: Expected, category: str, brand: str, key) -> dict:
    first, last = days(RANGE)
    views, carts, ids = Counter(), Counter(), defaultdict(set)
    for event in shop.events_in(first, last):
        product = event["product"]
        if event["eventName"] not in ("product_view", "add_to_cart_click") or not product:
            continue
        if category not in ("", product["category"]) or brand not in ("", product["brand"]):
            continue
        counter = views if event["eventName"] == "product_view" else carts
        counter[key(product)] += 1
        ids[key(product)].add(product["id"])
    return {k: (views[k], carts[k], ids[k]) for k in views | carts}


@pytest.mark.parametrize(("category", "brand"), FILTERS)
def test_products_top(reader, shop, category, brand):
    expected = product_counts(shop, category, brand, key=lambda p: p["id"])
    ranked = sorted(expected.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[:20]
    rows = named_queries.run(
        reader, QUERIES["products_top"], {**RANGE, "category": category, "brand": brand}
    )
    assert [(r["product_id"], r["views"], r["add_to_carts"]) for r in rows] == [
        (product_id, views, carts) for product_id, (views, carts, _) in ranked
    ]
    for row in rows:
        if row["views"]:
            assert row["view_to_cart"] == pytest.approx(row["add_to_carts"] / row["views"])


@pytest.mark.parametrize(("category", "brand"), FILTERS)
def test_products_by_category_brand(reader, shop, category, brand):
    expected = product_counts(shop, category, brand, key=lambda p: (p["category"], p["brand"]))
    parameters = {**RANGE, "category": category, "brand": brand}
    rows = named_queries.run(reader, QUERIES["products_by_category_brand"], parameters)
    assert {(r["category"], r["brand"]): (r["views"], r["add_to_carts"], r["products"])
            for r in rows} == {k: (v, c, len(i)) for k, (v, c, i) in expected.items()}  # fmt: skip
    assert [r["views"] for r in rows] == sorted((r["views"] for r in rows), reverse=True)


@pytest.mark.parametrize(("category", "brand"), FILTERS)
def test_activity_heatmap_and_busiest_hours(reader, shop, category, brand):
    first, last = days(RANGE)
    parameters = {**RANGE, "category": category, "brand": brand}
    events = shop.scope_events(first, last, category, brand)
    cells = Counter((shop.local(e).isoweekday(), shop.local(e).hour) for e in events)
    rows = named_queries.run(reader, QUERIES["activity_heatmap"], parameters)
    assert {(r["weekday"], r["hour"]): r["events"] for r in rows} == dict(cells)
    hours = Counter(shop.local(e).hour for e in events)
    busiest = sorted(hours.items(), key=lambda item: (-item[1], item[0]))[:5]
    rows = named_queries.run(reader, QUERIES["activity_busiest_hours"], parameters)
    assert [(r["hour"], r["events"]) for r in rows] == busiest
    assert rows[0]["share"] == pytest.approx(busiest[0][1] / len(events))


def transitions(shop: Expected) -> Counter:
    """(from page, to page) moves of the sessions started in the range, with entries and exits."""
    first, last = days(RANGE)
    moves = Counter()
    for session in shop.sessions_in(first, last):
        views = sorted(
            (e for e in session if e["eventName"] == "page_view"),
            key=lambda e: (datetime.fromisoformat(e["eventTimestamp"]), e["eventId"].lower()),
        )
        pages = ["(entry)", *(urlsplit(e["pageUrl"]).path or "/" for e in views), "(exit)"]
        if len(pages) > 2:
            moves.update(itertools.pairwise(pages))
    return moves


def test_journeys(reader, shop):
    moves = transitions(shop)
    from_pages = Counter()
    for (source, _), count in moves.items():
        if source != "(entry)":
            from_pages[source] += count
    rows = named_queries.run(reader, QUERIES["journey_pages"], RANGE)
    assert [(r["page"], r["moves"]) for r in rows] == sorted(
        from_pages.items(), key=lambda item: (-item[1], item[0])
    )[:100]

    def top(counter: Counter) -> list[tuple[str, int]]:
        return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:15]

    for page in ("/", rows[5]["page"]):
        after = Counter({target: n for (source, target), n in moves.items() if source == page})
        got = named_queries.run(reader, QUERIES["journey_next_pages"], {**RANGE, "page": page})
        assert [(r["next_page"], r["moves"]) for r in got] == top(after)
        assert got[0]["share"] == pytest.approx(got[0]["moves"] / sum(after.values()))
    entries = Counter({target: n for (source, target), n in moves.items() if source == "(entry)"})
    got = named_queries.run(reader, QUERIES["journey_entry_pages"], RANGE)
    assert [(r["page"], r["sessions"]) for r in got] == top(entries)
    exits = Counter({source: n for (source, target), n in moves.items() if target == "(exit)"})
    got = named_queries.run(reader, QUERIES["journey_exit_pages"], RANGE)
    assert [(r["page"], r["sessions"]) for r in got] == top(exits)


def journey_path(session: list[dict]) -> str:
    """The session's path as migration 0008 defines it, computed here from its events."""
    steps: list[str] = []
    in_order = sorted(
        session,
        key=lambda e: (datetime.fromisoformat(e["eventTimestamp"]), e["eventId"].lower()),
    )
    for event in in_order:
        name = event["eventName"]
        if name not in ("page_view", "click") and (not steps or steps[-1] != name):
            steps.append(name)
    if not steps:
        return "(page views only)"
    return " → ".join(steps[:8]) + (" → …" if len(steps) > 8 else "")


@pytest.mark.parametrize(
    ("event_names", "path"),
    [
        ([], "(page views only)"),
        (["page_view", "click", "page_view"], "(page views only)"),
        (
            ["page_view", "home_view", "page_view", "product_view", "page_view", "product_view",
             "add_to_cart_click"],
            "home_view → product_view → add_to_cart_click",
        ),
        (
            ["category_view", "product_view"] * 4 + ["add_to_cart_click"],
            " → ".join(["category_view", "product_view"] * 4) + " → …",
        ),
        (["category_view", "product_view"] * 4, " → ".join(["category_view", "product_view"] * 4)),
    ],
    ids=["no events", "only page views and clicks", "repeats kept once", "cut after 8", "8 steps"],
)  # fmt: skip
def test_the_journey_path_of_event_names(reader, event_names, path):
    with reader.cursor() as cursor:
        cursor.execute("SELECT journey_path(%s::text[])", (event_names,))
        assert cursor.fetchone()[0] == path


def test_journey_paths(reader, shop):
    sessions, converted = Counter(), Counter()
    for session in shop.sessions_in(*days(RANGE)):
        path = journey_path(session)
        sessions[path] += 1
        converted[path] += any(e["eventName"] == "checkout_complete" for e in session)
    expected = sorted(sessions.items(), key=lambda item: (-item[1], item[0]))[:20]
    rows = named_queries.run(reader, QUERIES["journey_paths"], RANGE)
    assert [(r["path"], r["sessions"]) for r in rows] == expected
    assert [r["converted_sessions"] for r in rows] == [converted[path] for path, _ in expected]
    total = sum(sessions.values())
    for row in rows:
        assert row["share"] == pytest.approx(row["sessions"] / total)
        assert row["conversion"] == pytest.approx(row["converted_sessions"] / row["sessions"])
    # The shop's data holds paths long enough to be cut (test_the_journey_path_of_event_names
    # has the other shapes).
    assert any(path.endswith(" → …") for path in sessions)


def test_data_quality(reader, shop):
    from tests.dashboard.conftest import BROKEN_LINES

    total = sum(len(s) for s in shop.sessions)
    [last_run] = named_queries.run(reader, QUERIES["quality_last_run"], {})
    assert (last_run["status"], last_run["events_loaded"]) == ("succeeded", total)
    assert last_run["rejected_lines"] == len(BROKEN_LINES)
    runs = named_queries.run(reader, QUERIES["quality_recent_runs"], {})
    assert [r["events_loaded"] for r in runs] == [total]
    rejects = named_queries.run(reader, QUERIES["quality_rejects_by_reason"], {})
    # Two lines are not JSON, one is JSON that breaks the contract.
    assert [(r["reason"], r["rejected_rows"]) for r in rejects] == [
        ("invalid JSON", 2),
        ("breaks the contract", 1),
    ]
    [freshness] = named_queries.run(reader, QUERIES["quality_freshness"], {})
    newest = max(datetime.fromisoformat(e["eventTimestamp"]) for s in shop.sessions for e in s)
    assert freshness["newest_event"] == newest
    assert freshness["hours_pending_refresh"] == 0
    assert freshness["lag_seconds"] > 0

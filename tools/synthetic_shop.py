"""A synthetic shop: realistic clickstream traffic for tests, benchmarks and the local platform.

Visitors arrive following a diurnal and weekly rhythm in the shop's time zone. Each session walks
the shop as the tracker reports it (shared/notes/sbw-event-format.md): home, category and product
pages, some add to cart, fewer check out, some log in. Events are what the browser sends, in the
tracker's camelCase shape with the eventId and eventTimestamp our own tracker adds. The same seed
gives the same traffic.

    # Load history through the real ingest handler into the raw bucket (AWS_ENDPOINT_URL honoured)
    python tools/synthetic_shop.py write-raw \\
        --bucket clickstream-prod-raw-123456789012-ap-southeast-1 --days 7 \\
        --sessions-per-day 2000 --start 2025-12-01

    # Send live traffic to an ingest URL at a chosen rate
    python tools/synthetic_shop.py send --url http://127.0.0.1:8080/clickstream --sessions 500 \\
        --rate 50
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

SHOP_TIME_ZONE = "Asia/Ho_Chi_Minh"
SHOP_URL = "https://shop.example.com"
EVENTS_PER_REQUEST = 500  # the ingest's batch limit

# Share of the day's sessions that start in each local hour, and of the week's in each weekday
# (Monday first): an evening peak, a lunch bump, quiet nights, busier weekends.
HOURLY_WEIGHTS = (
    1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4.5,
    5, 4.5, 4, 4, 4.5, 5, 6, 7.5, 8.5, 8, 6, 3,
)  # fmt: skip
WEEKDAY_WEIGHTS = (0.9, 0.9, 0.95, 1.0, 1.1, 1.3, 1.25)

CATEGORIES = {
    # category: (share of sessions that browse it, brands, price range in VND)
    "laptop": (0.30, ("Dell", "HP", "Lenovo", "Asus", "Apple", "Acer"), (12_000_000, 60_000_000)),
    "monitor": (0.18, ("Dell", "LG", "Samsung", "Asus", "ViewSonic"), (3_000_000, 25_000_000)),
    "keyboard": (0.14, ("Logitech", "Keychron", "Razer", "Akko"), (500_000, 5_000_000)),
    "mouse": (0.14, ("Logitech", "Razer", "Microsoft", "Corsair"), (200_000, 3_500_000)),
    "headphone": (0.14, ("Sony", "JBL", "Logitech", "HyperX"), (400_000, 9_000_000)),
    "accessory": (0.10, ("Anker", "Ugreen", "Baseus", "Belkin"), (150_000, 2_500_000)),
}
PRODUCTS_PER_CATEGORY = 40


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    category: str
    brand: str
    price: int
    discount_price: int | None

    @property
    def url_path(self) -> str:
        return f"/products/{self.id}"

    def as_tracker_product(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "discountPrice": self.discount_price,
            "urlPath": self.url_path,
        }


def catalog(seed: int = 1) -> dict[str, list[Product]]:
    """The shop's products by category, most popular first (popularity falls off as Zipf)."""
    rng = random.Random(seed)
    products: dict[str, list[Product]] = {}
    for category, (_, brands, (low, high)) in CATEGORIES.items():
        products[category] = []
        for number in range(PRODUCTS_PER_CATEGORY):
            brand = rng.choice(brands)
            price = round(rng.uniform(low, high), -4)
            discounted = round(price * rng.uniform(0.8, 0.95), -4) if rng.random() < 0.3 else None
            products[category].append(
                Product(
                    id=f"{category[:3]}-{number:03d}",
                    name=f"{brand} {category.title()} {number:03d}",
                    category=category,
                    brand=brand,
                    price=int(price),
                    discount_price=int(discounted) if discounted else None,
                )
            )
    return products


@dataclass
class Visitor:
    client_id: str
    user_id: str | None
    identity_source: str | None
    sessions: int = 0


class Shop:
    """Generates sessions; every random choice comes from one seeded generator."""

    def __init__(self, seed: int = 7, time_zone: str = SHOP_TIME_ZONE, visitors: int = 5000):
        self.rng = random.Random(seed)
        self.zone = zoneinfo.ZoneInfo(time_zone)
        self.products = catalog(seed)
        self.visitors = [self._new_visitor() for _ in range(visitors)]
        self._category_names = list(CATEGORIES)
        self._category_weights = [CATEGORIES[name][0] for name in self._category_names]
        self._product_weights = [1 / (rank + 1) for rank in range(PRODUCTS_PER_CATEGORY)]

    def _new_visitor(self) -> Visitor:
        logged_in = self.rng.random() < 0.35
        return Visitor(
            client_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            user_id=f"user_{self.rng.getrandbits(48):012x}" if logged_in else None,
            identity_source=self.rng.choice(("clerk_google", "clerk_email", "clerk_password"))
            if logged_in
            else None,
        )

    def sessions_between(
        self, start: datetime, end: datetime, sessions_per_day: float
    ) -> Iterator[list[dict[str, Any]]]:
        """Sessions starting in [start, end), in start order; each a list of tracker events."""
        hourly_total = sum(HOURLY_WEIGHTS)
        weekday_mean = sum(WEEKDAY_WEIGHTS) / 7
        hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while hour < end:
            local = hour.astimezone(self.zone)
            expected = (
                sessions_per_day
                * HOURLY_WEIGHTS[local.hour]
                / hourly_total
                * WEEKDAY_WEIGHTS[local.weekday()]
                / weekday_mean
            )
            starts = sorted(
                hour + timedelta(seconds=self.rng.uniform(0, 3600))
                for _ in range(self._poisson(expected))
            )
            for session_start in starts:
                if start <= session_start < end:
                    yield self._session(session_start)
            hour += timedelta(hours=1)

    def _poisson(self, mean: float) -> int:
        # Knuth's method for small means, a rounded normal beyond (plenty for traffic shapes).
        if mean > 50:
            return max(0, round(self.rng.gauss(mean, math.sqrt(mean))))
        limit, count, product = math.exp(-mean), 0, self.rng.random()
        while product > limit:
            count += 1
            product *= self.rng.random()
        return count

    def _session(self, start: datetime) -> list[dict[str, Any]]:
        rng = self.rng
        if rng.random() < 0.3:
            visitor = self._new_visitor()
            self.visitors[rng.randrange(len(self.visitors))] = visitor
        else:
            visitor = rng.choice(self.visitors)
        visitor.sessions += 1
        session = {
            "session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "visitor": visitor,
            "first_visit": visitor.sessions == 1,
            "moment": start,
            "events": [],
        }
        category = rng.choices(self._category_names, self._category_weights)[0]
        page = rng.choices(("home", "category", "product"), (0.5, 0.25, 0.25))[0]
        product = self._pick_product(category)
        if visitor.user_id and rng.random() < 0.2:
            self._emit(session, "login_open", "/")
            self._emit(session, "login_success", "/")
        for _step in range(40):
            if page == "home":
                self._view(session, "home_view", "/")
                page = rng.choices(("category", "product", None), (0.6, 0.2, 0.2))[0]
            elif page == "category":
                self._view(session, "category_view", f"/categories/{category}",
                           {"id": category, "category": category})  # fmt: skip
                page = rng.choices(("product", "category", None), (0.7, 0.1, 0.2))[0]
                if page == "category":
                    category = rng.choices(self._category_names, self._category_weights)[0]
                product = self._pick_product(category)
            elif page == "product":
                self._view(session, "product_view", product.url_path, product.as_tracker_product())
                page = rng.choices(("cart", "product", "category", None), (0.22, 0.38, 0.15, 0.25))[
                    0
                ]
                if page == "product":
                    product = self._pick_product(category)
            elif page == "cart":
                self._emit(
                    session, "add_to_cart_click", product.url_path, product.as_tracker_product()
                )
                page = rng.choices(("checkout", "product", None), (0.45, 0.35, 0.2))[0]
                if page == "product":
                    product = self._pick_product(category)
            elif page == "checkout":
                self._view(session, "checkout_start", "/checkout")
                if rng.random() < 0.65:
                    self._emit(session, "checkout_complete", "/checkout/complete")
                page = None
            if page is None:
                break
        return session["events"]

    def _pick_product(self, category: str) -> Product:
        return self.rng.choices(self.products[category], self._product_weights)[0]

    def _view(self, session, name: str, path: str, product: dict | None = None) -> None:
        self._emit(session, "page_view", path)
        self._emit(session, name, path, product)

    def _emit(self, session, name: str, path: str, product: dict | None = None) -> None:
        visitor: Visitor = session["visitor"]
        events = session["events"]
        if events:
            session["moment"] += timedelta(seconds=self.rng.expovariate(1 / 25))
        previous_page = events[-1]["pageUrl"] if events else None
        events.append(
            {
                "eventId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "eventTimestamp": session["moment"]
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "eventName": name,
                "pageUrl": SHOP_URL + path,
                "referrer": previous_page or "",
                "userId": visitor.user_id,
                "userLoginState": "logged_in" if visitor.user_id else "anonymous",
                "identitySource": visitor.identity_source,
                "clientId": visitor.client_id,
                "sessionId": session["session_id"],
                "isFirstVisit": session["first_visit"],
                "product": product,
            }
        )


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["eventTimestamp"])


def api_gateway_request(events: list[dict[str, Any]], received_at: datetime) -> dict[str, Any]:
    """The API Gateway HTTP API (payload 2.0) event that a batch POST /clickstream becomes."""
    return {
        "version": "2.0",
        "routeKey": "POST /clickstream",
        "headers": {"content-type": "application/json", "user-agent": "synthetic-shop"},
        "requestContext": {
            "http": {"method": "POST", "path": "/clickstream", "userAgent": "synthetic-shop"},
            "requestId": str(uuid.uuid4()),
            "timeEpoch": int(received_at.timestamp() * 1000),
        },
        "body": json.dumps(events),
        "isBase64Encoded": False,
    }


def hourly_batches(sessions: Iterator[list[dict]]) -> Iterator[tuple[datetime, list[dict]]]:
    """The events of ``sessions`` in (hour, batch) requests: each batch within one UTC hour, at
    most EVENTS_PER_REQUEST events, received at its last event's time (the tracker's flush)."""
    pending: dict[datetime, list[dict]] = {}
    for events in sessions:
        for event in events:
            hour = event_time(event).replace(minute=0, second=0, microsecond=0)
            pending.setdefault(hour, []).append(event)
        first_open = event_time(events[0]).replace(minute=0, second=0, microsecond=0)
        # Sessions start in order and their events only move forward: older hours are complete.
        for hour in sorted(h for h in pending if h < first_open):
            yield from _batches(hour, pending.pop(hour))
    for hour in sorted(pending):
        yield from _batches(hour, pending.pop(hour))


def _batches(hour: datetime, events: list[dict]) -> Iterator[tuple[datetime, list[dict]]]:
    events.sort(key=event_time)
    for first in range(0, len(events), EVENTS_PER_REQUEST):
        batch = events[first : first + EVENTS_PER_REQUEST]
        yield event_time(batch[-1]), batch


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self.started = max(total, 1), label, 0, time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        share = min(self.done / self.total, 1.0)
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done:,}/{self.total:,} {rate:,.0f}/s")
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


def write_raw(arguments: argparse.Namespace) -> int:
    """Every generated batch through the real ingest handler, into the raw bucket."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambda_src"))
    import boto3

    from ingest.handler import handle_request

    s3 = boto3.client("s3")
    shop = Shop(seed=arguments.seed)
    start = datetime.combine(arguments.start, datetime.min.time(), UTC)
    end = start + timedelta(days=arguments.days)
    expected = int(arguments.sessions_per_day * arguments.days * 9)  # about 9 events a session
    progress = Progress(expected, "events")
    written = 0
    for received_at, batch in hourly_batches(
        shop.sessions_between(start, end, arguments.sessions_per_day)
    ):
        response = handle_request(
            api_gateway_request(batch, received_at), s3_client=s3, bucket=arguments.bucket
        )
        if response["statusCode"] != 202:
            sys.stderr.write(f"\ningest refused a batch: {response['body'][:500]}\n")
            return 1
        written += len(batch)
        progress.advance(len(batch))
    progress.finish()
    print(json.dumps({"events": written, "bucket": arguments.bucket}))
    return 0


# Live traffic is generated over this day and then moved to end now, so that a seed always gives
# the same sessions and event ids whenever it runs (tests compare them with the warehouse).
LIVE_REFERENCE_DAY = datetime(2025, 6, 2, tzinfo=UTC)


def live_events(seed: int, sessions: int, now: datetime) -> list[dict[str, Any]]:
    """The first ``sessions`` sessions of the shop with ``seed``, shifted to end at ``now``,
    their events in time order."""
    shop = Shop(seed=seed)
    chosen = []
    day = shop.sessions_between(
        LIVE_REFERENCE_DAY, LIVE_REFERENCE_DAY + timedelta(days=1), sessions_per_day=1e6
    )
    for events in day:
        chosen.append(events)
        if len(chosen) >= sessions:
            break
    shift = now - max(event_time(session[-1]) for session in chosen)
    events = sorted((event for session in chosen for event in session), key=event_time)
    for event in events:
        event["eventTimestamp"] = (
            (event_time(event) + shift).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
    return events


def post_events(url: str, events: list[dict[str, Any]], rate: float, batch_size: int) -> None:
    """POST ``events`` to an ingest URL in batches, at ``rate`` events/s, with a progress bar;
    RuntimeError on the first answer that is not 202."""
    import urllib.request

    progress = Progress(len(events), "events")
    interval = batch_size / rate
    for first in range(0, len(events), batch_size):
        batch = events[first : first + batch_size]
        request = urllib.request.Request(  # noqa: S310 - the operator's own ingest URL
            url,
            data=json.dumps(batch).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            if response.status != 202:
                raise RuntimeError(f"ingest answered {response.status}: {response.read()[:500]}")
        progress.advance(len(batch))
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    progress.finish()


def send(arguments: argparse.Namespace) -> int:
    """Live traffic: sessions shifted to now, POSTed at ``rate`` events/s."""
    events = live_events(arguments.seed, arguments.sessions, datetime.now(UTC))
    try:
        post_events(arguments.url, events, arguments.rate, arguments.batch)
    except (RuntimeError, OSError) as error:
        sys.stderr.write(f"\n{error}\n")
        return 1
    print(json.dumps({"events": len(events), "url": arguments.url}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Synthetic clickstream traffic of the shop.")
    commands = parser.add_subparsers(dest="command", required=True)
    raw = commands.add_parser("write-raw", help="history through the ingest handler into S3")
    raw.add_argument("--bucket", required=True)
    raw.add_argument("--start", type=date.fromisoformat, required=True)
    raw.add_argument("--days", type=int, default=7)
    raw.add_argument("--sessions-per-day", type=float, default=2000)
    raw.add_argument("--seed", type=int, default=7)
    live = commands.add_parser("send", help="live traffic to an ingest URL")
    live.add_argument("--url", required=True)
    live.add_argument("--sessions", type=int, default=200)
    live.add_argument("--rate", type=float, default=50, help="events per second")
    live.add_argument("--batch", type=int, default=20, help="events per request")
    live.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args(argv)
    return write_raw(arguments) if arguments.command == "write-raw" else send(arguments)


if __name__ == "__main__":
    sys.exit(main())

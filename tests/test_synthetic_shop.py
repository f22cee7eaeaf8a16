"""The synthetic shop: reproducible, valid, shaped like a real shop, and loadable end to end."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from clickstream import contract, loader
from tools import synthetic_shop
from tools.synthetic_shop import Shop, event_time

DAY = datetime(2025, 12, 1, tzinfo=UTC)


def one_day(seed: int = 7, sessions_per_day: float = 400) -> list[list[dict]]:
    return list(Shop(seed=seed).sessions_between(DAY, DAY + timedelta(days=1), sessions_per_day))


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic():
    assert one_day(seed=3) == one_day(seed=3)
    assert one_day(seed=3) != one_day(seed=4)


def test_every_event_satisfies_the_contract():
    events = [event for session in one_day() for event in session]
    assert events
    assert all(contract.is_valid(event, contract.INCOMING_EVENT) for event in events)


def test_evenings_in_the_shops_time_zone_are_busier_than_nights():
    starts = Counter(
        event_time(session[0]).astimezone(synthetic_shop.zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")).hour
        for session in one_day(sessions_per_day=3000)
    )
    assert sum(starts[h] for h in (19, 20, 21)) > 5 * sum(starts[h] for h in (2, 3, 4))


def test_fewer_sessions_reach_each_step_of_the_funnel():
    reached = Counter()
    for session in one_day(sessions_per_day=3000):
        reached.update({event["eventName"] for event in session})
    steps = ["product_view", "add_to_cart_click", "checkout_start", "checkout_complete"]
    counts = [reached[step] for step in steps]
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] > 0


def test_events_of_a_session_move_forward_in_time_and_share_ids():
    for session in one_day():
        times = [event_time(event) for event in session]
        assert times == sorted(times)
        assert len({(e["sessionId"], e["clientId"]) for e in session}) == 1


def test_generated_history_goes_through_the_ingest_and_loads_without_rejects(
    warehouse, aws, raw_bucket, capsys
):
    assert synthetic_shop.main(
        ["write-raw", "--bucket", raw_bucket, "--start", "2025-12-01", "--days", "1",
         "--sessions-per-day", "300", "--seed", "11"]
    ) == 0  # fmt: skip
    sessions = list(Shop(seed=11).sessions_between(DAY, DAY + timedelta(days=1), 300))
    generated = sum(len(session) for session in sessions)
    connection = warehouse.etl_connection()
    try:
        report = loader.run_window(
            connection, aws.client("s3"), raw_bucket, start=DAY, end=DAY + timedelta(hours=23)
        )
    finally:
        connection.close()
    assert (report.events_loaded, report.rejected_lines) == (generated, 0)
    assert warehouse.scalar("SELECT count(*) FROM sessions") == len(sessions)
    assert date(2025, 12, 1) in [
        row[0] for row in warehouse.query("SELECT day FROM rollup_funnel_daily")
    ]

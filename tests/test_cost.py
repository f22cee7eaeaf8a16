"""tools/cost.py: each line follows the setting that drives it, and docs/cost.md is current."""

from __future__ import annotations

import dataclasses

import pytest

from tools import cost

PRICES = cost.load_prices("ap-southeast-1")
ASSUMPTIONS = cost.Assumptions()
SMALL = cost.Deployment(
    region="ap-southeast-1",
    dwh_instance_type="t3.medium",
    dwh_volume_gb=70,
    oltp_enabled=False,
    oltp_instance_type="t3.small",
    oltp_volume_gb=20,
    interface_endpoints=3,
    availability_zones=1,
    nat_enabled=False,
    lambda_architecture="x86_64",
    ingest_memory_mb=256,
    etl_memory_mb=1024,
    etl_timeout_seconds=900,
    etl_runs_per_hour=1.0,
    raw_versioning=True,
    raw_transition_days=30,
    raw_transition_storage_class="standard_ia",
    raw_expiration_days=365,
    raw_noncurrent_expiration_days=30,
    function_log_retention_days=30,
    api_log_retention_days=30,
    alarms=12,
    api_rate_limit=100,
)


def lines_by_resource(deployment: cost.Deployment, assumptions=ASSUMPTIONS) -> dict[str, tuple]:
    return {line.resource: line.usd for line in cost.monthly_lines(deployment, assumptions, PRICES)}


def changed_lines(before: dict[str, tuple], after: dict[str, tuple]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def test_the_host_line_is_its_hourly_price_for_730_hours():
    host = lines_by_resource(SMALL)["EC2: DWH + Shiny host"]
    assert host == (pytest.approx(730 * 0.0528),) * len(cost.EVENT_RATES)


def test_a_smaller_instance_type_changes_the_host_line_only():
    smaller = dataclasses.replace(SMALL, dwh_instance_type="t3.small")
    before, after = lines_by_resource(SMALL), lines_by_resource(smaller)
    assert changed_lines(before, after) == {"EC2: DWH + Shiny host"}
    assert after["EC2: DWH + Shiny host"][0] < before["EC2: DWH + Shiny host"][0]


def test_an_instance_type_missing_from_the_price_table_is_refused():
    with pytest.raises(KeyError, match=r"no ec2_instance_hour price for x9\.huge"):
        cost.monthly_lines(
            dataclasses.replace(SMALL, dwh_instance_type="x9.huge"), ASSUMPTIONS, PRICES
        )


def test_each_interface_endpoint_adds_its_hours_to_the_endpoint_line_only():
    fewer = dataclasses.replace(SMALL, interface_endpoints=2)
    before, after = lines_by_resource(SMALL), lines_by_resource(fewer)
    endpoints = "VPC interface endpoints (Session Manager)"
    assert changed_lines(before, after) == {endpoints}
    assert before[endpoints][0] - after[endpoints][0] == pytest.approx(730 * 0.013)


def test_the_nat_line_appears_only_when_the_nat_is_enabled():
    nat = "NAT gateway + Elastic IP (bootstrap)"
    assert nat not in lines_by_resource(SMALL)
    with_nat = lines_by_resource(dataclasses.replace(SMALL, nat_enabled=True))
    assert with_nat[nat][0] > 730 * 0.059


def test_the_oltp_host_line_appears_only_when_enabled():
    assert not any("OLTP" in name for name in lines_by_resource(SMALL))
    assert any(
        "OLTP" in name for name in lines_by_resource(dataclasses.replace(SMALL, oltp_enabled=True))
    )


def test_raw_storage_grows_with_the_days_the_lifecycle_keeps_objects():
    storage = "S3 raw bucket: storage (steady state)"
    year = lines_by_resource(SMALL)[storage]
    two_years = lines_by_resource(dataclasses.replace(SMALL, raw_expiration_days=730))[storage]
    assert all(longer > shorter for longer, shorter in zip(two_years, year, strict=True))


def test_noncurrent_versions_are_kept_only_in_a_versioned_bucket():
    assert cost.raw_storage_days(SMALL, 1600) == (395, 0)
    unversioned = dataclasses.replace(SMALL, raw_versioning=False)
    assert cost.raw_storage_days(unversioned, 1600) == (365, 0)


def test_only_objects_of_128_kib_or_more_move_to_the_transition_class():
    assert cost.raw_storage_days(SMALL, 128 * 1024 - 1) == (395, 0)
    assert cost.raw_storage_days(SMALL, 128 * 1024) == (30, 365)


def test_traffic_lines_grow_tenfold_with_the_rate_and_fixed_lines_stay():
    lines = lines_by_resource(SMALL)
    puts = lines["S3 raw bucket: PUT (one object per request)"]
    assert puts[1] == pytest.approx(10 * puts[0])
    assert len(set(lines["VPC interface endpoints (Session Manager)"])) == 1


def test_more_events_per_request_make_fewer_paid_requests():
    batched = dataclasses.replace(ASSUMPTIONS, events_per_request=20.0)
    before, after = lines_by_resource(SMALL), lines_by_resource(SMALL, batched)
    for line in ("API Gateway HTTP API: requests", "S3 raw bucket: PUT (one object per request)"):
        assert after[line][1] == pytest.approx(before[line][1] / 10)


def test_each_alarm_costs_its_monthly_price():
    more = dataclasses.replace(SMALL, alarms=13)
    alarms = "CloudWatch alarms"
    assert lines_by_resource(more)[alarms][0] - lines_by_resource(SMALL)[alarms][
        0
    ] == pytest.approx(0.10)


def test_api_requests_beyond_the_first_tier_cost_the_second_tier_price():
    assert PRICES.tiered("http_api_million_requests", 400) == pytest.approx(300 * 1.20 + 100 * 1.08)


def test_a_rate_above_the_api_throttling_limit_is_named():
    (warning,) = cost.capacity_warnings(SMALL, ASSUMPTIONS, PRICES)
    assert "1,000 events/s" in warning
    assert "api_throttling_rate_limit" in warning


def test_the_schedule_gives_the_runs_per_hour():
    assert cost.runs_per_hour("rate(1 hour)") == 1
    assert cost.runs_per_hour("rate(15 minutes)") == 4
    with pytest.raises(ValueError, match="only rate"):
        cost.runs_per_hour("cron(0 * * * ? *)")


@pytest.fixture(scope="module")
def default_deployment() -> cost.Deployment:
    """The aws inventory's deployment, read by Ansible once for this module."""
    return cost.read_deployment(cost.DEFAULT_INVENTORY)


def test_the_inventory_is_read_with_its_own_values(default_deployment):
    assert default_deployment.interface_endpoints >= 1
    assert default_deployment.etl_runs_per_hour == 1
    assert default_deployment.alarms >= 2


def test_docs_cost_md_is_what_the_script_writes(default_deployment):
    expected = cost.document(
        default_deployment, cost.Assumptions(), cost.load_prices(default_deployment.region)
    )
    written = (cost.REPOSITORY / "docs" / "cost.md").read_text(encoding="utf-8")
    assert written == expected, "docs/cost.md is stale: run `make cost`"

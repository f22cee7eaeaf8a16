"""What the default deployment costs a month, from the inventory's own variables (docs/cost.md).

    python -m tools.cost                       # print docs/cost.md for inventories/aws
    python -m tools.cost --write docs/cost.md  # regenerate it (make cost)
    python -m tools.cost --inventory inventories/aws --events-per-request 20

The inventory is read by Ansible itself (tools/inventory_values.py), the prices from the dated
table of its region under files/prices/. What the inventory cannot say (how many events a request
carries, how long a function runs, how many bytes a log line has) is an Assumption below, each
with its source. The computation (monthly_lines and what follows) is pure: it takes a Deployment,
Assumptions and prices and reads nothing, so tests hand it small inputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tools.inventory_values import REPOSITORY, render_variables

PRICES_DIR = REPOSITORY / "files" / "prices"
DEFAULT_INVENTORY = "inventories/aws"
# The traffic levels of the table, in events per second (issue 14).
EVENT_RATES = (10, 100, 1000)
# The monthly budget of the default deployment at 100 events/s (issue 14).
TARGET_USD_PER_MONTH = 45.0
TARGET_EVENTS_PER_SECOND = 100
SECONDS_PER_HOUR = 3600
GB = 1024**3
# S3 lifecycle rules do not transition objects smaller than 128 KiB (the default minimum object
# size of lifecycle transitions since September 2024, https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-transition-general-considerations.html).
S3_TRANSITION_MINIMUM_BYTES = 128 * 1024
SCHEDULE_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Deployment:
    """What the inventory deploys, as far as it is billed."""

    region: str
    dwh_instance_type: str
    dwh_volume_gb: int
    oltp_enabled: bool
    oltp_instance_type: str
    oltp_volume_gb: int
    interface_endpoints: int
    availability_zones: int
    nat_enabled: bool
    lambda_architecture: str
    ingest_memory_mb: int
    etl_memory_mb: int
    etl_timeout_seconds: int
    etl_runs_per_hour: float
    raw_versioning: bool
    raw_transition_days: int
    raw_transition_storage_class: str
    raw_expiration_days: int
    raw_noncurrent_expiration_days: int
    function_log_retention_days: int
    api_log_retention_days: int
    alarms: int
    api_rate_limit: int


@dataclass(frozen=True)
class Assumptions:
    """What the inventory cannot say. Each default names its source; measure and override."""

    # files/tracker/clickstream-tracker.js sends a batch every flushIntervalMs (5 s) or at
    # batchSize (20) events, whichever comes first; a visitor makes an event every few seconds,
    # so a request carries 1 to 3 events. navigator.sendBeacon on page hide sends what is left.
    events_per_request: float = 2.0
    # One tracker event as the raw record the ingest stores: tests/raw_events.tracker_event with
    # eventId, eventTimestamp, sentAt and a browser's User-Agent is 801 bytes of NDJSON (557 as
    # sent). The API bills requests by 512 KB, so only the stored size matters.
    raw_record_bytes: int = 800
    # Lambda Ingest: validate a small batch and put one S3 object (billed per millisecond).
    ingest_duration_ms: float = 40.0
    # Lambda ETL: a run's fixed part (connect, list, refresh the touched aggregates) plus its
    # loading speed; `make bench` measures the latter on this machine.
    etl_run_overhead_seconds: float = 10.0
    etl_events_per_second: float = 10_000.0
    # The scheduled run lists the hours from the newest loaded one minus ETL_LOOKBACK_HOURS (3,
    # README "Lambda ETL") to now: 4 partitions, 1,000 keys per LIST page.
    etl_listed_partitions: int = 4
    # Log bytes: the ingest's "request accepted" line with its embedded metrics (~600) plus
    # Lambda's START, END and REPORT lines (~350); the API's access log line
    # (api_access_log_format, ~300); the ETL's report line and Lambda's lines per run.
    ingest_log_bytes_per_request: int = 950
    api_log_bytes_per_request: int = 300
    etl_log_bytes_per_run: int = 4000
    # Custom metrics in embedded metric format: the ETL's report (9, lambda_src/etl/handler.py)
    # and the ingest's AcceptedEvents and RawObjectBytes (lambda_src/ingest/handler.py).
    custom_metrics: int = 11
    # Session Manager traffic through the interface endpoints, and what a bootstrap NAT carries
    # (the host's first package installs).
    endpoint_gb_per_month: float = 1.0
    nat_gb_per_month: float = 5.0
    # The media bucket, the package mirror's snapshots and the transfer files, together.
    other_buckets_gb: float = 5.0


@dataclass(frozen=True)
class Line:
    """One billable resource: its name, what drives it, and its monthly cost per event rate."""

    resource: str
    driven_by: str
    usd: tuple[float, ...]


@dataclass(frozen=True)
class Prices:
    hours_per_month: float
    priced_on: str
    region: str
    table: dict[str, Any]

    def price(self, name: str, key: str | None = None) -> float:
        entry = self.table[name]
        if key is None:
            return float(entry["price"])
        options = next(value for field, value in entry.items() if field.startswith("by_"))
        if key not in options:
            raise KeyError(f"files/prices/{self.region}.yml has no {name} price for {key}")
        return float(options[key])

    def tiered(self, name: str, millions: float) -> float:
        """The cost of ``millions`` of units priced by monthly tiers."""
        cost, below = 0.0, 0.0
        for tier in self.table[name]["tiers"]:
            upper = tier["up_to_million"]
            in_tier = max(0.0, min(millions, upper if upper is not None else millions) - below)
            cost += in_tier * float(tier["price"])
            if upper is None or millions <= upper:
                break
            below = upper
        return cost


def load_prices(region: str, directory: Path = PRICES_DIR) -> Prices:
    path = directory / f"{region}.yml"
    if not path.exists():
        raise SystemExit(f"no price table for {region}: write {path} (see ap-southeast-1.yml)")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Prices(
        hours_per_month=float(document["hours_per_month"]),
        priced_on=str(document["priced_on"]),
        region=document["region"],
        table=document["prices"],
    )


def runs_per_hour(schedule_expression: str) -> float:
    """Runs per hour of an EventBridge rate() expression, e.g. rate(1 hour) -> 1."""
    match = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", schedule_expression.strip())
    if match is None:
        raise ValueError(f"only rate() schedules are costed, not {schedule_expression!r}")
    return SECONDS_PER_HOUR / (int(match.group(1)) * SCHEDULE_UNIT_SECONDS[match.group(2)])


# --- The computation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """A month of traffic at one event rate."""

    events: float
    requests: float
    etl_runs: float
    events_per_run: float
    raw_gb_per_day: float


def traffic(
    deployment: Deployment, assumptions: Assumptions, prices: Prices, events_per_second: float
) -> Traffic:
    seconds = prices.hours_per_month * SECONDS_PER_HOUR
    events = events_per_second * seconds
    etl_runs = deployment.etl_runs_per_hour * prices.hours_per_month
    return Traffic(
        events=events,
        requests=events / assumptions.events_per_request,
        etl_runs=etl_runs,
        events_per_run=events / etl_runs,
        raw_gb_per_day=events_per_second * 86400 * assumptions.raw_record_bytes / GB,
    )


def raw_storage_days(deployment: Deployment, object_bytes: float) -> tuple[int, int]:
    """Days a raw object spends in Standard and in the transition class, in steady state.

    With versioning, expiration makes the object a noncurrent version, kept
    raw_noncurrent_expiration_days more. Objects under 128 KiB are never transitioned.
    """
    kept = deployment.raw_expiration_days + (
        deployment.raw_noncurrent_expiration_days if deployment.raw_versioning else 0
    )
    transitions = (
        object_bytes >= S3_TRANSITION_MINIMUM_BYTES
        and deployment.raw_transition_days < deployment.raw_expiration_days
    )
    if not transitions:
        return kept, 0
    return deployment.raw_transition_days, kept - deployment.raw_transition_days


def monthly_lines(
    deployment: Deployment,
    assumptions: Assumptions,
    prices: Prices,
    rates: tuple[float, ...] = EVENT_RATES,
) -> list[Line]:
    """Every billable resource with its monthly cost at each of ``rates`` events per second."""
    hours = prices.hours_per_month
    months = [traffic(deployment, assumptions, prices, rate) for rate in rates]

    def fixed(usd: float) -> tuple[float, ...]:
        return tuple(usd for _ in rates)

    def per_rate(cost) -> tuple[float, ...]:
        return tuple(cost(month) for month in months)

    lines = [
        Line(
            "EC2: DWH + Shiny host",
            f"`compute_dwh_instance_type` {deployment.dwh_instance_type}, 730 h",
            fixed(hours * prices.price("ec2_instance_hour", deployment.dwh_instance_type)),
        ),
        Line(
            "EBS gp3: DWH root + data volumes",
            f"`compute_dwh_root_volume_gb` + `compute_dwh_data_volume_gb` "
            f"= {deployment.dwh_volume_gb} GB",
            fixed(deployment.dwh_volume_gb * prices.price("ebs_gp3_gb_month")),
        ),
    ]
    if deployment.oltp_enabled:
        lines.append(
            Line(
                "EC2 + EBS + public IPv4: OLTP host",
                f"`compute_oltp_enabled`, `compute_oltp_instance_type` "
                f"{deployment.oltp_instance_type}, {deployment.oltp_volume_gb} GB",
                fixed(
                    hours * prices.price("ec2_instance_hour", deployment.oltp_instance_type)
                    + deployment.oltp_volume_gb * prices.price("ebs_gp3_gb_month")
                    + hours * prices.price("public_ipv4_hour")
                ),
            )
        )
    endpoint_hours = deployment.interface_endpoints * deployment.availability_zones * hours
    lines.append(
        Line(
            "VPC interface endpoints (Session Manager)",
            f"`network_interface_endpoint_services`: {deployment.interface_endpoints} "
            f"x {deployment.availability_zones} AZ, {assumptions.endpoint_gb_per_month:g} GB",
            fixed(
                endpoint_hours * prices.price("interface_endpoint_hour")
                + assumptions.endpoint_gb_per_month * prices.price("interface_endpoint_gb")
            ),
        )
    )
    if deployment.nat_enabled:
        lines.append(
            Line(
                "NAT gateway + Elastic IP (bootstrap)",
                f"`network_bootstrap_nat_enabled`, {assumptions.nat_gb_per_month:g} GB",
                fixed(
                    hours * (prices.price("nat_gateway_hour") + prices.price("public_ipv4_hour"))
                    + assumptions.nat_gb_per_month * prices.price("nat_gateway_gb")
                ),
            )
        )
    gb_second = prices.price("lambda_gb_second", deployment.lambda_architecture)
    lambda_request = prices.price("lambda_million_requests") / 1e6
    lines += [
        Line(
            "API Gateway HTTP API: requests",
            f"{assumptions.events_per_request:g} events per request",
            per_rate(lambda m: prices.tiered("http_api_million_requests", m.requests / 1e6)),
        ),
        Line(
            "Lambda Ingest: requests + duration",
            f"`lambdas_ingest_memory_mb` {deployment.ingest_memory_mb}, "
            f"{assumptions.ingest_duration_ms:g} ms each",
            per_rate(
                lambda m: (
                    m.requests * lambda_request
                    + m.requests
                    * assumptions.ingest_duration_ms
                    / 1000
                    * deployment.ingest_memory_mb
                    / 1024
                    * gb_second
                )
            ),
        ),
        Line(
            "Lambda ETL: runs + duration",
            f"`schedule_expression` {deployment.etl_runs_per_hour:g} run/h, "
            f"`lambdas_etl_memory_mb` {deployment.etl_memory_mb}",
            per_rate(
                lambda m: (
                    m.etl_runs * lambda_request
                    + m.etl_runs
                    * etl_run_seconds(assumptions, m.events_per_run)
                    * deployment.etl_memory_mb
                    / 1024
                    * gb_second
                )
            ),
        ),
        Line(
            "S3 raw bucket: PUT (one object per request)",
            f"{assumptions.events_per_request:g} events per request",
            per_rate(lambda m: m.requests / 1000 * prices.price("s3_put_thousand")),
        ),
        Line(
            "S3 raw bucket: ETL's GET + LIST",
            "one GET per object, LIST pages per run",
            per_rate(
                lambda m: (
                    m.requests / 1000 * prices.price("s3_get_thousand")
                    + m.etl_runs
                    * (
                        assumptions.etl_listed_partitions
                        + m.events_per_run / assumptions.events_per_request / 1000
                    )
                    / 1000
                    * prices.price("s3_put_thousand")
                )
            ),
        ),
    ]
    object_bytes = assumptions.events_per_request * assumptions.raw_record_bytes
    standard_days, transitioned_days = raw_storage_days(deployment, object_bytes)
    transition_class_price = prices.price(f"s3_{deployment.raw_transition_storage_class}_gb_month")
    lines.append(
        Line(
            "S3 raw bucket: storage (steady state)",
            f"{standard_days} d Standard"
            + (
                f", {transitioned_days} d {deployment.raw_transition_storage_class}"
                if transitioned_days
                else " (objects under 128 KiB are not transitioned)"
            )
            + f"; `storage_raw_expiration_days` {deployment.raw_expiration_days}",
            per_rate(
                lambda m: (
                    m.raw_gb_per_day
                    * (
                        standard_days * prices.price("s3_standard_gb_month")
                        + transitioned_days * transition_class_price
                    )
                    * 12
                    / 365
                    + (
                        m.requests / 1000 * prices.price("s3_transition_ia_thousand")
                        if transitioned_days
                        else 0.0
                    )
                )
            ),
        )
    )
    lines.append(
        Line(
            "S3 other buckets: media, package mirror, transfer",
            f"{assumptions.other_buckets_gb:g} GB Standard",
            fixed(assumptions.other_buckets_gb * prices.price("s3_standard_gb_month")),
        )
    )

    def log_gb(month: Traffic) -> tuple[float, float]:
        """GB a month into the function log groups and into the API's access log group."""
        functions = (
            month.requests * assumptions.ingest_log_bytes_per_request
            + month.etl_runs * assumptions.etl_log_bytes_per_run
        ) / GB
        return functions, month.requests * assumptions.api_log_bytes_per_request / GB

    lines += [
        Line(
            "CloudWatch Logs: ingestion",
            "ingest and ETL lines, API access log",
            per_rate(lambda m: sum(log_gb(m)) * prices.price("logs_ingested_gb")),
        ),
        Line(
            "CloudWatch Logs: storage (steady state)",
            f"`lambdas_log_retention_days` {deployment.function_log_retention_days}, "
            f"`api_access_log_retention_days` {deployment.api_log_retention_days}",
            per_rate(
                lambda m: (
                    (
                        log_gb(m)[0] * deployment.function_log_retention_days * 12 / 365
                        + log_gb(m)[1] * deployment.api_log_retention_days * 12 / 365
                    )
                    * prices.price("logs_stored_gb_month")
                )
            ),
        ),
        Line(
            "CloudWatch alarms",
            f"`monitoring_alarms` + the API's 5xx: {deployment.alarms}",
            fixed(deployment.alarms * prices.price("alarm_month")),
        ),
        Line(
            "CloudWatch custom metrics (embedded metric format)",
            f"{assumptions.custom_metrics} metrics",
            fixed(assumptions.custom_metrics * prices.price("custom_metric_month")),
        ),
        Line(
            "SQS (ETL DLQ), SNS (alarm topic), EventBridge (schedule), SSM parameters",
            "within free tiers / free",
            fixed(0.0),
        ),
    ]
    return lines


def etl_run_seconds(assumptions: Assumptions, events_per_run: float) -> float:
    return assumptions.etl_run_overhead_seconds + events_per_run / assumptions.etl_events_per_second


def totals(lines: list[Line]) -> tuple[float, ...]:
    return tuple(sum(column) for column in zip(*(line.usd for line in lines), strict=True))


def capacity_warnings(
    deployment: Deployment,
    assumptions: Assumptions,
    prices: Prices,
    rates: tuple[float, ...] = EVENT_RATES,
) -> list[str]:
    """What the deployment cannot carry at a rate, whatever it costs."""
    warnings = []
    for rate in rates:
        requests_per_second = rate / assumptions.events_per_request
        if requests_per_second > deployment.api_rate_limit:
            warnings.append(
                f"At {rate:,} events/s the API receives {requests_per_second:,.0f} requests/s, "
                f"above `api_throttling_rate_limit` ({deployment.api_rate_limit}): the excess is "
                "answered 429 and the tracker retries. Raise the limit for that traffic."
            )
        month = traffic(deployment, assumptions, prices, rate)
        run_seconds = etl_run_seconds(assumptions, month.events_per_run)
        if run_seconds > deployment.etl_timeout_seconds:
            warnings.append(
                f"At {rate:,} events/s an ETL run needs about {run_seconds:,.0f} s, above "
                f"`lambdas_etl_timeout_seconds` ({deployment.etl_timeout_seconds}): each run "
                "stops incomplete and the lag grows."
            )
    return warnings


# --- The document ---------------------------------------------------------------------------


def usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def millions(value: float) -> str:
    """A count in millions, e.g. 262.8 million."""
    return f"{value / 1e6:,.1f} million"


def table(lines: list[Line], rates: tuple[float, ...]) -> str:
    header = "| Resource | Driven by | " + " | ".join(f"{rate:,} events/s" for rate in rates)
    rows = [header + " |", "|---|---|" + "---:|" * len(rates)]
    rows += [
        f"| {line.resource} | {line.driven_by} | " + " | ".join(usd(v) for v in line.usd) + " |"
        for line in lines
    ]
    rows.append("| **Total** | | " + " | ".join(f"**{usd(v)}**" for v in totals(lines)) + " |")
    return "\n".join(rows)


def target_total(deployment: Deployment, assumptions: Assumptions, prices: Prices) -> float:
    (total,) = totals(monthly_lines(deployment, assumptions, prices, (TARGET_EVENTS_PER_SECOND,)))
    return total


def savings(deployment: Deployment, assumptions: Assumptions, prices: Prices) -> list[str]:
    """Settings that lower the total at the target rate, each with its computed total."""
    base = target_total(deployment, assumptions, prices)
    hours = prices.hours_per_month
    host = hours * prices.price("ec2_instance_hour", deployment.dwh_instance_type)
    options: list[tuple[str, float]] = []
    for instance_type in ("t3.small", "t4g.medium"):
        if instance_type != deployment.dwh_instance_type:
            changed = dataclasses.replace(deployment, dwh_instance_type=instance_type)
            options.append(
                (
                    f"`compute_dwh_instance_type: {instance_type}`",
                    target_total(changed, assumptions, prices),
                )
            )
    options.append(("stopping the DWH host 12 h a day (EBS is still billed)", base - host / 2))
    batched = dataclasses.replace(assumptions, events_per_request=20.0)
    options.append(
        (
            "20 events per request (the tracker's `batchSize` reached before each flush, "
            "e.g. a longer `flushIntervalMs`)",
            target_total(deployment, batched, prices),
        )
    )
    small_host = hours * prices.price("ec2_instance_hour", "t3.small")
    options.append(
        (
            "all three: a t3.small stopped 12 h a day, 20 events per request",
            target_total(
                dataclasses.replace(deployment, dwh_instance_type="t3.small"), batched, prices
            )
            - small_host / 2,
        )
    )
    return [f"- {what}: {usd(total)} ({usd(total - base)})" for what, total in options]


def document(deployment: Deployment, assumptions: Assumptions, prices: Prices) -> str:
    lines = monthly_lines(deployment, assumptions, prices)
    by_rate = dict(zip(EVENT_RATES, totals(lines), strict=True))
    at_target = target_total(deployment, assumptions, prices)
    target_lines = monthly_lines(deployment, assumptions, prices, (TARGET_EVENTS_PER_SECOND,))
    ranked = sorted(target_lines, key=lambda line: line.usd[0], reverse=True)
    fixed_total = sum(line.usd[0] for line in lines if len(set(line.usd)) == 1)
    verdict = (
        f"within the target of {usd(TARGET_USD_PER_MONTH)}"
        if at_target <= TARGET_USD_PER_MONTH
        else f"over the target of {usd(TARGET_USD_PER_MONTH)}"
    )
    largest = "\n".join(
        f"{rank}. {line.resource}: {usd(line.usd[0])}" for rank, line in enumerate(ranked[:5], 1)
    )
    warnings = capacity_warnings(deployment, assumptions, prices)
    target_events = TARGET_EVENTS_PER_SECOND * prices.hours_per_month * SECONDS_PER_HOUR
    capacity = (
        "\n".join(f"- {warning}" for warning in warnings)
        if warnings
        else "Every rate fits the API's throttling and the ETL's timeout."
    )
    assumption_rows = "\n".join(
        f"| `{field.name}` | {getattr(assumptions, field.name):g} |"
        for field in dataclasses.fields(assumptions)
    )
    return f"""# What the platform costs

<!-- Generated by `make cost` (python -m tools.cost --write docs/cost.md); do not edit.
     tests/test_cost.py fails when this file is not what the script writes. -->

Monthly cost (730 hours) of the deployment that `inventories/aws` describes, in
{prices.region}, at list prices from
[files/prices/{prices.region}.yml](../files/prices/{prices.region}.yml) (priced on
{prices.priced_on}, each price with its AWS pricing page; written without network access:
**re-check every figure against its page** before deciding on it). No free tier is counted, and
data transfer is not priced (the ingest receives, which is free; everything else stays in the
region, and the S3 gateway endpoint is free). Storage lines are the steady state, once the
lifecycle and the log retention are full; the first months cost less.

The table follows the variables: `tools/cost.py` reads them from the inventory with Ansible
(`python -m tools.cost --inventory inventories/aws`), so a changed instance type, endpoint list,
memory size, schedule, lifecycle, retention or alarm list changes its line here after `make cost`.

{table(lines, EVENT_RATES)}

## Against the target

At {TARGET_EVENTS_PER_SECOND} events/s the default deployment costs **{usd(at_target)}** a month,
{verdict} ({usd(by_rate[10])} at 10 events/s, {usd(by_rate[1000])} at 1,000). The part that
does not depend on traffic (the host, its volumes, the interface endpoints, alarms and metrics)
is {usd(fixed_total)} alone, so no traffic at all stays within the target with today's settings.
The largest lines at {TARGET_EVENTS_PER_SECOND} events/s:

{largest}

The ingest writes one S3 object per request, so the per-request lines (S3 PUT, API Gateway, the
ingest's logs and invocations) grow with requests, not bytes: how many events the tracker puts in
a request matters more than any instance size. The interface endpoints cannot go while the host
is reached through Session Manager only (no public IP, no NAT).

What brings the total at {TARGET_EVENTS_PER_SECOND} events/s down, each computed by the same
script (total, and the change):

{chr(10).join(savings(deployment, assumptions, prices))}

Even then, {TARGET_EVENTS_PER_SECOND} events/s ({millions(target_events)} events a month) does not
fit in {usd(TARGET_USD_PER_MONTH)} while every request is an API request, an invocation and an S3
object, and the traffic-independent part alone is above it.

A t4g (Graviton) host needs the arm64 Ubuntu AMI (`compute_ami_ssm_parameter`) and arm64 packages
in the package mirror.

## Capacity at these rates

{capacity}

## Assumptions

What the inventory cannot say, with their defaults in `tools/cost.py` (`Assumptions`, each with
its source there); `--events-per-request` overrides the first:

| assumption | value |
|---|---:|
{assumption_rows}
"""


# --- Reading the inventory ------------------------------------------------------------------

INVENTORY_VARIABLES = [
    "aws_region",
    "compute_dwh_instance_type",
    "compute_dwh_root_volume_gb",
    "compute_dwh_data_volume_gb",
    "compute_oltp_enabled",
    "compute_oltp_instance_type",
    "compute_oltp_root_volume_gb",
    "network_interface_endpoint_services",
    "network_bootstrap_nat_enabled",
    "lambdas_architecture",
    "lambdas_ingest_memory_mb",
    "lambdas_etl_memory_mb",
    "lambdas_etl_timeout_seconds",
    "lambdas_log_retention_days",
    "schedule_expression",
    "storage_raw_bucket_versioning",
    "storage_raw_transition_days",
    "storage_raw_transition_storage_class",
    "storage_raw_expiration_days",
    "storage_raw_noncurrent_expiration_days",
    "api_access_log_retention_days",
    "api_throttling_rate_limit",
    "monitoring_alarms",
]


def deployment_from_variables(values: dict[str, Any]) -> Deployment:
    return Deployment(
        region=values["aws_region"],
        dwh_instance_type=values["compute_dwh_instance_type"],
        dwh_volume_gb=int(values["compute_dwh_root_volume_gb"])
        + int(values["compute_dwh_data_volume_gb"]),
        oltp_enabled=bool(values["compute_oltp_enabled"]),
        oltp_instance_type=values["compute_oltp_instance_type"],
        oltp_volume_gb=int(values["compute_oltp_root_volume_gb"]),
        interface_endpoints=len(values["network_interface_endpoint_services"]),
        # network_availability_zone: every subnet, and so every endpoint, lives in one zone.
        availability_zones=1,
        nat_enabled=bool(values["network_bootstrap_nat_enabled"]),
        lambda_architecture=values["lambdas_architecture"],
        ingest_memory_mb=int(values["lambdas_ingest_memory_mb"]),
        etl_memory_mb=int(values["lambdas_etl_memory_mb"]),
        etl_timeout_seconds=int(values["lambdas_etl_timeout_seconds"]),
        etl_runs_per_hour=runs_per_hour(values["schedule_expression"]),
        raw_versioning=bool(values["storage_raw_bucket_versioning"]),
        raw_transition_days=int(values["storage_raw_transition_days"]),
        raw_transition_storage_class=values["storage_raw_transition_storage_class"],
        raw_expiration_days=int(values["storage_raw_expiration_days"]),
        raw_noncurrent_expiration_days=int(values["storage_raw_noncurrent_expiration_days"]),
        function_log_retention_days=int(values["lambdas_log_retention_days"]),
        api_log_retention_days=int(values["api_access_log_retention_days"]),
        # playbooks/monitoring.yml makes every alarm of monitoring_alarms and the API's 5xx alarm.
        alarms=len(values["monitoring_alarms"]) + 1,
        api_rate_limit=int(values["api_throttling_rate_limit"]),
    )


def read_deployment(inventory: str = DEFAULT_INVENTORY) -> Deployment:
    return deployment_from_variables(render_variables(INVENTORY_VARIABLES, inventory))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", default=DEFAULT_INVENTORY)
    parser.add_argument(
        "--events-per-request",
        type=float,
        default=Assumptions.events_per_request,
        help="events the tracker sends in one request (default: %(default)s)",
    )
    parser.add_argument("--write", type=Path, help="write the document here instead of printing")
    arguments = parser.parse_args(argv)
    deployment = read_deployment(arguments.inventory)
    assumptions = Assumptions(events_per_request=arguments.events_per_request)
    text = document(deployment, assumptions, load_prices(deployment.region))
    if arguments.write:
        arguments.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

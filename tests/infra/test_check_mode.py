"""site.yml --tags infra --check --diff on a fresh emulated account: it runs without error and
creates nothing. Stages whose prerequisites do not exist yet end early (check mode cannot
predict a subnet without its VPC), after reporting what they would create."""

from __future__ import annotations

import pytest

from tests.fixtures.ansible import PlaybookRun
from tests.fixtures.aws import MotoServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def check_run(run_on_moto) -> PlaybookRun:
    return run_on_moto("site.yml", "--tags", "infra", "--check", "--diff")


def test_check_mode_on_a_fresh_account_succeeds(check_run: PlaybookRun):
    assert check_run.returncode == 0, check_run.explain()
    assert check_run.failures == []


def test_check_mode_reports_what_it_would_create(check_run: PlaybookRun):
    changed = {result.task for result in check_run.task_results if result.changed}
    assert "Ensure the VPC exists" in changed
    assert "Ensure each warehouse password exists as a SecureString parameter" in changed


def test_check_mode_creates_nothing(check_run: PlaybookRun, infra_moto: MotoServer):
    ec2 = infra_moto.client("ec2")
    assert [v for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
    assert infra_moto.client("s3").list_buckets()["Buckets"] == []
    assert infra_moto.client("iam").list_roles()["Roles"] == []
    assert infra_moto.client("ssm").describe_parameters()["Parameters"] == []
    assert infra_moto.client("lambda").list_functions()["Functions"] == []
    assert infra_moto.client("apigatewayv2").get_apis()["Items"] == []
    assert infra_moto.client("events").list_rules()["Rules"] == []
    assert infra_moto.client("sns").list_topics()["Topics"] == []


# --- The host stages on an account without the DWH host ------------------------------------------


@pytest.fixture(scope="module")
def host_stage_without_host(check_run, run_on_moto) -> PlaybookRun:
    """playbooks/dwh.yml for real on the still empty account: no instance to configure."""
    return run_on_moto("playbooks/dwh.yml")


def test_a_host_stage_without_the_dwh_host_fails_and_says_to_run_compute(host_stage_without_host):
    # Before discovery, `hosts: dwh` matched nothing and the run ended green with no warehouse.
    assert host_stage_without_host.returncode != 0
    (failure,) = host_stage_without_host.failures
    assert failure.task == "Require exactly one DWH host of the stack"
    assert "it found 0" in failure.result["msg"]
    assert "playbooks/compute.yml" in failure.result["msg"]


def test_a_host_stage_in_check_mode_without_the_dwh_host_has_nothing_to_do(run_on_moto):
    run = run_on_moto("playbooks/dwh.yml", "--check")
    assert run.returncode == 0, run.explain()
    assert run.failures == []

"""Preflight (playbooks/preflight.yml): on an empty emulated account the local inventory passes;
a misconfigured inventory (example values, a bucket name another account holds) fails once, one
line per problem; check mode gives the same answers. Only preflight runs: nothing is provisioned.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.fixtures.ansible import REPO_ROOT
from tests.fixtures.aws import REGION, MotoServer

PREFLIGHT = "playbooks/preflight.yml"
# The account moto gives any other request when the header names it.
OTHER_ACCOUNT = "111111111111"
MISCONFIGURED = (
    "-e",
    '{"api_cors_allow_origins": ["https://shop.example.com"]}',
    # What the aws inventory requires and the local one does not: an alarm e-mail.
    "-e",
    '{"preflight_required_variables": ["monitoring_alarm_emails"]}',
)


def the_failure(run) -> dict:
    [failure] = run.failures
    assert failure.task == "Fail once with every problem found", run.explain()
    return failure.result


def other_accounts_s3(server: MotoServer):
    """An S3 client of another account of the same emulator (moto's x-moto-account-id)."""
    client = server.client("s3")

    def as_other_account(request, **_):
        request.headers["x-moto-account-id"] = OTHER_ACCOUNT

    client.meta.events.register("before-sign.s3.*", as_other_account)
    return client


@pytest.fixture
def taken_raw_bucket_name(infra_moto: MotoServer) -> Iterator[str]:
    """The local inventory's raw bucket name, created by another account first."""
    account = infra_moto.client("sts").get_caller_identity()["Account"]
    name = f"clickstream-local-raw-{account}-{REGION}"
    other = other_accounts_s3(infra_moto)
    other.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield name
    other.delete_bucket(Bucket=name)


def test_the_local_inventory_passes_on_an_empty_account(run_on_moto):
    run = run_on_moto(PREFLIGHT)
    assert run.returncode == 0, run.explain()


def test_a_misconfigured_inventory_fails_once_with_one_line_per_problem(
    run_on_moto, taken_raw_bucket_name
):
    run = run_on_moto(PREFLIGHT, *MISCONFIGURED)

    assert run.returncode != 0
    assert the_failure(run)["msg"].splitlines() == [
        f"S3: the bucket name {taken_raw_bucket_name} belongs to another account - set its "
        "storage_*_bucket_name in the inventory to a free name",
        "Inventory: api_cors_allow_origins still holds its example value - set it to your own",
        "Inventory: monitoring_alarm_emails is empty - set it (the addresses that receive the "
        "alarms)",
    ]


def test_a_stack_name_that_cannot_be_part_of_names_is_a_problem(run_on_moto):
    run = run_on_moto(PREFLIGHT, "-e", "platform_stack=Prod_Stack")
    assert the_failure(run)["msg"].splitlines() == [
        "platform_stack: Prod_Stack is not 1-12 lowercase letters, digits and hyphens - set "
        "CLICKSTREAM_STACK to such a name (it is part of every resource name)"
    ]


def test_check_mode_gives_the_same_answers(run_on_moto, taken_raw_bucket_name):
    passing = run_on_moto(PREFLIGHT, "--check", "-e", "platform_stack=other")
    failing = run_on_moto(PREFLIGHT, "--check", *MISCONFIGURED)

    assert passing.returncode == 0, passing.explain()
    assert len(the_failure(failing)["msg"].splitlines()) == 3


def test_site_imports_preflight_first_under_the_preflight_and_infra_tags():
    site = yaml.safe_load((REPO_ROOT / "site.yml").read_text())
    [play] = yaml.safe_load((REPO_ROOT / PREFLIGHT).read_text())
    assert site[0]["ansible.builtin.import_playbook"] == PREFLIGHT
    assert set(play["tags"]) == {"preflight", "infra"}

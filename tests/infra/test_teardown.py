"""playbooks/teardown.yml: refuses without confirmation; with it, removes what site.yml made
(read back: the VPC, instances, functions, roles, buckets, ... are gone) and nothing else."""

from __future__ import annotations

import pytest

from tests.fixtures.ansible import PlaybookRun
from tests.fixtures.aws import REGION, MotoServer

pytestmark = pytest.mark.slow

UNRELATED_BUCKET = "someone-elses-bucket"


@pytest.fixture(scope="module")
def provisioned(run_on_moto, infra_moto: MotoServer) -> MotoServer:
    infra_moto.client("s3").create_bucket(
        Bucket=UNRELATED_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    run = run_on_moto("site.yml", "--tags", "infra")
    assert run.returncode == 0, run.explain()
    return infra_moto


@pytest.fixture(scope="module")
def refused(run_on_moto, provisioned) -> PlaybookRun:
    return run_on_moto("playbooks/teardown.yml")


@pytest.fixture(scope="module")
def torn_down(run_on_moto, provisioned, refused) -> PlaybookRun:
    return run_on_moto("playbooks/teardown.yml", "-e", "teardown_confirm=yes")


def stack_vpcs(aws: MotoServer) -> list[dict]:
    return aws.client("ec2").describe_vpcs(
        Filters=[{"Name": "tag:Project", "Values": ["clickstream"]}]
    )["Vpcs"]


def test_teardown_without_confirmation_refuses(refused: PlaybookRun):
    assert refused.returncode != 0
    (failure,) = refused.failures
    assert failure.task == "Refuse to remove anything without confirmation"
    assert "teardown_confirm=yes" in failure.result["msg"]


def test_refused_teardown_removed_nothing(refused, provisioned: MotoServer):
    assert len(stack_vpcs(provisioned)) == 1
    assert len(provisioned.client("lambda").list_functions()["Functions"]) == 2


def test_confirmed_teardown_succeeds(torn_down: PlaybookRun):
    assert torn_down.returncode == 0, torn_down.explain()


def test_teardown_removes_the_network(torn_down, provisioned: MotoServer):
    ec2 = provisioned.client("ec2")
    assert stack_vpcs(provisioned) == []
    live = {"Name": "state", "Values": ["pending", "available"]}
    assert ec2.describe_nat_gateways(Filters=[live])["NatGateways"] == []
    endpoints = ec2.describe_vpc_endpoints()["VpcEndpoints"]
    assert [e for e in endpoints if e["State"].lower() != "deleted"] == []
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"] != "default"] == []


def test_teardown_terminates_the_instances(torn_down, provisioned: MotoServer):
    reservations = provisioned.client("ec2").describe_instances()["Reservations"]
    states = {i["State"]["Name"] for r in reservations for i in r["Instances"]}
    assert states == {"terminated"}


def test_teardown_removes_the_serverless_side(torn_down, provisioned: MotoServer):
    assert provisioned.client("lambda").list_functions()["Functions"] == []
    assert provisioned.client("apigatewayv2").get_apis()["Items"] == []
    assert provisioned.client("events").list_rules()["Rules"] == []
    assert provisioned.client("sqs").list_queues().get("QueueUrls", []) == []
    assert provisioned.client("sns").list_topics()["Topics"] == []
    assert provisioned.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert provisioned.client("logs").describe_log_groups()["logGroups"] == []


def test_teardown_removes_roles_parameters_and_buckets_only_of_the_stack(
    torn_down, provisioned: MotoServer
):
    iam = provisioned.client("iam")
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    assert provisioned.client("ssm").describe_parameters()["Parameters"] == []
    buckets = provisioned.client("s3").list_buckets()["Buckets"]
    assert [b["Name"] for b in buckets] == [UNRELATED_BUCKET]

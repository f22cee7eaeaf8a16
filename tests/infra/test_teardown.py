"""playbooks/teardown.yml: refuses without confirmation; with it, removes what site.yml made
(read back: the VPC, instances, functions, roles, buckets, ... are gone) and nothing else, in the
order that leaves nothing stranded (functions, their network interfaces, the VPC, roles last).

A second stack (staging) is provisioned in the same emulated account beside the module's own
(local), selected the way an operator selects one, with CLICKSTREAM_STACK; tearing it down leaves
the other stack exactly as it was."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.ansible import PlaybookRun, extra_vars, run_playbook
from tests.fixtures.aws import REGION, MotoServer, aws_environment

pytestmark = pytest.mark.slow

UNRELATED_BUCKET = "someone-elses-bucket"
SECOND_STACK = "staging"


@pytest.fixture(scope="module")
def provisioned(run_on_moto, infra_moto: MotoServer) -> MotoServer:
    infra_moto.client("s3").create_bucket(
        Bucket=UNRELATED_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    run = run_on_moto("site.yml", "--tags", "infra")
    assert run.returncode == 0, run.explain()
    return infra_moto


@pytest.fixture(scope="module")
def run_on_second_stack(infra_moto: MotoServer, tmp_path_factory: pytest.TempPathFactory):
    """Run a playbook for the second stack: CLICKSTREAM_STACK selects it for group_vars and the
    aws_ec2 inventory alike (no -e platform_stack)."""
    temp_dir = tmp_path_factory.mktemp("ansible-second-stack")

    def run(playbook: str, *arguments: str) -> PlaybookRun:
        return run_playbook(
            playbook,
            "-i",
            "inventories/local",
            *extra_vars(
                {"lambdas_build_dir": str(temp_dir / "lambda-build"), "lambdas_etl_dwh_host": ""}
            ),
            *arguments,
            environment={
                **aws_environment(infra_moto.endpoint_url),
                "CLICKSTREAM_STACK": SECOND_STACK,
            },
            temp_dir=temp_dir,
        )

    return run


def account_snapshot(aws: MotoServer) -> dict[str, Any]:
    """What the account holds, read with boto3: every kind of resource the stages make, by its
    identity and the settings a stage would change, without what the emulator changes by itself
    (state timestamps) or keeps after a deletion (terminated instances, deleted endpoints)."""
    ec2 = aws.client("ec2")
    live_instances = [
        instance
        for reservation in ec2.describe_instances()["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] != "terminated"
    ]
    parameters = [
        parameter
        for page in aws.client("ssm").get_paginator("describe_parameters").paginate()
        for parameter in page["Parameters"]
    ]
    return {
        "vpcs": sorted(
            (v["VpcId"], v["CidrBlock"], str(v.get("Tags"))) for v in ec2.describe_vpcs()["Vpcs"]
        ),
        "subnets": sorted(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]),
        "route_tables": sorted(
            t["RouteTableId"] for t in ec2.describe_route_tables()["RouteTables"]
        ),
        "security_groups": sorted(
            (g["GroupId"], g["GroupName"], str(g["IpPermissions"]))
            for g in ec2.describe_security_groups()["SecurityGroups"]
        ),
        "endpoints": sorted(
            e["VpcEndpointId"]
            for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]
            if e["State"].lower() != "deleted"
        ),
        "instances": sorted(i["InstanceId"] for i in live_instances),
        "functions": sorted(
            (f["FunctionName"], f["CodeSha256"], f["Role"], str(f.get("VpcConfig")))
            for f in aws.client("lambda").list_functions()["Functions"]
        ),
        "roles": sorted(
            (r["RoleName"], r["RoleId"]) for r in aws.client("iam").list_roles()["Roles"]
        ),
        "instance_profiles": sorted(
            p["InstanceProfileName"]
            for p in aws.client("iam").list_instance_profiles()["InstanceProfiles"]
        ),
        "buckets": sorted(b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]),
        "parameters": sorted((p["Name"], p["Version"]) for p in parameters),
        "alarms": sorted(
            (a["AlarmName"], a["MetricName"], str(a.get("Dimensions")), a["Threshold"])
            for a in aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
        ),
        "rules": sorted((r["Name"], r["Arn"]) for r in aws.client("events").list_rules()["Rules"]),
        "apis": sorted(
            (a["Name"], a["ApiId"]) for a in aws.client("apigatewayv2").get_apis()["Items"]
        ),
        "queues": sorted(aws.client("sqs").list_queues().get("QueueUrls", [])),
        "topics": sorted(t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]),
        "log_groups": sorted(
            g["logGroupName"] for g in aws.client("logs").describe_log_groups()["logGroups"]
        ),
    }


@pytest.fixture(scope="module")
def first_stack_before(provisioned: MotoServer) -> dict[str, Any]:
    return account_snapshot(provisioned)


@pytest.fixture(scope="module")
def transfer_key_arn(provisioned: MotoServer) -> str:
    """A customer managed key of the account, for the second stack's transfer bucket."""
    key = provisioned.client("kms").create_key(Description="the staging stack's transfer files")
    return key["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def second_stack(
    first_stack_before, run_on_second_stack, transfer_key_arn: str, provisioned: MotoServer
) -> PlaybookRun:
    return run_on_second_stack(
        "site.yml",
        "--tags",
        "infra",
        *extra_vars({"storage_ssm_transfer_kms_key_id": transfer_key_arn}),
    )


@pytest.fixture(scope="module")
def second_stack_snapshot(second_stack, provisioned: MotoServer) -> dict[str, Any]:
    return account_snapshot(provisioned)


@pytest.fixture(scope="module")
def second_stack_torn_down(second_stack_snapshot, run_on_second_stack) -> PlaybookRun:
    return run_on_second_stack("playbooks/teardown.yml", "-e", "teardown_confirm=yes")


@pytest.fixture(scope="module")
def refused(run_on_moto, second_stack_torn_down) -> PlaybookRun:
    return run_on_moto("playbooks/teardown.yml")


@pytest.fixture(scope="module")
def torn_down(run_on_moto, provisioned, refused) -> PlaybookRun:
    return run_on_moto("playbooks/teardown.yml", "-e", "teardown_confirm=yes")


def stack_vpcs(aws: MotoServer) -> list[dict]:
    return aws.client("ec2").describe_vpcs(
        Filters=[{"Name": "tag:Project", "Values": ["clickstream"]}]
    )["Vpcs"]


# --- Two stacks in one account -------------------------------------------------------------------


def test_a_second_stack_provisions_beside_the_first(second_stack: PlaybookRun):
    assert second_stack.returncode == 0, second_stack.explain()


def test_the_second_stack_has_resources_of_its_own(second_stack_snapshot, first_stack_before):
    # Nothing of the first stack was adopted or changed: everything it had is still there...
    for kind, resources in first_stack_before.items():
        assert set(resources) <= set(second_stack_snapshot[kind]), kind
    # ... and the second stack made its own of every named kind, named after its stack.
    new = {
        kind: set(second_stack_snapshot[kind]) - set(first_stack_before[kind])
        for kind in first_stack_before
    }
    assert len(new["vpcs"]) == 1
    assert {name for name, *_ in new["functions"]} == {
        "clickstream-staging-ingest",
        "clickstream-staging-etl",
    }
    assert {name for name, _ in new["roles"]} == {
        "clickstream-staging-ingest-lambda",
        "clickstream-staging-etl-lambda",
        "clickstream-staging-dwh-instance",
    }
    assert {name for name, _ in new["rules"]} == {"clickstream-staging-etl-hourly"}
    assert {name for name, _ in new["apis"]} == {"clickstream-staging-http-api"}
    assert len(new["instances"]) == 1
    # Each of these kinds holds only the second stack's names.
    assert {b.split("-")[1] for b in new["buckets"]} == {SECOND_STACK}
    assert {a.split("-")[1] for a, *_ in new["alarms"]} == {SECOND_STACK}
    assert {p.split("/")[2] for p, _ in new["parameters"]} == {SECOND_STACK}


def test_a_transfer_bucket_may_have_a_customer_key_of_its_own(
    second_stack_snapshot, first_stack_before, transfer_key_arn: str, provisioned: MotoServer
):
    s3 = provisioned.client("s3")
    (transfer_bucket,) = [
        name
        for name in set(second_stack_snapshot["buckets"]) - set(first_stack_before["buckets"])
        if "-transfer-" in name
    ]
    (rule,) = s3.get_bucket_encryption(Bucket=transfer_bucket)["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": transfer_key_arn,
    }
    # The other buckets keep the inventory's storage_encryption (AES256).
    raw_bucket = transfer_bucket.replace("-transfer-", "-raw-")
    (raw_rule,) = s3.get_bucket_encryption(Bucket=raw_bucket)["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert raw_rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_tearing_down_the_second_stack_leaves_the_first_unchanged(
    second_stack_torn_down: PlaybookRun, first_stack_before, provisioned: MotoServer
):
    assert second_stack_torn_down.returncode == 0, second_stack_torn_down.explain()
    assert account_snapshot(provisioned) == first_stack_before


# --- Teardown of the module's stack --------------------------------------------------------------


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


def first_result(run: PlaybookRun, task: str, *, changed: bool) -> int:
    """The position of the task's first result (its first one that changed something, with
    ``changed``) among the run's results, in the order they ran."""
    for position, result in enumerate(run.task_results):
        if result.task == task and (result.changed or not changed):
            return position
    raise AssertionError(f"no {'changed ' if changed else ''}result of {task!r}")


def test_teardown_removes_functions_then_waits_for_their_interfaces_then_the_vpc_then_roles(
    torn_down: PlaybookRun,
):
    functions = first_result(torn_down, "Ensure the functions are gone", changed=True)
    interfaces = first_result(
        torn_down, "Wait until Lambda ETL's network interfaces are released", changed=False
    )
    instances = first_result(torn_down, "Ensure the stack's instances are terminated", changed=True)
    vpc = first_result(torn_down, "Ensure the VPC is gone", changed=True)
    roles = first_result(torn_down, "Ensure the roles and their policies are gone", changed=True)
    assert functions < interfaces < instances < vpc < roles
    # Roles and instance profiles last: nothing but them changed after the first went.
    profiles = first_result(
        torn_down, "Ensure the instance profiles named after the roles are gone", changed=True
    )
    after_iam = {
        result.task for result in torn_down.task_results[min(profiles, roles) :] if result.changed
    }
    assert after_iam == {
        "Ensure the instance profiles named after the roles are gone",
        "Ensure the roles and their policies are gone",
    }


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

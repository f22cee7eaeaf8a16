"""site.yml --tags infra against an emulated account: the run succeeds, a second run changes
nothing, and what it made has the properties of the design (seed 002/003 and issue 3)."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from secrets import token_urlsafe
from typing import Any

import pytest

from tests.fixtures.ansible import ANSIBLE_PLAYBOOK, REPO_ROOT, PlaybookRun, extra_vars
from tests.fixtures.aws import MotoServer, aws_environment, stack_bucket_name
from tools.inventory_values import render_variables

pytestmark = pytest.mark.slow

VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDRS = {"public": "10.0.1.0/24", "analytics": "10.0.2.0/24", "etl": "10.0.3.0/24"}
RAW_BUCKET = stack_bucket_name("raw")
MEDIA_BUCKET = stack_bucket_name("media")
SSM_TRANSFER_BUCKET = stack_bucket_name("transfer")
ETL_FUNCTION = "clickstream-local-etl"
INGEST_FUNCTION = "clickstream-local-ingest"
PASSWORD_PARAMETERS = {
    "/clickstream/local/warehouse/etl-writer-password",
    "/clickstream/local/warehouse/dashboard-reader-password",
}
# Created by earlier versions and read by nothing: the secrets stage deletes it
# (secrets_retired_parameters).
RETIRED_ADMIN_PASSWORD_PARAMETER = "/clickstream/local/warehouse/postgres-admin-password"
ETL_PASSWORD_PARAMETER = "/clickstream/local/warehouse/etl-writer-password"
ANSIBLE_INVENTORY = ANSIBLE_PLAYBOOK.with_name("ansible-inventory")
PRIVATE_SECURITY_GROUPS = (
    "clickstream-local-dwh",
    "clickstream-local-lambda-etl",
    "clickstream-local-vpc-endpoints",
)


@pytest.fixture(scope="module")
def runs(run_on_moto) -> tuple[PlaybookRun, PlaybookRun]:
    first = run_on_moto("site.yml", "--tags", "infra")
    assert first.returncode == 0, first.explain()
    second = run_on_moto("site.yml", "--tags", "infra")
    return first, second


@pytest.fixture(scope="module")
def aws(runs, infra_moto: MotoServer) -> MotoServer:
    """The account after both runs."""
    return infra_moto


# --- The runs ----------------------------------------------------------------------------------


def test_first_run_provisions_every_aws_stage(runs):
    first, _ = runs
    assert first.failures == []
    assert first.play_names[:11] == [
        "Preflight — the account, the controller and the inventory",
        "Network — VPC, subnets, routes and endpoints",
        "Security groups — DWH, Lambda ETL and OLTP",
        "Storage — S3 buckets",
        "Secrets — warehouse passwords in SSM Parameter Store",
        "IAM — roles of the Lambdas and the DWH host",
        "Compute — the DWH + Shiny host and the optional OLTP host",
        "Lambdas — Ingest and ETL",
        "API — the HTTP API in front of Lambda Ingest",
        "Schedule — the hourly ETL rule",
        "Monitoring — alarms and where they go",
    ]


def test_second_run_succeeds_and_changes_nothing_in_any_play(runs):
    _, second = runs
    assert second.returncode == 0, second.explain()
    changed = [f"{r.play} / {r.task}" for r in second.task_results if r.changed]
    assert changed == []
    assert set(second.changed_by_play().values()) == {0}


def test_no_task_output_shows_a_password(runs, aws: MotoServer):
    ssm = aws.client("ssm")
    passwords = [
        ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        for name in PASSWORD_PARAMETERS
    ]
    for run in runs:
        text = json.dumps(run.report) + run.stderr
        assert not [password for password in passwords if password in text]


# --- Network -----------------------------------------------------------------------------------


def stack_filter(name: str | None = None) -> list[dict[str, Any]]:
    filters = [
        {"Name": "tag:Project", "Values": ["clickstream"]},
        {"Name": "tag:Stack", "Values": ["local"]},
    ]
    if name:
        filters.append({"Name": "tag:Name", "Values": [name]})
    return filters


def the_vpc(aws: MotoServer) -> dict[str, Any]:
    (vpc,) = aws.client("ec2").describe_vpcs(Filters=stack_filter("clickstream-local-vpc"))["Vpcs"]
    return vpc


def subnets_by_tier(aws: MotoServer) -> dict[str, dict[str, Any]]:
    subnets = aws.client("ec2").describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [the_vpc(aws)["VpcId"]]}]
    )["Subnets"]
    return {tag_value(subnet, "Tier"): subnet for subnet in subnets}


def tag_value(resource: dict[str, Any], key: str) -> str | None:
    return next((tag["Value"] for tag in resource.get("Tags", []) if tag["Key"] == key), None)


def route_tables_by_name(aws: MotoServer) -> dict[str, dict[str, Any]]:
    tables = aws.client("ec2").describe_route_tables(Filters=stack_filter())["RouteTables"]
    return {tag_value(table, "Name"): table for table in tables}


def test_vpc_has_the_seed_cidr_and_name(aws):
    assert the_vpc(aws)["CidrBlock"] == VPC_CIDR


def test_subnets_have_the_designed_cidrs_and_map_no_public_ips(aws):
    subnets = subnets_by_tier(aws)
    assert {tier: subnet["CidrBlock"] for tier, subnet in subnets.items()} == SUBNET_CIDRS
    assert not any(subnet["MapPublicIpOnLaunch"] for subnet in subnets.values())


def test_public_route_table_sends_the_internet_to_the_internet_gateway(aws):
    (igw,) = aws.client("ec2").describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [the_vpc(aws)["VpcId"]]}]
    )["InternetGateways"]
    public = route_tables_by_name(aws)["clickstream-local-rtb-public"]
    default_routes = [r for r in public["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert [r["GatewayId"] for r in default_routes] == [igw["InternetGatewayId"]]
    assert [a["SubnetId"] for a in public["Associations"]] == [
        subnets_by_tier(aws)["public"]["SubnetId"]
    ]


@pytest.mark.parametrize(
    ("table_name", "tier"),
    [
        ("clickstream-local-rtb-private1-analytics", "analytics"),
        ("clickstream-local-rtb-private2-etl", "etl"),
    ],
)
def test_private_route_tables_have_no_default_route(aws, table_name, tier):
    table = route_tables_by_name(aws)[table_name]
    assert not [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert [a["SubnetId"] for a in table["Associations"]] == [
        subnets_by_tier(aws)[tier]["SubnetId"]
    ]


def test_no_nat_gateway_exists_by_default(aws):
    nat_gateways = aws.client("ec2").describe_nat_gateways(
        Filters=[{"Name": "state", "Values": ["pending", "available"]}]
    )["NatGateways"]
    assert nat_gateways == []


def endpoints(aws: MotoServer) -> dict[str, dict[str, Any]]:
    found = aws.client("ec2").describe_vpc_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [the_vpc(aws)["VpcId"]]}]
    )["VpcEndpoints"]
    return {endpoint["ServiceName"].rsplit(".", 1)[1]: endpoint for endpoint in found}


def test_s3_gateway_endpoint_serves_both_private_route_tables(aws):
    s3 = endpoints(aws)["s3"]
    tables = route_tables_by_name(aws)
    assert s3["VpcEndpointType"] == "Gateway"
    assert sorted(s3["RouteTableIds"]) == sorted(
        tables[name]["RouteTableId"]
        for name in (
            "clickstream-local-rtb-private1-analytics",
            "clickstream-local-rtb-private2-etl",
        )
    )


def test_ssm_interface_endpoints_have_private_dns_in_the_analytics_subnet(aws):
    found = endpoints(aws)
    analytics = subnets_by_tier(aws)["analytics"]["SubnetId"]
    endpoints_group = security_groups(aws)["clickstream-local-vpc-endpoints"]["GroupId"]
    for service in ("ssm", "ssmmessages", "ec2messages"):
        endpoint = found[service]
        assert endpoint["VpcEndpointType"] == "Interface"
        assert endpoint["PrivateDnsEnabled"] is True
        assert endpoint["SubnetIds"] == [analytics]
        assert [group["GroupId"] for group in endpoint["Groups"]] == [endpoints_group]


# --- Security groups ---------------------------------------------------------------------------


def security_groups(aws: MotoServer) -> dict[str, dict[str, Any]]:
    groups = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [the_vpc(aws)["VpcId"]]}]
    )["SecurityGroups"]
    return {group["GroupName"]: group for group in groups}


def opens(permission: dict[str, Any], port: int) -> bool:
    if permission["IpProtocol"] == "-1":
        return True
    return permission.get("FromPort", 0) <= port <= permission.get("ToPort", 65535)


def test_dwh_admits_postgresql_from_the_etl_group_only(aws):
    groups = security_groups(aws)
    (rule,) = groups["clickstream-local-dwh"]["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)
    assert [pair["GroupId"] for pair in rule["UserIdGroupPairs"]] == [
        groups["clickstream-local-lambda-etl"]["GroupId"]
    ]
    assert rule["IpRanges"] == []


@pytest.mark.parametrize("group_name", PRIVATE_SECURITY_GROUPS)
@pytest.mark.parametrize("port", [22, 3838])
def test_no_private_group_opens_ssh_or_shiny(aws, group_name, port):
    permissions = security_groups(aws)[group_name]["IpPermissions"]
    assert not [p for p in permissions if opens(p, port)]


def test_lambda_etl_group_admits_nothing_and_reaches_the_warehouse(aws):
    groups = security_groups(aws)
    etl = groups["clickstream-local-lambda-etl"]
    assert etl["IpPermissions"] == []
    postgres = [p for p in etl["IpPermissionsEgress"] if opens(p, 5432)]
    assert [pair["GroupId"] for p in postgres for pair in p["UserIdGroupPairs"]] == [
        groups["clickstream-local-dwh"]["GroupId"]
    ]


def test_endpoint_group_admits_https_from_the_vpc_only(aws):
    (rule,) = security_groups(aws)["clickstream-local-vpc-endpoints"]["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (443, 443)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == [VPC_CIDR]


def test_oltp_group_is_closed_without_trusted_networks(aws):
    assert security_groups(aws)["clickstream-local-oltp"]["IpPermissions"] == []


# --- Storage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", [RAW_BUCKET, MEDIA_BUCKET, SSM_TRANSFER_BUCKET])
def test_bucket_is_encrypted_private_and_tls_only(aws, bucket):
    s3 = aws.client("s3")
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    (statement,) = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert sorted(statement["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]


def test_raw_bucket_is_versioned_and_tiers_then_expires_its_events(aws):
    s3 = aws.client("s3")
    assert s3.get_bucket_versioning(Bucket=RAW_BUCKET)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=RAW_BUCKET)["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Filter"]["Prefix"] == "events/"
    assert rule["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"}]
    assert rule["Expiration"] == {"Days": 365}
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30


def test_ssm_transfer_files_expire_after_a_day(aws):
    (rule,) = aws.client("s3").get_bucket_lifecycle_configuration(Bucket=SSM_TRANSFER_BUCKET)[
        "Rules"
    ]
    assert rule["Expiration"] == {"Days": 1}


# --- IAM and secrets ---------------------------------------------------------------------------


def inline_policy(aws: MotoServer, role: str, policy: str) -> list[dict[str, Any]]:
    document = aws.client("iam").get_role_policy(RoleName=role, PolicyName=policy)
    policy_document = document["PolicyDocument"]
    if isinstance(policy_document, str):
        policy_document = json.loads(policy_document)
    return policy_document["Statement"]


def statements_on(statements: list[dict[str, Any]], service: str) -> list[dict[str, Any]]:
    def actions(statement):
        action = statement["Action"]
        return [action] if isinstance(action, str) else action

    return [s for s in statements if any(a.startswith(f"{service}:") for a in actions(s))]


def test_ingest_may_only_put_raw_objects_under_events(aws):
    statements = inline_policy(aws, "clickstream-local-ingest-lambda", "clickstream-ingest")
    (s3,) = statements_on(statements, "s3")
    assert (s3["Effect"], s3["Action"]) == ("Allow", "s3:PutObject")
    assert s3["Resource"] == f"arn:aws:s3:::{RAW_BUCKET}/events/*"
    assert {s["Sid"] for s in statements} == {"WriteRawEvents", "WriteOwnLogs"}
    attached = aws.client("iam").list_attached_role_policies(
        RoleName="clickstream-local-ingest-lambda"
    )
    assert attached["AttachedPolicies"] == []


def test_etl_may_only_list_and_read_events_and_read_its_own_password(aws):
    statements = inline_policy(aws, "clickstream-local-etl-lambda", "clickstream-etl")
    s3 = {s["Action"]: s for s in statements_on(statements, "s3")}
    assert set(s3) == {"s3:ListBucket", "s3:GetObject"}
    assert s3["s3:ListBucket"]["Resource"] == f"arn:aws:s3:::{RAW_BUCKET}"
    assert s3["s3:ListBucket"]["Condition"] == {"StringLike": {"s3:prefix": ["events/*"]}}
    assert s3["s3:GetObject"]["Resource"] == f"arn:aws:s3:::{RAW_BUCKET}/events/*"
    (ssm,) = statements_on(statements, "ssm")
    assert ssm["Action"] == "ssm:GetParameter"
    assert ssm["Resource"] == (
        f"arn:aws:ssm:ap-southeast-1:123456789012:parameter{ETL_PASSWORD_PARAMETER}"
    )
    (sqs,) = statements_on(statements, "sqs")
    assert sqs["Resource"].endswith(":clickstream-local-etl-dlq")


def test_etl_role_has_the_lambda_vpc_access_policy(aws):
    attached = aws.client("iam").list_attached_role_policies(
        RoleName="clickstream-local-etl-lambda"
    )
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == [
        "AWSLambdaVPCAccessExecutionRole"
    ]


# What SSM Agent needs for Session Manager (AWS's minimal instance policy), and ec2messages, the
# agent's older command channel (templates/iam/dwh_instance_policy.json.j2).
SESSION_MANAGER_ACTIONS = {
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
}
# What AmazonSSMManagedInstanceCore and the former transfer-bucket statement let the host do.
ACTIONS_THE_HOST_MUST_NOT_HAVE = (
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "kms:Decrypt",
)


def dwh_instance_role(aws: MotoServer) -> str:
    """The role of the account's one instance profile, the DWH host's."""
    (profile,) = aws.client("iam").list_instance_profiles()["InstanceProfiles"]
    (role,) = profile["Roles"]
    return role["RoleName"]


def dwh_instance_statements(aws: MotoServer) -> list[dict[str, Any]]:
    """Every statement of every inline policy of the DWH host's role."""
    role = dwh_instance_role(aws)
    names = aws.client("iam").list_role_policies(RoleName=role)["PolicyNames"]
    return [statement for name in names for statement in inline_policy(aws, role, name)]


def actions_of(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def test_dwh_instance_role_has_no_managed_policy(aws):
    # AmazonSSMManagedInstanceCore grants ssm:GetParameter(s) on every parameter of the account.
    attached = aws.client("iam").list_attached_role_policies(RoleName=dwh_instance_role(aws))
    assert attached["AttachedPolicies"] == []


def test_dwh_instance_role_allows_exactly_what_session_manager_needs(aws):
    statements = dwh_instance_statements(aws)
    assert {statement["Effect"] for statement in statements} == {"Allow"}
    assert not [s for s in statements if "NotAction" in s or "NotResource" in s]
    granted = [action for statement in statements for action in actions_of(statement)]
    assert sorted(granted) == sorted(SESSION_MANAGER_ACTIONS)


@pytest.mark.parametrize("action", ACTIONS_THE_HOST_MUST_NOT_HAVE)
def test_dwh_instance_role_cannot_read_parameters_transfer_objects_or_keys(aws, action):
    # A pattern in a statement ("ssm:Get*", "s3:*") would grant the action as well.
    granted = [a for s in dwh_instance_statements(aws) for a in actions_of(s)]
    assert [pattern for pattern in granted if fnmatch.fnmatchcase(action, pattern)] == []


def test_only_the_dwh_host_has_an_instance_profile(aws):
    # A profile for a Lambda role would let nothing in (its trust names lambda.amazonaws.com),
    # but it is one more thing in the account to audit.
    profiles = aws.client("iam").list_instance_profiles()["InstanceProfiles"]
    assert [profile["InstanceProfileName"] for profile in profiles] == [
        "clickstream-local-dwh-instance"
    ]


def test_no_postgres_admin_password_parameter_exists(aws):
    parameters = aws.client("ssm").describe_parameters()["Parameters"]
    assert RETIRED_ADMIN_PASSWORD_PARAMETER not in {p["Name"] for p in parameters}


def test_the_secrets_stage_deletes_a_deployed_stacks_admin_password_parameter(aws, run_on_moto):
    ssm = aws.client("ssm")
    ssm.put_parameter(
        Name=RETIRED_ADMIN_PASSWORD_PARAMETER, Value=token_urlsafe(24), Type="SecureString"
    )
    run = run_on_moto("playbooks/secrets.yml")
    assert run.returncode == 0, run.explain()
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=RETIRED_ADMIN_PASSWORD_PARAMETER)


def test_warehouse_passwords_are_secure_string_parameters(aws):
    parameters = aws.client("ssm").describe_parameters()["Parameters"]
    assert {p["Name"]: p["Type"] for p in parameters} == dict.fromkeys(
        PASSWORD_PARAMETERS, "SecureString"
    )


def test_second_run_kept_the_generated_passwords(runs):
    # overwrite_value: never. The first run created them; the second reported no change.
    _, second = runs
    (passwords,) = [
        r
        for r in second.task_results
        if r.task == "Ensure each warehouse password exists as a SecureString parameter"
    ]
    assert passwords.changed is False


# --- Lambdas -----------------------------------------------------------------------------------


def function(aws: MotoServer, name: str) -> dict[str, Any]:
    return aws.client("lambda").get_function(FunctionName=name)


def test_functions_run_this_machines_python_with_the_thin_handler(aws):
    # inventories/aws deploys python3.12; the local inventory builds for the Python of the
    # machine, whose local Lambda runtime (tools/local_platform) runs the zips.
    local_python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for name in (INGEST_FUNCTION, ETL_FUNCTION):
        configuration = function(aws, name)["Configuration"]
        assert (configuration["Runtime"], configuration["Handler"]) == (
            local_python,
            "handler.handler",
        )


def test_ingest_runs_outside_the_vpc_and_knows_the_raw_bucket(aws):
    configuration = function(aws, INGEST_FUNCTION)["Configuration"]
    assert not configuration.get("VpcConfig", {}).get("SubnetIds")
    assert configuration["Environment"]["Variables"] == {"RAW_BUCKET": RAW_BUCKET}


def test_etl_runs_in_the_etl_subnet_with_its_security_group(aws):
    vpc_config = function(aws, ETL_FUNCTION)["Configuration"]["VpcConfig"]
    assert vpc_config["SubnetIds"] == [subnets_by_tier(aws)["etl"]["SubnetId"]]
    assert vpc_config["SecurityGroupIds"] == [
        security_groups(aws)["clickstream-local-lambda-etl"]["GroupId"]
    ]


def test_etl_environment_names_the_password_parameter_and_holds_no_password(aws):
    variables = function(aws, ETL_FUNCTION)["Configuration"]["Environment"]["Variables"]
    assert variables == {
        "RAW_BUCKET": RAW_BUCKET,
        "DWH_HOST": dwh_instance(aws)["PrivateIpAddress"],
        "DWH_PORT": "5432",
        "DWH_USER": "clickstream_etl",
        "DWH_DATABASE": "clickstream_dw",
        "DWH_PASSWORD_PARAM": ETL_PASSWORD_PARAMETER,
    }


def test_etl_runs_one_at_a_time(aws):
    concurrency = aws.client("lambda").get_function_concurrency(FunctionName=ETL_FUNCTION)
    assert concurrency["ReservedConcurrentExecutions"] == 1


def test_function_log_groups_keep_logs_30_days(aws):
    groups = aws.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
    assert {g["logGroupName"]: g["retentionInDays"] for g in groups} == {
        f"/aws/lambda/{INGEST_FUNCTION}": 30,
        f"/aws/lambda/{ETL_FUNCTION}": 30,
    }


def test_etl_dead_letter_queue_accepts_the_schedule_rule_only(aws):
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName="clickstream-local-etl-dlq")["QueueUrl"]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(
        ":rule/clickstream-local-etl-hourly"
    )


def lambda_policy_statements(aws: MotoServer, name: str) -> list[dict[str, Any]]:
    return json.loads(aws.client("lambda").get_policy(FunctionName=name)["Policy"])["Statement"]


# --- Schedule ----------------------------------------------------------------------------------


def test_hourly_rule_targets_etl_with_retries_and_a_dead_letter_queue(aws):
    events = aws.client("events")
    rule = events.describe_rule(Name="clickstream-local-etl-hourly")
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 hour)", "ENABLED")
    (target,) = events.list_targets_by_rule(Rule="clickstream-local-etl-hourly")["Targets"]
    assert target["Arn"] == function(aws, ETL_FUNCTION)["Configuration"]["FunctionArn"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 3600}
    assert target["DeadLetterConfig"]["Arn"].endswith(":clickstream-local-etl-dlq")


def test_eventbridge_may_invoke_etl_from_the_rule_only(aws):
    (statement,) = lambda_policy_statements(aws, ETL_FUNCTION)
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"].endswith(
        ":rule/clickstream-local-etl-hourly"
    )


# --- API ---------------------------------------------------------------------------------------


def the_api(aws: MotoServer) -> dict[str, Any]:
    (api,) = aws.client("apigatewayv2").get_apis()["Items"]
    return api


def test_api_routes_post_clickstream_to_ingest_with_payload_2(aws):
    client = aws.client("apigatewayv2")
    api = the_api(aws)
    assert api["Name"] == "clickstream-local-http-api"
    (route,) = client.get_routes(ApiId=api["ApiId"])["Items"]
    (integration,) = client.get_integrations(ApiId=api["ApiId"])["Items"]
    assert route["RouteKey"] == "POST /clickstream"
    assert route["Target"] == f"integrations/{integration['IntegrationId']}"
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "2.0"
    assert integration["IntegrationUri"].endswith(f":function:{INGEST_FUNCTION}")


def test_api_allows_the_shop_origin_and_logs_and_throttles_its_default_stage(aws):
    api = the_api(aws)
    # The local inventory's shop: the demo shop page that the local platform serves.
    assert api["CorsConfiguration"]["AllowOrigins"] == ["http://127.0.0.1:8000"]
    stage = aws.client("apigatewayv2").get_stage(ApiId=api["ApiId"], StageName="$default")
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 200
    assert stage["AccessLogSettings"]["DestinationArn"].endswith(
        ":log-group:/aws/apigateway/clickstream-local-http-api"
    )


def test_api_gateway_may_invoke_ingest_from_the_route_only(aws):
    (statement,) = lambda_policy_statements(aws, INGEST_FUNCTION)
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"].endswith(
        f":{the_api(aws)['ApiId']}/*/POST/clickstream"
    )


# --- Compute -----------------------------------------------------------------------------------


def dwh_instance(aws: MotoServer) -> dict[str, Any]:
    reservations = aws.client("ec2").describe_instances(
        Filters=[
            *stack_filter("clickstream-local-dwh"),
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (instance,) = [i for r in reservations for i in r["Instances"]]
    return instance


def test_dwh_host_is_private_in_the_analytics_subnet(aws):
    instance = dwh_instance(aws)
    assert "PublicIpAddress" not in instance
    assert instance["SubnetId"] == subnets_by_tier(aws)["analytics"]["SubnetId"]
    assert [g["GroupName"] for g in instance["SecurityGroups"]] == ["clickstream-local-dwh"]
    assert instance["IamInstanceProfile"]["Arn"].endswith(
        ":instance-profile/clickstream-local-dwh-instance"
    )


def test_dwh_host_requires_imdsv2(aws):
    assert dwh_instance(aws)["MetadataOptions"]["HttpTokens"] == "required"


def test_dwh_host_volumes_are_encrypted_gp3(aws):
    instance = dwh_instance(aws)
    volume_ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    volumes = aws.client("ec2").describe_volumes(VolumeIds=volume_ids)["Volumes"]
    assert sorted(v["Size"] for v in volumes) == [20, 50]
    assert {(v["VolumeType"], v["Encrypted"]) for v in volumes} == {("gp3", True)}


def test_dwh_host_carries_the_tags_the_inventory_finds_it_by(aws):
    instance = dwh_instance(aws)
    assert tag_value(instance, "Role") == "dwh"
    assert tag_value(instance, "SsmTransferBucket") == SSM_TRANSFER_BUCKET


def test_no_oltp_host_by_default(aws):
    reservations = aws.client("ec2").describe_instances(
        Filters=stack_filter("clickstream-local-oltp")
    )
    assert reservations["Reservations"] == []


# --- Monitoring --------------------------------------------------------------------------------

# What the alarms are expected to be, read from the inventory the runs used (never copied here).
MONITORING_VARIABLES = [
    "platform_project",
    "platform_stack",
    "monitoring_alarms",
    "monitoring_topic_name",
    "monitoring_api_5xx_threshold",
    "monitoring_ingest_period_seconds",
    "monitoring_etl_period_seconds",
    "monitoring_etl_max_lag_seconds",
    "lambdas_ingest_name",
    "lambdas_etl_name",
    "schedule_rule_name",
    "schedule_expression",
]


@pytest.fixture(scope="module")
def monitoring(aws: MotoServer) -> dict[str, Any]:
    return render_variables(
        MONITORING_VARIABLES,
        "inventories/local",
        environment={**os.environ, **aws_environment(aws.endpoint_url)},
    )


def alarm_prefix(monitoring: dict[str, Any]) -> str:
    return f"{monitoring['platform_project']}-{monitoring['platform_stack']}-"


def alarms(aws: MotoServer, monitoring: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stack's alarms by their name after the stack's prefix."""
    prefix = alarm_prefix(monitoring)
    found = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix=prefix)
    return {alarm["AlarmName"].removeprefix(prefix): alarm for alarm in found["MetricAlarms"]}


def alarm_topic_arn(aws: MotoServer, monitoring: dict[str, Any]) -> str:
    (arn,) = [
        topic["TopicArn"]
        for topic in aws.client("sns").list_topics()["Topics"]
        if topic["TopicArn"].endswith(f":{monitoring['monitoring_topic_name']}")
    ]
    return arn


def schedule_period_seconds(expression: str) -> int:
    """The period of an EventBridge rate() expression, e.g. rate(1 hour) -> 3600."""
    amount, unit = expression.removeprefix("rate(").removesuffix(")").split()
    return int(amount) * {"minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]


READ_BACK_FIELDS = (
    "namespace",
    "metric",
    "dimensions",
    "statistic",
    "comparison",
    "threshold",
    "period",
    "evaluation_periods",
    "datapoints_to_alarm",
    "missing",
    "description",
)


def read_back(alarm: dict[str, Any]) -> dict[str, Any]:
    """An alarm as describe_alarms returns it, in the inventory's terms (monitoring_alarms)."""
    return {
        "namespace": alarm["Namespace"],
        "metric": alarm["MetricName"],
        "dimensions": {d["Name"]: d["Value"] for d in alarm["Dimensions"]},
        "statistic": alarm["Statistic"],
        "comparison": alarm["ComparisonOperator"],
        "threshold": alarm["Threshold"],
        "period": alarm["Period"],
        "evaluation_periods": alarm["EvaluationPeriods"],
        "datapoints_to_alarm": alarm["DatapointsToAlarm"],
        "missing": alarm["TreatMissingData"],
        "description": alarm["AlarmDescription"],
    }


def test_every_alarm_reads_back_as_the_inventory_defines_it(aws, monitoring):
    found = alarms(aws, monitoring)
    for expected in monitoring["monitoring_alarms"]:
        wanted = {key: value for key, value in expected.items() if key in READ_BACK_FIELDS}
        wanted["threshold"] = float(wanted["threshold"])
        assert read_back(found[expected["name"]]) == wanted, expected["name"]


def test_the_stack_has_no_alarm_the_inventory_does_not_define(aws, monitoring):
    defined = {alarm["name"] for alarm in monitoring["monitoring_alarms"]} | {"api-5xx"}
    assert set(alarms(aws, monitoring)) == defined


def test_alarms_watch_both_functions_and_the_api(aws, monitoring):
    found = alarms(aws, monitoring)
    for role, function_name in (
        ("ingest", monitoring["lambdas_ingest_name"]),
        ("etl", monitoring["lambdas_etl_name"]),
    ):
        for metric in ("Errors", "Throttles", "Duration"):
            alarm = found[f"{role}-{metric.lower()}"]
            assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", metric)
            assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": function_name}]
    api_alarm = read_back(found["api-5xx"])
    assert api_alarm | {"dimensions": None, "description": None} == {
        "namespace": "AWS/ApiGateway",
        "metric": "5xx",
        "dimensions": None,
        "statistic": "Sum",
        "comparison": "GreaterThanOrEqualToThreshold",
        "threshold": float(monitoring["monitoring_api_5xx_threshold"]),
        "period": monitoring["monitoring_ingest_period_seconds"],
        "evaluation_periods": 1,
        "datapoints_to_alarm": 1,
        "missing": "notBreaching",
        "description": None,
    }
    assert api_alarm["dimensions"] == {"ApiId": the_api(aws)["ApiId"], "Stage": "$default"}


def test_alarms_watch_the_etl_embedded_metrics(aws, monitoring):
    found = alarms(aws, monitoring)
    for name, metric in (
        ("etl-run-failed", "RunFailed"),
        ("etl-lag", "LagSeconds"),
        ("etl-rejected-lines", "RejectedLines"),
    ):
        alarm = found[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("Clickstream", metric)
        assert alarm["Dimensions"] == [{"Name": "Function", "Value": "etl"}]


def test_etl_alarms_look_at_one_schedule_period(aws, monitoring):
    period = schedule_period_seconds(monitoring["schedule_expression"])
    assert monitoring["monitoring_etl_period_seconds"] == period
    etl_alarms = [
        alarm for name, alarm in alarms(aws, monitoring).items() if name.startswith("etl-")
    ]
    assert {alarm["Period"] for alarm in etl_alarms} == {period}


def test_etl_lag_fires_on_2_of_3_periods_and_not_before_the_first_run(aws, monitoring):
    lag = alarms(aws, monitoring)["etl-lag"]
    # One period without a report (a run that drifted over the boundary) never fires it ...
    assert (lag["DatapointsToAlarm"], lag["EvaluationPeriods"]) == (2, 3)
    # ... and no report at all (before the first run) is no lag.
    assert lag["TreatMissingData"] == "notBreaching"
    assert lag["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert lag["Threshold"] == monitoring["monitoring_etl_max_lag_seconds"]


def test_an_etl_that_stops_being_invoked_notifies_without_alarming_before_the_first_run(
    aws, monitoring
):
    not_running = alarms(aws, monitoring)["etl-not-running"]
    assert (not_running["Namespace"], not_running["MetricName"]) == ("AWS/Lambda", "Invocations")
    assert not_running["Dimensions"] == [
        {"Name": "FunctionName", "Value": monitoring["lambdas_etl_name"]}
    ]
    # Lambda publishes no Invocations datapoint for a function nobody invokes: "missing" keeps
    # the alarm in INSUFFICIENT_DATA until the first run (no change of state, no message), OK
    # after it, and back to INSUFFICIENT_DATA, which notifies, when the invocations stop.
    assert not_running["TreatMissingData"] == "missing"
    assert not_running["InsufficientDataActions"] == [alarm_topic_arn(aws, monitoring)]
    assert not_running["EvaluationPeriods"] == not_running["DatapointsToAlarm"] >= 2


def test_a_schedule_that_cannot_invoke_the_etl_alarms(aws, monitoring):
    failed = alarms(aws, monitoring)["etl-schedule-failed"]
    assert (failed["Namespace"], failed["MetricName"]) == ("AWS/Events", "FailedInvocations")
    assert failed["Dimensions"] == [{"Name": "RuleName", "Value": monitoring["schedule_rule_name"]}]


def test_alarms_notify_the_alarm_topic(aws, monitoring):
    topic_arn = alarm_topic_arn(aws, monitoring)
    found = alarms(aws, monitoring).values()
    assert {tuple(alarm["AlarmActions"]) for alarm in found} == {(topic_arn,)}
    assert {tuple(alarm["OKActions"]) for alarm in found} == {(topic_arn,)}
    notified_when_insufficient = {tuple(a.get("InsufficientDataActions", [])) for a in found}
    assert notified_when_insufficient <= {(topic_arn,), ()}


# --- The DWH host in the aws inventory -----------------------------------------------------------


def listed_inventory(source: str, environment: dict[str, str] | None = None) -> dict[str, Any]:
    """``ansible-inventory -i SOURCE --list`` on this module's account, with ``environment``
    added to this process's."""
    listed = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", source, "--list"],
        cwd=REPO_ROOT,
        env={**os.environ, **(environment or {})},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(listed.stdout)


def inventory_host_vars(inventory: dict[str, Any], host: str) -> dict[str, Any]:
    """A host's variables from ``ansible-inventory --list``, with the values that came from the
    cloud, which it marks as unsafe (not to be templated), unwrapped."""
    return {
        name: value["__ansible_unsafe"]
        if isinstance(value, dict) and "__ansible_unsafe" in value
        else value
        for name, value in inventory["_meta"]["hostvars"][host].items()
    }


def test_aws_ec2_inventory_finds_the_dwh_host_and_reaches_it_through_ssm(aws):
    # The aws inventory's plugin configuration, with the emulated stack selected the way an
    # operator selects a stack: CLICKSTREAM_STACK (and CLICKSTREAM_REGION).
    inventory = listed_inventory(
        "inventories/aws/aws_ec2.yml",
        {"CLICKSTREAM_STACK": "local", "CLICKSTREAM_REGION": "ap-southeast-1"},
    )
    assert inventory["dwh"]["hosts"] == ["clickstream-local-dwh"]
    host = inventory_host_vars(inventory, "clickstream-local-dwh")
    assert host["ansible_host"] == dwh_instance(aws)["InstanceId"]
    assert host["ansible_connection"] == "amazon.aws.aws_ssm"
    assert host["ansible_aws_ssm_bucket_name"] == SSM_TRANSFER_BUCKET
    assert host["ansible_aws_ssm_region"] == "ap-southeast-1"
    # PostgreSQL's data volume by its id (the NVMe serial), not by the order the kernel found it.
    (data_volume,) = [
        mapping["Ebs"]["VolumeId"]
        for mapping in dwh_instance(aws)["BlockDeviceMappings"]
        if mapping["DeviceName"] == "/dev/sdf"
    ]
    assert host["postgresql_data_volume_device"] == (
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + data_volume.replace("-", "")
    )


def test_local_inventory_finds_the_emulated_instance_by_its_tags_and_maps_it_to_its_machine(aws):
    # The local inventory finds the DWH host the way the aws one does (aws_ec2, by tags), so the
    # host stages of `make up` take the same path as in AWS; only the connection differs.
    inventory = listed_inventory("inventories/local")
    assert inventory["dwh"]["hosts"] == ["clickstream-local-dwh"]
    host = inventory_host_vars(inventory, "clickstream-local-dwh")
    assert host["ansible_connection"] == "nspawn"
    # The machine `make up` boots: local_platform_dwh_machine, composed from the same tags.
    assert host["ansible_nspawn_machine"] == "clickstream-local-dwh"


ABSENT = "clickstream-test-no-such-machine"


def test_a_host_stage_whose_host_does_not_answer_fails_naming_what_to_check(aws, run_on_moto):
    # The instance exists in the account, but nothing answers for it (no machine of that name
    # booted; not the local platform's, which may be up on this machine): the stage fails with
    # what to check instead of configuring nothing.
    run = run_on_moto(
        "playbooks/shiny.yml",
        *extra_vars({"discover_hosts_connection_timeout": 2, "ansible_nspawn_machine": ABSENT}),
    )
    assert run.returncode != 0
    # The wait fails first (rescued), then the failure that stops the run.
    assert [failure.task for failure in run.failures] == [
        "Wait until the DWH host accepts commands",
        "Say what to check",
    ]
    failure = run.failures[-1]
    assert (
        "clickstream-local-dwh did not answer over the nspawn connection in 2 s"
        in failure.result["msg"]
    )
    assert ABSENT in failure.result["msg"]
    assert not [result for result in run.task_results if result.play.startswith("Configure")]


# --- The DWH host across AMI releases and duplicates (compute.yml again, on the same account) -----


def another_ami(aws: MotoServer, image_id: str) -> str:
    """An AMI moto knows that is not ``image_id``, with the same root device name."""
    images = aws.client("ec2").describe_images(ImageIds=[image_id])["Images"]
    root_device = images[0]["RootDeviceName"]
    return next(
        image["ImageId"]
        for image in aws.client("ec2").describe_images()["Images"]
        if image["ImageId"] != image_id and image.get("RootDeviceName") == root_device
    )


def task_result(run: PlaybookRun, task: str) -> dict[str, Any]:
    (result,) = [r.result for r in run.task_results if r.task == task]
    return result


DWH_INSTANCE_TASK = "Ensure the DWH + Shiny host runs, private, with IMDSv2 and encrypted volumes"


def test_a_newer_ami_neither_replaces_nor_duplicates_the_dwh_host(aws, run_on_moto):
    # As after Canonical published a new "current" Ubuntu AMI: the stack keeps its host and the
    # host keeps its AMI; only a new stack resolves compute_ami_id.
    before = dwh_instance(aws)
    newer = another_ami(aws, before["ImageId"])
    rerun = run_on_moto("playbooks/compute.yml", "-e", f"compute_ami_id={newer}")
    assert rerun.returncode == 0, rerun.explain()
    assert task_result(rerun, DWH_INSTANCE_TASK)["changed"] is False
    assert [f"{r.play} / {r.task}" for r in rerun.task_results if r.changed] == []
    after = dwh_instance(aws)
    assert (after["InstanceId"], after["ImageId"]) == (before["InstanceId"], before["ImageId"])


def test_a_second_dwh_host_stops_the_compute_stage_with_what_to_do(aws, run_on_moto):
    ec2 = aws.client("ec2")
    original = dwh_instance(aws)
    tags = [tag for tag in original["Tags"] if not tag["Key"].startswith("aws:")]
    (duplicate,) = ec2.run_instances(
        ImageId=original["ImageId"],
        InstanceType="t3.micro",
        SubnetId=original["SubnetId"],
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"]
    try:
        rerun = run_on_moto("playbooks/compute.yml")
    finally:
        ec2.terminate_instances(InstanceIds=[duplicate["InstanceId"]])
    assert rerun.returncode != 0
    (failure,) = rerun.failures
    assert failure.task == "Require at most one DWH + Shiny host"
    assert original["InstanceId"] in failure.result["msg"]
    assert duplicate["InstanceId"] in failure.result["msg"]
    assert dwh_instance(aws)["InstanceId"] == original["InstanceId"]


# --- Check mode and the bootstrap NAT, on the provisioned account (these run last) --------------


@pytest.fixture(scope="module")
def check_run_in_sync(runs, run_on_moto) -> PlaybookRun:
    return run_on_moto("site.yml", "--tags", "infra", "--check", "--diff")


def test_check_mode_on_the_provisioned_account_reports_no_change(check_run_in_sync):
    assert check_run_in_sync.returncode == 0, check_run_in_sync.explain()
    assert [f"{r.play} / {r.task}" for r in check_run_in_sync.task_results if r.changed] == []


@pytest.fixture(scope="module")
def bootstrap_nat(runs, check_run_in_sync, run_on_moto, infra_moto) -> dict[str, Any]:
    """The network stage alone, run with the NAT switched on, then off again."""
    ec2 = infra_moto.client("ec2")
    switched_on = run_on_moto("playbooks/network.yml", "-e", "network_bootstrap_nat_enabled=true")
    assert switched_on.returncode == 0, switched_on.explain()
    with_nat = {
        "nat_gateways": ec2.describe_nat_gateways(
            Filters=[{"Name": "state", "Values": ["available"]}]
        )["NatGateways"],
        "route_tables": route_tables_by_name(infra_moto),
    }
    switched_off = run_on_moto("playbooks/network.yml")
    assert switched_off.returncode == 0, switched_off.explain()
    return {"with_nat": with_nat, "switched_off": switched_off}


def default_route_targets(table: dict[str, Any]) -> list[str]:
    return [
        route.get("NatGatewayId") or route.get("GatewayId")
        for route in table["Routes"]
        if route.get("DestinationCidrBlock") == "0.0.0.0/0"
    ]


def test_bootstrap_nat_gives_only_the_analytics_subnet_a_default_route(bootstrap_nat):
    with_nat = bootstrap_nat["with_nat"]
    (nat_gateway,) = with_nat["nat_gateways"]
    tables = with_nat["route_tables"]
    assert default_route_targets(tables["clickstream-local-rtb-private1-analytics"]) == [
        nat_gateway["NatGatewayId"]
    ]
    assert default_route_targets(tables["clickstream-local-rtb-private2-etl"]) == []


def test_switching_the_bootstrap_nat_off_removes_it_its_route_and_its_address(bootstrap_nat, aws):
    ec2 = aws.client("ec2")
    live = [{"Name": "state", "Values": ["pending", "available"]}]
    assert ec2.describe_nat_gateways(Filters=live)["NatGateways"] == []
    assert (
        default_route_targets(route_tables_by_name(aws)["clickstream-local-rtb-private1-analytics"])
        == []
    )
    assert aws.client("ec2").describe_addresses()["Addresses"] == []

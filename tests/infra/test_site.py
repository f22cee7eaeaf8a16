"""site.yml --tags infra against an emulated account: the run succeeds, a second run changes
nothing, and what it made has the properties of the design (seed 002/003 and issue 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.fixtures.ansible import ANSIBLE_PLAYBOOK, REPO_ROOT, PlaybookRun, extra_vars
from tests.fixtures.aws import MotoServer

pytestmark = pytest.mark.slow

VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDRS = {"public": "10.0.1.0/24", "analytics": "10.0.2.0/24", "etl": "10.0.3.0/24"}
RAW_BUCKET = "clickstream-s3-ingest"
MEDIA_BUCKET = "clickstream-s3-sbw"
SSM_TRANSFER_BUCKET = "clickstream-ssm-transfer-local"
ETL_FUNCTION = "SBW_Lamda_ETL"
INGEST_FUNCTION = "clickstream-ingest"
PASSWORD_PARAMETERS = {
    "/clickstream/local/warehouse/etl-writer-password",
    "/clickstream/local/warehouse/dashboard-reader-password",
    "/clickstream/local/warehouse/postgres-admin-password",
}
ETL_PASSWORD_PARAMETER = "/clickstream/local/warehouse/etl-writer-password"
ANSIBLE_INVENTORY = ANSIBLE_PLAYBOOK.with_name("ansible-inventory")
PRIVATE_SECURITY_GROUPS = ("sg_analytics_ShinyDWH", "sg_Lambda_ETL", "sg_vpc_endpoints")


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
    assert first.play_names[:10] == [
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
    (vpc,) = aws.client("ec2").describe_vpcs(Filters=stack_filter("SBW_Project-vpc"))["Vpcs"]
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
    public = route_tables_by_name(aws)["SBW_Project-rtb-public"]
    default_routes = [r for r in public["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert [r["GatewayId"] for r in default_routes] == [igw["InternetGatewayId"]]
    assert [a["SubnetId"] for a in public["Associations"]] == [
        subnets_by_tier(aws)["public"]["SubnetId"]
    ]


@pytest.mark.parametrize(
    ("table_name", "tier"),
    [("SBW_Project-rtb-private1-analytics", "analytics"), ("SBW_Project-rtb-private2-etl", "etl")],
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
        for name in ("SBW_Project-rtb-private1-analytics", "SBW_Project-rtb-private2-etl")
    )


def test_ssm_interface_endpoints_have_private_dns_in_the_analytics_subnet(aws):
    found = endpoints(aws)
    analytics = subnets_by_tier(aws)["analytics"]["SubnetId"]
    endpoints_group = security_groups(aws)["sg_vpc_endpoints"]["GroupId"]
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
    (rule,) = groups["sg_analytics_ShinyDWH"]["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)
    assert [pair["GroupId"] for pair in rule["UserIdGroupPairs"]] == [
        groups["sg_Lambda_ETL"]["GroupId"]
    ]
    assert rule["IpRanges"] == []


@pytest.mark.parametrize("group_name", PRIVATE_SECURITY_GROUPS)
@pytest.mark.parametrize("port", [22, 3838])
def test_no_private_group_opens_ssh_or_shiny(aws, group_name, port):
    permissions = security_groups(aws)[group_name]["IpPermissions"]
    assert not [p for p in permissions if opens(p, port)]


def test_lambda_etl_group_admits_nothing_and_reaches_the_warehouse(aws):
    groups = security_groups(aws)
    etl = groups["sg_Lambda_ETL"]
    assert etl["IpPermissions"] == []
    postgres = [p for p in etl["IpPermissionsEgress"] if opens(p, 5432)]
    assert [pair["GroupId"] for p in postgres for pair in p["UserIdGroupPairs"]] == [
        groups["sg_analytics_ShinyDWH"]["GroupId"]
    ]


def test_endpoint_group_admits_https_from_the_vpc_only(aws):
    (rule,) = security_groups(aws)["sg_vpc_endpoints"]["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (443, 443)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == [VPC_CIDR]


def test_oltp_group_is_closed_without_trusted_networks(aws):
    assert security_groups(aws)["sg_oltp_webDB"]["IpPermissions"] == []


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
    statements = inline_policy(aws, "clickstream-ingest-lambda", "clickstream-ingest")
    (s3,) = statements_on(statements, "s3")
    assert (s3["Effect"], s3["Action"]) == ("Allow", "s3:PutObject")
    assert s3["Resource"] == f"arn:aws:s3:::{RAW_BUCKET}/events/*"
    assert {s["Sid"] for s in statements} == {"WriteRawEvents", "WriteOwnLogs"}
    attached = aws.client("iam").list_attached_role_policies(RoleName="clickstream-ingest-lambda")
    assert attached["AttachedPolicies"] == []


def test_etl_may_only_list_and_read_events_and_read_its_own_password(aws):
    statements = inline_policy(aws, "clickstream-etl-lambda", "clickstream-etl")
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
    assert sqs["Resource"].endswith(":clickstream-etl-dlq")


def test_etl_role_has_the_lambda_vpc_access_policy(aws):
    attached = aws.client("iam").list_attached_role_policies(RoleName="clickstream-etl-lambda")
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == [
        "AWSLambdaVPCAccessExecutionRole"
    ]


def test_dwh_instance_profile_has_ssm_core_and_the_transfer_bucket_only(aws):
    iam = aws.client("iam")
    profile = iam.get_instance_profile(InstanceProfileName="clickstream-dwh-instance")
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == [
        "clickstream-dwh-instance"
    ]
    attached = iam.list_attached_role_policies(RoleName="clickstream-dwh-instance")
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == [
        "AmazonSSMManagedInstanceCore"
    ]
    (statement,) = inline_policy(aws, "clickstream-dwh-instance", "clickstream-dwh-instance")
    assert statement["Resource"] == f"arn:aws:s3:::{SSM_TRANSFER_BUCKET}/*"


def test_only_the_dwh_host_has_an_instance_profile(aws):
    # A profile for a Lambda role would let nothing in (its trust names lambda.amazonaws.com),
    # but it is one more thing in the account to audit.
    profiles = aws.client("iam").list_instance_profiles()["InstanceProfiles"]
    assert [profile["InstanceProfileName"] for profile in profiles] == ["clickstream-dwh-instance"]


def test_warehouse_passwords_are_secure_string_parameters(aws):
    parameters = aws.client("ssm").describe_parameters()["Parameters"]
    assert {p["Name"]: p["Type"] for p in parameters} == dict.fromkeys(
        PASSWORD_PARAMETERS, "SecureString"
    )


def test_second_run_kept_the_generated_passwords(runs):
    # overwrite_value: never. The first run created them; the second reported no change.
    _, second = runs
    (secrets,) = [r for r in second.task_results if r.play.startswith("Secrets")]
    assert secrets.changed is False


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
    assert vpc_config["SecurityGroupIds"] == [security_groups(aws)["sg_Lambda_ETL"]["GroupId"]]


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
    url = sqs.get_queue_url(QueueName="clickstream-etl-dlq")["QueueUrl"]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(
        ":rule/SBW_ETL_HOURLY_RULE"
    )


def lambda_policy_statements(aws: MotoServer, name: str) -> list[dict[str, Any]]:
    return json.loads(aws.client("lambda").get_policy(FunctionName=name)["Policy"])["Statement"]


# --- Schedule ----------------------------------------------------------------------------------


def test_hourly_rule_targets_etl_with_retries_and_a_dead_letter_queue(aws):
    events = aws.client("events")
    rule = events.describe_rule(Name="SBW_ETL_HOURLY_RULE")
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 hour)", "ENABLED")
    (target,) = events.list_targets_by_rule(Rule="SBW_ETL_HOURLY_RULE")["Targets"]
    assert target["Arn"] == function(aws, ETL_FUNCTION)["Configuration"]["FunctionArn"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 3600}
    assert target["DeadLetterConfig"]["Arn"].endswith(":clickstream-etl-dlq")


def test_eventbridge_may_invoke_etl_from_the_rule_only(aws):
    (statement,) = lambda_policy_statements(aws, ETL_FUNCTION)
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"].endswith(":rule/SBW_ETL_HOURLY_RULE")


# --- API ---------------------------------------------------------------------------------------


def the_api(aws: MotoServer) -> dict[str, Any]:
    (api,) = aws.client("apigatewayv2").get_apis()["Items"]
    return api


def test_api_routes_post_clickstream_to_ingest_with_payload_2(aws):
    client = aws.client("apigatewayv2")
    api = the_api(aws)
    assert api["Name"] == "clickstream-http-api"
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
        ":log-group:/aws/apigateway/clickstream-http-api"
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
            *stack_filter("SBW_EC2_ShinyDWH"),
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (instance,) = [i for r in reservations for i in r["Instances"]]
    return instance


def test_dwh_host_is_private_in_the_analytics_subnet(aws):
    instance = dwh_instance(aws)
    assert "PublicIpAddress" not in instance
    assert instance["SubnetId"] == subnets_by_tier(aws)["analytics"]["SubnetId"]
    assert [g["GroupName"] for g in instance["SecurityGroups"]] == ["sg_analytics_ShinyDWH"]
    assert instance["IamInstanceProfile"]["Arn"].endswith(
        ":instance-profile/clickstream-dwh-instance"
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
    reservations = aws.client("ec2").describe_instances(Filters=stack_filter("SBW_EC2_WebDB"))
    assert reservations["Reservations"] == []


# --- Monitoring --------------------------------------------------------------------------------


def alarms(aws: MotoServer) -> dict[str, dict[str, Any]]:
    found = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix="clickstream-local-")
    return {alarm["AlarmName"]: alarm for alarm in found["MetricAlarms"]}


def test_alarms_watch_both_functions_and_the_api(aws):
    found = alarms(aws)
    for function_name in (INGEST_FUNCTION, ETL_FUNCTION):
        for metric in ("Errors", "Throttles", "Duration"):
            alarm = found[f"clickstream-local-{function_name}-{metric.lower()}"]
            assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", metric)
            assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": function_name}]
    api_alarm = found["clickstream-local-api-5xx"]
    assert (api_alarm["Namespace"], api_alarm["MetricName"]) == ("AWS/ApiGateway", "5xx")
    assert {"Name": "ApiId", "Value": the_api(aws)["ApiId"]} in api_alarm["Dimensions"]


def test_alarms_watch_the_etl_embedded_metrics(aws):
    found = alarms(aws)
    for name, metric in (
        ("etl-run-failed", "RunFailed"),
        ("etl-lag", "LagSeconds"),
        ("etl-rejected-lines", "RejectedLines"),
    ):
        alarm = found[f"clickstream-local-{name}"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("Clickstream", metric)
        assert alarm["Dimensions"] == [{"Name": "Function", "Value": "etl"}]


def test_alarms_notify_the_alarm_topic(aws):
    (topic,) = aws.client("sns").list_topics()["Topics"]
    assert topic["TopicArn"].endswith(":clickstream-alarms")
    assert {tuple(a["AlarmActions"]) for a in alarms(aws).values()} == {(topic["TopicArn"],)}


# --- The DWH host in the aws inventory -----------------------------------------------------------


def listed_inventory(source: str) -> dict[str, Any]:
    """``ansible-inventory -i SOURCE --list`` on this module's account."""
    listed = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", source, "--list"],
        cwd=REPO_ROOT,
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


def test_aws_ec2_inventory_finds_the_dwh_host_and_reaches_it_through_ssm(aws, tmp_path):
    # The aws inventory's plugin configuration, with the emulated stack's Stack tag.
    config = yaml.safe_load((REPO_ROOT / "inventories/aws/aws_ec2.yml").read_text())
    config["filters"]["tag:Stack"] = "local"
    (tmp_path / "aws_ec2.yml").write_text(yaml.safe_dump(config))
    inventory = listed_inventory(str(tmp_path / "aws_ec2.yml"))
    assert inventory["dwh"]["hosts"] == ["SBW_EC2_ShinyDWH"]
    host = inventory_host_vars(inventory, "SBW_EC2_ShinyDWH")
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
    assert inventory["dwh"]["hosts"] == ["SBW_EC2_ShinyDWH"]
    host = inventory_host_vars(inventory, "SBW_EC2_ShinyDWH")
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
        "SBW_EC2_ShinyDWH did not answer over the nspawn connection in 2 s" in failure.result["msg"]
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
    assert default_route_targets(tables["SBW_Project-rtb-private1-analytics"]) == [
        nat_gateway["NatGatewayId"]
    ]
    assert default_route_targets(tables["SBW_Project-rtb-private2-etl"]) == []


def test_switching_the_bootstrap_nat_off_removes_it_its_route_and_its_address(bootstrap_nat, aws):
    ec2 = aws.client("ec2")
    live = [{"Name": "state", "Values": ["pending", "available"]}]
    assert ec2.describe_nat_gateways(Filters=live)["NatGateways"] == []
    assert (
        default_route_targets(route_tables_by_name(aws)["SBW_Project-rtb-private1-analytics"]) == []
    )
    assert aws.client("ec2").describe_addresses()["Addresses"] == []

"""Each role is allowed what it does and denied what it must not, with IAM enforced.

One local-platform emulator with IAM enforced (tools/local_platform/emulator.py --enforce-iam),
on which the repository's own storage, secrets and IAM stages run once, as the operator. Each
role's credentials are then obtained as AWS gives them: the Lambda roles assumed by the Lambda
service's stand-in, the DWH instance's through its instance profile by EC2's. The last tests run
probe functions in the local Lambda runtime (tools/local_platform/runtime.py) under the
deployed roles: the path `make up` runs every function on.

Where moto's evaluation still differs from AWS's: docs/security.md, "IAM in the emulation".
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.fixtures.ansible import REPO_ROOT, extra_vars, run_playbook
from tests.fixtures.aws import (
    LOCAL_PLATFORM_EMULATOR,
    REGION,
    MotoServer,
    account_of_its_own,
    aws_environment,
    zip_of,
)
from tests.fixtures.local_runtime import local_lambda_runtime
from tools.local_platform import credentials

LOCAL_INVENTORY = "inventories/local"
# What the tests read from the local inventory, rendered by Ansible (no name is repeated here).
NAMES_EXPRESSION = """{{ {
  'raw_bucket': storage_raw_bucket_name,
  'ingest_role': iam_ingest_role_name,
  'etl_role': iam_etl_role_name,
  'instance_profile': iam_dwh_instance_role_name,
  'etl_password': secrets_etl_writer_password_parameter,
  'dashboard_password': secrets_dashboard_reader_password_parameter,
  'mirror_signing_key': package_mirror_signing_key_parameter,
  'mirror_snapshot': package_mirror_snapshot_parameter,
} | to_json }}"""
HOST_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
# A function that reports who it runs as and what its role may do in the raw bucket.
PROBE = textwrap.dedent(
    """
    import os
    import boto3

    def handler(event, context):
        s3 = boto3.client("s3")
        outcomes = {}
        for name, call in (
            ("put", lambda: s3.put_object(Bucket=event["bucket"], Key="events/probe", Body=b"{}")),
            ("get", lambda: s3.get_object(Bucket=event["bucket"], Key="events/probe")),
        ):
            try:
                call()
                outcomes[name] = "allowed"
            except Exception as error:
                outcomes[name] = type(error).__name__ + ": " + str(error)[:80]
        return {
            "caller": boto3.client("sts").get_caller_identity()["Arn"],
            "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "has_session_token": bool(os.environ.get("AWS_SESSION_TOKEN")),
            "outcomes": outcomes,
        }
    """
)

Client = Callable[..., object]


def denied(call: Callable[[], object]) -> bool:
    """Whether the call is refused for want of permission (AccessDenied, or a bare 403: moto
    answers JSON services' denials in XML, which botocore reads as code "403")."""
    try:
        call()
    except ClientError as error:
        code = error.response["Error"].get("Code")
        status = error.response["ResponseMetadata"].get("HTTPStatusCode")
        return code in ("AccessDenied", "AccessDeniedException", "403") or status == 403
    return False


def read_names(server: MotoServer, account: str) -> dict[str, str]:
    """The resource names the local inventory gives this account."""
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible")),
            "localhost",
            "-i",
            f"{LOCAL_INVENTORY}/hosts.yml",
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={NAMES_EXPRESSION}",
            *extra_vars({"aws_account_id": account, "platform_repository_root": str(REPO_ROOT)}),
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            **aws_environment(server.endpoint_url, server.iam_keys[credentials.OPERATOR]),
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    message = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    return json.loads(message) if isinstance(message, str) else message


@pytest.fixture(scope="module")
def enforced(tmp_path_factory: pytest.TempPathFactory):
    """The emulator with IAM enforced, provisioned by the storage, secrets and IAM stages."""
    base = tmp_path_factory.mktemp("iam-enforced")
    with account_of_its_own(
        base / "moto.log", launcher=LOCAL_PLATFORM_EMULATOR, enforce_iam=True
    ) as server:
        operator = server.iam_keys[credentials.OPERATOR]
        environment = aws_environment(server.endpoint_url, operator)
        for playbook in ("playbooks/storage.yml", "playbooks/secrets.yml", "playbooks/iam.yml"):
            run = run_playbook(
                playbook,
                "-i",
                LOCAL_INVENTORY,
                # The mirror's bucket needs the network stage's gateway endpoint; not under test.
                *extra_vars({"package_mirror_enabled": False}),
                environment=environment,
                temp_dir=base,
            )
            assert run.returncode == 0, run.explain()
        account = server.client("sts").get_caller_identity()["Account"]
        names = read_names(server, account)
        ssm = server.client("ssm")
        for parameter in (names["mirror_signing_key"], names["mirror_snapshot"]):
            ssm.put_parameter(Name=parameter, Value="stand-in", Type="SecureString")
        yield server, names, account


def as_role(server: MotoServer, service: str, role_arn: str) -> Client:
    """A client factory with the role's credentials, as ``service`` obtains them."""
    key = credentials.assume_role(
        server.endpoint_url, REGION, server.iam_keys[service], role_arn, session="probe"
    )

    def client(name: str):
        return boto3.client(
            name,
            endpoint_url=server.endpoint_url,
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            aws_session_token=key["SessionToken"],
        )

    return client


def role_arn(server: MotoServer, name: str) -> str:
    return server.client("iam").get_role(RoleName=name)["Role"]["Arn"]


@pytest.fixture(scope="module")
def ingest(enforced) -> Client:
    server, names, _ = enforced
    return as_role(server, credentials.LAMBDA_SERVICE, role_arn(server, names["ingest_role"]))


@pytest.fixture(scope="module")
def etl(enforced) -> Client:
    server, names, _ = enforced
    return as_role(server, credentials.LAMBDA_SERVICE, role_arn(server, names["etl_role"]))


@pytest.fixture(scope="module")
def instance(enforced) -> Client:
    """The DWH instance's credentials: its profile's role, assumed by EC2 (as the instance
    metadata service hands them out)."""
    server, names, _ = enforced
    profile = server.client("iam").get_instance_profile(
        InstanceProfileName=names["instance_profile"]
    )
    return as_role(server, credentials.EC2_SERVICE, profile["InstanceProfile"]["Roles"][0]["Arn"])


@pytest.fixture(scope="module")
def raw_object(enforced) -> str:
    server, names, _ = enforced
    key = "events/2026/01/01/00/events-seeded.json"
    server.client("s3").put_object(Bucket=names["raw_bucket"], Key=key, Body=b"{}\n")
    return key


def test_the_ingest_may_put_raw_objects_under_events(enforced, ingest):
    _, names, _ = enforced
    ingest("s3").put_object(Bucket=names["raw_bucket"], Key="events/ingested.json", Body=b"{}\n")


def test_the_ingest_may_not_put_objects_outside_events(enforced, ingest):
    _, names, _ = enforced
    s3 = ingest("s3")
    assert denied(lambda: s3.put_object(Bucket=names["raw_bucket"], Key="other.json", Body=b""))


def test_the_ingest_cannot_read_list_or_delete_raw_objects(enforced, ingest, raw_object):
    _, names, _ = enforced
    s3, bucket = ingest("s3"), names["raw_bucket"]
    assert denied(lambda: s3.get_object(Bucket=bucket, Key=raw_object))
    assert denied(lambda: s3.delete_object(Bucket=bucket, Key=raw_object))
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="events/"))


def test_the_etl_may_list_under_events_and_read_raw_objects(enforced, etl, raw_object):
    _, names, _ = enforced
    s3, bucket = etl("s3"), names["raw_bucket"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="events/2026/")
    assert raw_object in [item["Key"] for item in listed["Contents"]]
    assert s3.get_object(Bucket=bucket, Key=raw_object)["Body"].read() == b"{}\n"


def test_the_etl_may_not_list_outside_events(enforced, etl):
    _, names, _ = enforced
    s3, bucket = etl("s3"), names["raw_bucket"]
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket))
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="other/"))


def test_the_etl_cannot_write_or_delete_raw_objects(enforced, etl, raw_object):
    _, names, _ = enforced
    s3, bucket = etl("s3"), names["raw_bucket"]
    assert denied(lambda: s3.put_object(Bucket=bucket, Key="events/etl.json", Body=b""))
    assert denied(lambda: s3.delete_object(Bucket=bucket, Key=raw_object))


def test_the_etl_reads_its_own_password_and_no_other_parameter(enforced, etl):
    _, names, _ = enforced
    ssm = etl("ssm")
    own = ssm.get_parameter(Name=names["etl_password"], WithDecryption=True)
    assert own["Parameter"]["Value"]
    for other in ("dashboard_password", "mirror_signing_key", "mirror_snapshot"):
        assert denied(lambda n=names[other]: ssm.get_parameter(Name=n, WithDecryption=True)), other
    both = [names["etl_password"], names["dashboard_password"]]
    assert denied(lambda: ssm.get_parameters(Names=both, WithDecryption=True))


def test_the_instance_reads_no_warehouse_or_mirror_parameter(enforced, instance):
    _, names, _ = enforced
    ssm = instance("ssm")
    parameters = ("etl_password", "dashboard_password", "mirror_signing_key", "mirror_snapshot")
    for parameter in parameters:
        name = names[parameter]
        assert denied(lambda n=name: ssm.get_parameter(Name=n, WithDecryption=True)), parameter
    assert denied(lambda: ssm.get_parameters(Names=[names[p] for p in parameters]))
    assert denied(lambda: ssm.get_parameters_by_path(Path="/clickstream", Recursive=True))


def test_the_instance_cannot_touch_the_raw_events(enforced, instance, raw_object):
    _, names, _ = enforced
    s3 = instance("s3")
    assert denied(lambda: s3.get_object(Bucket=names["raw_bucket"], Key=raw_object))


def test_the_operator_may_do_everything(enforced):
    server, names, _ = enforced
    assert server.client("ssm").get_parameter(Name=names["dashboard_password"])["Parameter"]
    assert (
        server.client("sts").get_caller_identity()["Arn"].endswith(":user/local-platform-operator")
    )


def test_an_unknown_key_is_refused(enforced):
    server, _, _ = enforced
    stranger = boto3.client(
        "iam",
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        # Made up here, like the emulator's own: a key of the right form the account never made.
        aws_access_key_id="AKIA" + secrets.token_hex(8).upper(),
        aws_secret_access_key=secrets.token_urlsafe(30),
    )
    with pytest.raises(ClientError, match="InvalidClientTokenId"):
        stranger.list_roles()


def test_a_wrong_signature_is_refused(enforced):
    server, _, _ = enforced
    operator = server.iam_keys[credentials.OPERATOR]
    forger = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=operator["AccessKeyId"],
        aws_secret_access_key=operator["SecretAccessKey"] + "-forged",
    )
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        forger.list_buckets()


def test_a_role_is_assumed_only_by_the_service_it_trusts(enforced):
    server, names, _ = enforced
    for role, wrong_service in (
        (names["ingest_role"], credentials.EC2_SERVICE),
        (names["etl_role"], credentials.EC2_SERVICE),
        (names["instance_profile"], credentials.LAMBDA_SERVICE),
    ):
        with pytest.raises(ClientError, match="AccessDenied"):
            as_role(server, wrong_service, role_arn(server, role))
    with pytest.raises(ClientError, match="AccessDenied"):
        as_role(server, credentials.OPERATOR, role_arn(server, names["etl_role"]))


def test_an_anonymous_request_is_refused_without_a_bucket_policy_allowing_it(enforced, raw_object):
    server, names, _ = enforced
    url = f"{server.endpoint_url}/{names['raw_bucket']}/{raw_object}"
    # No proxy from the environment: the emulator is this machine's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(OSError, match="403"):
        opener.open(url, timeout=10)


# --- the local Lambda runtime: each function under its own role ------------------------------


@pytest.fixture(scope="module")
def runtime(enforced, tmp_path_factory):
    """Probe functions with the deployed Lambda roles (and one with the instance's role, which
    Lambda may not assume), served by the runtime as `make up` starts it."""
    server, names, _ = enforced
    base = tmp_path_factory.mktemp("enforced-runtime")
    build_dir = base / "build"
    build_dir.mkdir()
    code = zip_of(PROBE)
    (build_dir / "probe.zip").write_bytes(code)
    functions = server.client("lambda")
    for function, role in (
        ("ingest-probe", names["ingest_role"]),
        ("etl-probe", names["etl_role"]),
        ("instance-probe", names["instance_profile"]),
    ):
        functions.create_function(
            FunctionName=function,
            Runtime=HOST_RUNTIME,
            Role=role_arn(server, role),
            Handler="handler.handler",
            Code={"ZipFile": code},
            Timeout=30,
        )
    keys_path = base / "iam-keys.json"
    keys_path.write_text(json.dumps(server.iam_keys))
    operator = server.iam_keys[credentials.OPERATOR]
    with local_lambda_runtime(
        server.endpoint_url,
        build_dir=build_dir,
        state_dir=base / "state",
        log_path=base / "runtime.log",
        environment=aws_environment(server.endpoint_url, operator),
        extra_arguments=[f"--iam-keys={keys_path}"],
    ) as invoke_url:
        yield runtime_invoker(invoke_url, operator, names)


def runtime_invoker(invoke_url: str, operator: dict[str, str], names: dict[str, str]):
    """Invoke a probe through the runtime's Invoke API as the operator: (payload, error)."""
    client = boto3.client(
        "lambda",
        endpoint_url=invoke_url,
        region_name=REGION,
        aws_access_key_id=operator["AccessKeyId"],
        aws_secret_access_key=operator["SecretAccessKey"],
        config=Config(read_timeout=60, retries={"max_attempts": 0}),
    )

    def invoke(function: str) -> tuple[dict, str | None]:
        payload = json.dumps({"bucket": names["raw_bucket"]}).encode()
        response = client.invoke(FunctionName=function, Payload=payload)
        return json.loads(response["Payload"].read()), response.get("FunctionError")

    return invoke


def test_a_function_runs_with_its_execution_roles_credentials(enforced, runtime):
    server, names, _ = enforced
    result, error = runtime("ingest-probe")
    assert error is None, result
    assert f":assumed-role/{names['ingest_role']}/ingest-probe" in result["caller"]
    assert result["has_session_token"]
    assert result["access_key_id"] != server.iam_keys[credentials.OPERATOR]["AccessKeyId"]


def test_each_function_is_held_to_its_own_role(runtime):
    ingest_result, _ = runtime("ingest-probe")
    assert ingest_result["outcomes"]["put"] == "allowed"
    assert "AccessDenied" in ingest_result["outcomes"]["get"]
    etl_result, _ = runtime("etl-probe")
    assert "AccessDenied" in etl_result["outcomes"]["put"]
    assert etl_result["outcomes"]["get"] == "allowed"


def test_a_function_whose_role_does_not_trust_lambda_does_not_run(runtime):
    result, error = runtime("instance-probe")
    assert error == "Unhandled"
    assert result["errorType"] == "InvalidParameterValueException"
    assert "could not assume" in result["errorMessage"]

"""The local platform's stand-ins for what moto cannot do, on their own (tools/local_platform).

- emulator.py: a bucket with the storage stage's TLS-only policy accepts objects under moto, and
  a Deny without conditions still refuses them (policies are still evaluated).
- runtime.py: a function deployed to moto runs from the zip with the deployed hash, with its
  environment and a Lambda context; errors, time-outs and code that is not on this machine come
  back as Lambda reports them.
- cli.py's `etl --start --end` (`make etl START= END=`): through the runtime, a window loads an
  hour per invocation, a line per hour as each returns, and stops at the first failure saying
  where to resume (a stand-in for Lambda ETL answers: tests/test_backfill.py runs the real one).

The whole platform (make up → make down) is tests/e2e/test_local_platform.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.fixtures.aws import REGION, MotoServer, aws_environment, zip_of
from tests.fixtures.local_runtime import local_lambda_runtime
from tests.fixtures.processes import free_loopback_port, port_answers, wait_until
from tools.local_platform import cli

REPOSITORY = Path(__file__).resolve().parents[1]
HOST_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
HANDLER = textwrap.dedent(
    """
    import os
    import time

    def handler(event, context):
        if event.get("sleep"):
            time.sleep(event["sleep"])
        if event.get("fail"):
            raise RuntimeError("asked to fail")
        return {
            "greeting": os.environ.get("GREETING"),
            "function": context.function_name,
            "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "code": os.path.dirname(os.path.abspath(__file__)),
        }
    """
)
# Lambda ETL's window run as the CLI sees it: a report per invocation, one hour each, and a
# failure at the hour FAIL_AT names.
ETL_STAND_IN = textwrap.dedent(
    """
    import os

    def handler(event, context):
        hour = event["start"][:13]
        if event["end"][:13] != hour:
            raise ValueError("one hour per invocation, not " + event["start"] + ".." + event["end"])
        if hour == os.environ["FAIL_AT"]:
            raise RuntimeError("the warehouse went away")
        return {
            "status": "succeeded", "objects": 2, "events_loaded": 10, "events_updated": 0,
            "duplicates_skipped": 1, "rejected_lines": 1, "missing_objects": 0,
        }
    """
)
ETL_FAILS_AT = "2025-12-01T02"


def start(argv: list[str], log_path: Path, port: int, environment: dict) -> subprocess.Popen:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=REPOSITORY, stdout=log, stderr=log, env={**os.environ, **environment}
        )
    wait_until(lambda: port_answers(port), f"{argv[2]} on port {port}")
    return process


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> MotoServer:
    port = free_loopback_port()
    log_path = tmp_path_factory.mktemp("emulator") / "emulator.log"
    argv = [
        sys.executable,
        "-m",
        "tools.local_platform.emulator",
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    process = start(argv, log_path, port, {})
    yield MotoServer(f"http://127.0.0.1:{port}")
    process.terminate()
    process.wait(timeout=10)


def bucket_with_policy(server: MotoServer, name: str, statement: dict) -> None:
    s3 = server.client("s3")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))


def test_the_tls_only_policy_lets_objects_in_under_the_emulator(emulator, monkeypatch):
    for name, value in aws_environment(emulator.endpoint_url).items():
        monkeypatch.setenv(name, value)
    policy = (REPOSITORY / "templates/s3/tls_only_bucket_policy.json.j2").read_text()
    statement = json.loads(
        policy.replace("{{ aws_partition }}", "aws").replace("{{ bucket_name }}", "tls-only")
    )["Statement"][0]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket_with_policy(emulator, "tls-only", statement)
    s3 = emulator.client("s3")
    s3.put_object(Bucket="tls-only", Key="events/a.json", Body=b"{}\n")
    assert s3.get_object(Bucket="tls-only", Key="events/a.json")["Body"].read() == b"{}\n"

    unconditional = {**statement, "Resource": "arn:aws:s3:::deny-all/*"}
    del unconditional["Condition"]
    bucket_with_policy(emulator, "deny-all", unconditional)
    with pytest.raises(s3.exceptions.ClientError, match="403"):
        s3.put_object(Bucket="deny-all", Key="events/a.json", Body=b"{}\n")


@pytest.fixture(scope="module")
def runtime(emulator, tmp_path_factory):
    """A function deployed to the emulator, its zip in a build folder, the runtime serving it."""
    base = tmp_path_factory.mktemp("runtime")
    build_dir = base / "build"
    build_dir.mkdir()
    code = zip_of(HANDLER)
    (build_dir / "probe.zip").write_bytes(code)
    environment = aws_environment(emulator.endpoint_url)
    iam = boto3.client("iam", **client_arguments(emulator.endpoint_url))
    role = iam.create_role(RoleName="probe", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    functions = boto3.client("lambda", **client_arguments(emulator.endpoint_url))
    for name, timeout in (("probe", 30), ("slow-probe", 1)):
        functions.create_function(
            FunctionName=name, Runtime=HOST_RUNTIME, Role=role, Handler="handler.handler",
            Code={"ZipFile": code}, Timeout=timeout,
            Environment={"Variables": {"GREETING": f"hello from {name}"}},
        )  # fmt: skip
    etl_code = zip_of(ETL_STAND_IN)
    (build_dir / "etl-stand-in.zip").write_bytes(etl_code)
    functions.create_function(
        FunctionName="etl-stand-in",
        Runtime=HOST_RUNTIME,
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": etl_code},
        Environment={"Variables": {"FAIL_AT": ETL_FAILS_AT}},
    )
    with local_lambda_runtime(
        emulator.endpoint_url,
        build_dir=build_dir,
        state_dir=base / "state",
        log_path=base / "runtime.log",
        environment=environment,
    ) as invoke_url:
        yield {
            "client": boto3.client(
                "lambda",
                **client_arguments(invoke_url),
                config=Config(read_timeout=60, retries={"max_attempts": 0}),
            ),
            "functions": functions,
            "state_dir": base / "state",
        }


def client_arguments(endpoint_url: str) -> dict:
    environment = aws_environment(endpoint_url)
    return {
        "endpoint_url": endpoint_url,
        "region_name": REGION,
        "aws_access_key_id": environment["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": environment["AWS_SECRET_ACCESS_KEY"],
    }


def invoke(runtime, name: str, event: dict) -> tuple[dict, str | None]:
    response = runtime["client"].invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_a_function_runs_from_its_deployed_zip_with_its_environment(runtime):
    result, error = invoke(runtime, "probe", {})
    assert error is None
    assert result["greeting"] == "hello from probe"
    assert result["function"] == "probe"
    assert 0 < result["remaining_ms"] <= 30_000
    assert Path(result["code"]).parent == runtime["state_dir"] / "code"
    second, _ = invoke(runtime, "probe", {})
    assert second["request_id"] != result["request_id"]


def test_an_exception_comes_back_as_an_unhandled_function_error(runtime):
    result, error = invoke(runtime, "probe", {"fail": True})
    assert error == "Unhandled"
    assert (result["errorType"], result["errorMessage"]) == ("RuntimeError", "asked to fail")
    # The environment is replaced and serves the next invocation.
    assert invoke(runtime, "probe", {})[1] is None


def test_a_function_past_its_timeout_is_stopped(runtime):
    result, error = invoke(runtime, "slow-probe", {"sleep": 5})
    assert error == "Unhandled"
    assert result["errorMessage"] == "Task timed out after 1.00 seconds"
    assert invoke(runtime, "slow-probe", {})[1] is None


def test_code_that_is_not_on_this_machine_is_refused_not_run_from_sources(runtime):
    runtime["functions"].update_function_code(
        FunctionName="probe", ZipFile=zip_of(HANDLER + "\n# another build\n")
    )
    wait_until(
        lambda: invoke(runtime, "probe", {})[1] is not None,
        "the runtime to see the new code hash",
        timeout_seconds=15,
    )
    result, error = invoke(runtime, "probe", {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.CodeNotFound"


def test_an_unknown_function_is_not_found(runtime):
    client = runtime["client"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")


def hour_line(hour: str) -> str:
    """The pattern of the CLI's line for an hour the stand-in loaded (its seconds vary)."""
    return rf"{hour}: 2 objects, 10 events loaded, 0 updated, 1 duplicates, 1 rejected, \d+\.\d s"


def test_the_cli_loads_a_window_an_hour_per_invocation_with_a_line_per_hour(runtime, capsys):
    invoke = cli.etl_invoker(runtime["client"], "etl-stand-in")
    assert cli.etl_window(invoke, "2025-11-30T23", "2025-12-01T01", force=False) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [hour_line(hour) for hour in ("2025-11-30T23", "2025-12-01T00", "2025-12-01T01")]
    expected.append(
        r"total 2025-11-30T23\.\.2025-12-01T01: 6 objects, 30 events loaded, 0 updated, "
        r"3 duplicates, 3 rejected, \d+\.\d s"
    )
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), line


def test_the_cli_stops_at_the_first_hour_that_fails_and_names_the_hour_to_resume_from(
    runtime, capsys
):
    invoke = cli.etl_invoker(runtime["client"], "etl-stand-in")
    assert cli.etl_window(invoke, "2025-12-01T00", "2025-12-01T05", force=False) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    assert re.fullmatch(hour_line("2025-12-01T00"), lines[0])
    assert re.fullmatch(hour_line("2025-12-01T01"), lines[1])
    assert lines[2] == (
        f"{ETL_FAILS_AT}: failed: the ETL function failed: RuntimeError: the warehouse went away"
    )
    assert lines[3] == (
        f"The hours before {ETL_FAILS_AT} are loaded; resume with --start {ETL_FAILS_AT} "
        "--end 2025-12-01T05"
    )

"""The local Lambda runtime: serves the functions deployed to the emulator, which cannot run them.

moto stores each function's configuration (handler, runtime, timeout, environment, code hash)
but runs no code without Docker. This daemon fills that gap for the local platform, reading
everything from the emulated account, as AWS would:

- **Lambda Invoke** (``POST /2015-03-31/functions/NAME/invocations`` on ``--invoke-port``): the
  Lambda API's own path, so ``boto3.client("lambda", endpoint_url=...)`` and
  ``aws lambda invoke --endpoint-url ...`` work; RequestResponse and Event invocations.
- **The HTTP API** (``--api-port``): the API Gateway HTTP API's routes and CORS origins, read
  from the emulator; each request becomes the payload-format-2.0 event of its integration's
  function (tools/local_platform/http_api.py).
- **The schedule**: every enabled EventBridge rule with a ``rate(...)`` expression invokes its
  Lambda targets (asynchronously, with the scheduled event) at that rate.
- **Static files** (``--static-port``): files/ (the demo shop and the tracker snippet), as a
  shop's web server would serve them.

Code: a function runs from the deployment zip whose SHA-256 is the ``CodeSha256`` the emulator
holds (found in ``--build-dir``), unpacked once, in a worker process of its own
(lambda_worker.py) with the function's environment plus the emulator's endpoint and, as Lambda
gives them, its execution role's credentials: ``sts:AssumeRole`` of the function's Role, made as
the Lambda service (with its stand-in's key from ``--iam-keys``, credentials.py, when the
emulator enforces IAM), renewed with each new worker and before they expire. A worker never
holds the runtime's own credentials. A function whose deployed code is not found is refused,
never run from the sources.

Not production code: it exists only for the local inventory (make up).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from tools.local_platform import credentials
from tools.local_platform.http_api import HttpApi

WORKER = Path(__file__).with_name("lambda_worker.py")
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
RATE_EXPRESSION = re.compile(r"^rate\((?P<count>\d+) (?P<unit>minutes?|hours?|days?)\)$")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# How long a function's configuration read from the emulator is reused before it is read again.
CONFIGURATION_TTL_SECONDS = 5.0
# Lambda retries a failed asynchronous invocation twice.
ASYNC_RETRIES = 2
# A worker whose role credentials expire sooner than this is replaced before an invocation.
CREDENTIALS_RENEWAL_SECONDS = 300


def log(message: str, **fields: Any) -> None:
    print(
        json.dumps({"time": time.strftime("%FT%TZ", time.gmtime()), "message": message, **fields}),
        flush=True,
    )


class FunctionError(Exception):
    """An invocation ended with an error payload (X-Amz-Function-Error)."""

    def __init__(self, payload: dict[str, Any], kind: str = "Unhandled") -> None:
        super().__init__(payload.get("errorMessage", kind))
        self.payload, self.kind = payload, kind


class Throttled(Exception):
    """A synchronous invocation found the function's reserved concurrency taken: Lambda answers
    429 TooManyRequestsException (reason ReservedFunctionConcurrentInvocationLimitExceeded)."""


@dataclass(frozen=True)
class Deployment:
    """What the emulator says a function is: what the worker must run and how."""

    name: str
    arn: str
    handler: str
    runtime: str
    timeout_seconds: int
    memory_mb: int
    code_sha256: str  # base64, as Lambda reports it
    environment: tuple[tuple[str, str], ...]
    role: str  # the execution role's ARN


def code_sha256(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


class Worker:
    """One execution environment: a lambda_worker.py process running one deployment."""

    def __init__(
        self,
        deployment: Deployment,
        code_directory: Path,
        aws_environment: dict,
        log_path: Path,
        credentials_expire_at: float = float("inf"),
    ) -> None:
        self.deployment = deployment
        self.credentials_expire_at = credentials_expire_at
        reply_read, reply_write = os.pipe()
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            **aws_environment,
            **dict(deployment.environment),
            "AWS_LAMBDA_FUNCTION_NAME": deployment.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(deployment.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(deployment.timeout_seconds),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{deployment.runtime}",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--code",
                str(code_directory),
                "--handler",
                deployment.handler,
                "--reply-fd",
                str(reply_write),
            ],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=self._log,
            env=environment,
            pass_fds=(reply_write,),
        )
        os.close(reply_write)
        self._replies = os.fdopen(reply_read, "r", encoding="utf-8")
        started = self._read_reply(timeout_seconds=60)
        if "init_error" in started:
            self.stop()
            raise FunctionError(started["init_error"], kind="Unhandled")

    def _read_reply(self, timeout_seconds: float) -> dict[str, Any]:
        ready, _, _ = select.select([self._replies], [], [], timeout_seconds)
        line = self._replies.readline() if ready else ""
        if not line:
            raise TimeoutError
        return json.loads(line)

    def invoke(self, event: Any, request_id: str) -> Any:
        timeout = self.deployment.timeout_seconds
        deadline_ms = int(time.time() * 1000) + timeout * 1000
        message = {"event": event, "request_id": request_id, "deadline_epoch_ms": deadline_ms}
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
            reply = self._read_reply(timeout_seconds=timeout)
        except (TimeoutError, BrokenPipeError, ValueError) as error:
            self.stop()
            if isinstance(error, TimeoutError) and self.process.returncode in (None, -9):
                message = f"Task timed out after {timeout}.00 seconds"
            else:
                message = f"Runtime exited with error: exit status {self.process.returncode}"
            raise FunctionError(
                {"errorMessage": message, "errorType": "Runtime.ExitError"}, kind="Unhandled"
            ) from error
        if "error" in reply:
            raise FunctionError(reply["error"])
        return reply["result"]

    def alive(self) -> bool:
        return self.process.poll() is None

    def credentials_expire_soon(self) -> bool:
        return self.credentials_expire_at - time.time() < CREDENTIALS_RENEWAL_SECONDS

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._log.close()


class Runtime:
    """Runs the emulator's functions from their deployed zips, one worker per function."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        build_dir: Path,
        state_dir: Path,
        lambda_service_key: dict[str, str] | None = None,
    ) -> None:
        self.endpoint_url, self.region = endpoint_url, region
        self.build_dir, self.state_dir = build_dir, state_dir
        # The runtime's own credentials, for what the Lambda service itself reads (functions'
        # configurations, the HTTP API, the schedule); never given to a worker.
        self.aws_environment = {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        }
        # Who assumes the functions' roles: the Lambda service's stand-in where IAM is enforced;
        # else any key does (moto then checks no trust policy).
        self.lambda_service_key = lambda_service_key or {
            "AccessKeyId": self.aws_environment["AWS_ACCESS_KEY_ID"],
            "SecretAccessKey": self.aws_environment["AWS_SECRET_ACCESS_KEY"],
        }
        self._clients: dict[str, Any] = {}
        self._workers: dict[str, Worker] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._configurations: dict[str, tuple[float, Deployment]] = {}
        self._guard = threading.Lock()

    def client(self, service: str):
        with self._guard:
            if service not in self._clients:
                self._clients[service] = boto3.client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=self.aws_environment["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key=self.aws_environment["AWS_SECRET_ACCESS_KEY"],
                )
            return self._clients[service]

    def deployment(self, name: str) -> Deployment:
        """The function's configuration in the emulator (a name or an ARN), briefly cached."""
        name = name.rsplit(":function:", 1)[-1].split(":", 1)[0]
        cached = self._configurations.get(name)
        if cached and time.monotonic() - cached[0] < CONFIGURATION_TTL_SECONDS:
            return cached[1]
        try:
            configuration = self.client("lambda").get_function(FunctionName=name)["Configuration"]
        except self.client("lambda").exceptions.ResourceNotFoundException as error:
            raise FunctionError(
                {"errorMessage": f"Function not found: {name}", "errorType": "ResourceNotFound"},
                kind="ResourceNotFound",
            ) from error
        deployment = Deployment(
            name=configuration["FunctionName"],
            arn=configuration["FunctionArn"],
            handler=configuration["Handler"],
            runtime=configuration["Runtime"],
            timeout_seconds=int(configuration.get("Timeout", 3)),
            memory_mb=int(configuration.get("MemorySize", 128)),
            code_sha256=configuration["CodeSha256"],
            environment=tuple(
                sorted((configuration.get("Environment") or {}).get("Variables", {}).items())
            ),
            role=configuration["Role"],
        )
        self._configurations[name] = (time.monotonic(), deployment)
        return deployment

    def execution_environment(self, deployment: Deployment) -> tuple[dict[str, str], float]:
        """The function's AWS environment, as Lambda sets it: the endpoint, the region and its
        execution role's temporary credentials; and when those expire (epoch seconds)."""
        try:
            role = credentials.assume_role(
                self.endpoint_url,
                self.region,
                self.lambda_service_key,
                deployment.role,
                session=deployment.name,
            )
        except ClientError as error:
            raise FunctionError(
                {
                    "errorMessage": f"Lambda could not assume {deployment.name}'s execution "
                    f"role {deployment.role}: {error}",
                    "errorType": "InvalidParameterValueException",
                }
            ) from error
        environment = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            **credentials.key_environment(role),
        }
        return environment, role["Expiration"].timestamp()

    def code_directory(self, deployment: Deployment) -> Path:
        """The deployed zip, unpacked once: the one in --build-dir with the deployed hash."""
        wanted = self.state_dir / "code" / deployment.code_sha256.replace("/", "_")
        if wanted.is_dir():
            return wanted
        host_python = f"python{sys.version_info.major}.{sys.version_info.minor}"
        if deployment.runtime != host_python:
            raise FunctionError(
                {
                    "errorMessage": f"{deployment.name} is deployed for {deployment.runtime}; this "
                    f"runtime runs {host_python} (set lambdas_runtime in the local inventory)",
                    "errorType": "Runtime.InvalidRuntime",
                }
            )
        for candidate in sorted(self.build_dir.glob("*.zip")):
            if code_sha256(candidate) == deployment.code_sha256:
                partial = wanted.with_name(wanted.name + ".partial")
                with zipfile.ZipFile(candidate) as archive:
                    archive.extractall(partial)
                partial.rename(wanted)
                log("unpacked deployed code", function=deployment.name, zip=str(candidate))
                return wanted
        raise FunctionError(
            {
                "errorMessage": f"The code deployed to {deployment.name} (CodeSha256 "
                f"{deployment.code_sha256}) is not in {self.build_dir}; deploy with make up",
                "errorType": "Runtime.CodeNotFound",
            }
        )

    def reserved_concurrency(self, name: str) -> int | None:
        """The function's reserved concurrency in the emulator, read afresh (None: none)."""
        response = self.client("lambda").get_function_concurrency(FunctionName=name)
        reserved = response.get("ReservedConcurrentExecutions")
        return None if reserved is None else int(reserved)

    @contextlib.contextmanager
    def _execution_environment(self, name: str, lock: threading.Lock, throttle: bool):
        """Hold the function's one execution environment. With ``throttle``, as Lambda treats
        a synchronous invocation: Throttled when the reservation is 0, or 1 and the environment
        is busy, instead of waiting. Otherwise (and for reservations above 1, which one local
        environment cannot serve at once) invocations wait their turn."""
        reserved = self.reserved_concurrency(name) if throttle else None
        if reserved == 0 or (reserved == 1 and not lock.acquire(blocking=False)):
            log("throttled", function=name, reserved_concurrency=reserved)
            raise Throttled(name)
        if reserved != 1:
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def invoke(self, name: str, event: Any, *, throttle: bool = False) -> Any:
        """One synchronous invocation; raises FunctionError as Lambda would report it, and
        with ``throttle`` (the Invoke API's RequestResponse) Throttled as Lambda would."""
        deployment = self.deployment(name)
        request_id = str(uuid.uuid4())
        with self._guard:
            lock = self._locks.setdefault(deployment.name, threading.Lock())
        # One invocation at a time per function: one execution environment.
        with self._execution_environment(deployment.name, lock, throttle):
            worker = self._workers.get(deployment.name)
            if (
                worker is None
                or not worker.alive()
                or worker.deployment != deployment
                or worker.credentials_expire_soon()
            ):
                if worker is not None:
                    worker.stop()
                log_path = self.state_dir / "logs" / f"{deployment.name}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                code_directory = self.code_directory(deployment)
                environment, expire_at = self.execution_environment(deployment)
                worker = Worker(deployment, code_directory, environment, log_path, expire_at)
                self._workers[deployment.name] = worker
            return worker.invoke(event, request_id)

    def invoke_async(self, name: str, event: Any) -> None:
        """An Event invocation: queued, run in the background, retried twice on error."""

        def run() -> None:
            for attempt in range(ASYNC_RETRIES + 1):
                try:
                    result = self.invoke(name, event)
                    log("async invocation done", function=name, result=result)
                    return
                except FunctionError as error:
                    log(
                        "async invocation failed",
                        function=name,
                        attempt=attempt + 1,
                        error=error.payload,
                    )
                    time.sleep(min(60, 2**attempt))

        threading.Thread(target=run, name=f"async-{name}", daemon=True).start()

    def stop(self) -> None:
        for worker in self._workers.values():
            worker.stop()


class _InvokeHandler(http.server.BaseHTTPRequestHandler):
    """Lambda's Invoke API: POST /2015-03-31/functions/NAME/invocations."""

    runtime: Runtime

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload, default=str).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        match = INVOKE_PATH.match(self.path.split("?", 1)[0])
        if match is None:
            return self._reply(404, {"message": f"No such route: {self.path}"})
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return self._reply(
                400,
                {"Type": "User", "message": "Could not parse request body"},
                {"X-Amzn-ErrorType": "InvalidRequestContentException"},
            )
        name = match["name"]
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        try:
            if invocation_type == "Event":
                self.runtime.deployment(name)
                self.runtime.invoke_async(name, event)
                return self._reply(202, None)
            if invocation_type == "DryRun":
                self.runtime.deployment(name)
                return self._reply(204, None)
            return self._reply(200, self.runtime.invoke(name, event, throttle=True))
        except Throttled:
            # What botocore turns into TooManyRequestsException (the error type header).
            return self._reply(
                429,
                {
                    "Type": "User",
                    "message": "Rate Exceeded.",
                    "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                },
                {"X-Amzn-ErrorType": "TooManyRequestsException"},
            )
        except FunctionError as error:
            if error.kind == "ResourceNotFound":
                return self._reply(
                    404,
                    {"Type": "User", "Message": error.payload["errorMessage"]},
                    {"X-Amzn-ErrorType": "ResourceNotFoundException"},
                )
            return self._reply(200, error.payload, {"X-Amz-Function-Error": error.kind})


def http_api_from_emulator(runtime: Runtime, port: int) -> HttpApi | None:
    """The HTTP API deployed to the emulator, served on ``port``: its first Lambda route."""
    api_client = runtime.client("apigatewayv2")
    for api in api_client.get_apis().get("Items", []):
        if api.get("ProtocolType") != "HTTP":
            continue
        integrations = {
            item["IntegrationId"]: item
            for item in api_client.get_integrations(ApiId=api["ApiId"]).get("Items", [])
        }
        for route in api_client.get_routes(ApiId=api["ApiId"]).get("Items", []):
            target = route.get("Target", "")
            integration = integrations.get(target.removeprefix("integrations/"))
            if integration is None or ":function:" not in integration.get("IntegrationUri", ""):
                continue
            function_arn = integration["IntegrationUri"].split("/functions/")[-1].split("/")[0]
            origins = (api.get("CorsConfiguration") or {}).get("AllowOrigins", [])

            def handler(event: dict, context: Any, function: str = function_arn) -> dict:
                try:
                    return runtime.invoke(function, event)
                except FunctionError as error:
                    log("integration error", function=function, error=error.payload)
                    return {
                        "statusCode": 500,
                        "body": '{"message":"Internal Server Error"}',
                        "headers": {"Content-Type": "application/json"},
                    }

            server = HttpApi(("127.0.0.1", port), handler, origins, route_key=route["RouteKey"])
            log(
                "serving HTTP API",
                api=api["Name"],
                route=route["RouteKey"],
                url=server.url,
                function=function_arn,
                cors_origins=origins,
            )
            return server
    return None


def schedules_from_emulator(runtime: Runtime) -> list[tuple[str, float, str, Any]]:
    """(rule name, interval in seconds, function ARN, event) of each rate rule's Lambda target."""
    events = runtime.client("events")
    account_region = runtime.region
    schedules = []
    for rule in events.list_rules().get("Rules", []):
        expression = rule.get("ScheduleExpression", "")
        if rule.get("State") != "ENABLED" or not expression:
            continue
        match = RATE_EXPRESSION.match(expression)
        if match is None:
            log(
                "schedule not run: only rate(...) expressions are supported locally",
                rule=rule["Name"],
                expression=expression,
            )
            continue
        interval = int(match["count"]) * UNIT_SECONDS[match["unit"].rstrip("s")]
        for target in events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", []):
            if ":lambda:" not in target["Arn"]:
                continue
            scheduled_event = (
                json.loads(target["Input"])
                if target.get("Input")
                else {
                    "version": "0",
                    "detail-type": "Scheduled Event",
                    "source": "aws.events",
                    "region": account_region,
                    "resources": [rule["Arn"]],
                    "detail": {},
                }
            )
            schedules.append((rule["Name"], interval, target["Arn"], scheduled_event))
    return schedules


def run_schedule(
    runtime: Runtime,
    rule: str,
    interval: float,
    function: str,
    event: Any,
    stopping: threading.Event,
) -> None:
    # EventBridge first fires a rate rule one interval after it is created.
    while not stopping.wait(interval):
        fired = dict(event)
        if fired.get("source") == "aws.events":
            fired.update(id=str(uuid.uuid4()), time=time.strftime("%FT%TZ", time.gmtime()))
        log("schedule fired", rule=rule, function=function)
        runtime.invoke_async(function, fired)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-url", required=True, help="the emulator (moto)")
    parser.add_argument("--region", required=True)
    parser.add_argument("--build-dir", type=Path, required=True, help="where the zips are")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--invoke-port", type=int, required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--static-port", type=int)
    parser.add_argument("--static-dir", type=Path)
    parser.add_argument(
        "--iam-keys", type=Path, help="the emulator's keys (credentials.py) when it enforces IAM"
    )
    arguments = parser.parse_args(argv)

    lambda_service_key = (
        credentials.access_keys(arguments.iam_keys)[credentials.LAMBDA_SERVICE]
        if arguments.iam_keys
        else None
    )
    runtime = Runtime(
        arguments.endpoint_url,
        arguments.region,
        arguments.build_dir,
        arguments.state_dir,
        lambda_service_key,
    )
    stopping = threading.Event()
    servers: list[Any] = []

    invoke_handler = type("InvokeHandler", (_InvokeHandler,), {"runtime": runtime})
    invoke_server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", arguments.invoke_port), invoke_handler
    )
    invoke_server.daemon_threads = True
    servers.append(invoke_server)
    log("serving Lambda Invoke", url=f"http://127.0.0.1:{arguments.invoke_port}")

    api = http_api_from_emulator(runtime, arguments.api_port)
    if api is None:
        log("no HTTP API with a Lambda route in the emulator: ingest is not served")
    else:
        servers.append(api)

    if arguments.static_port:
        static_handler = functools.partial(
            http.server.SimpleHTTPRequestHandler, directory=str(arguments.static_dir)
        )
        static_server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", arguments.static_port), static_handler
        )
        static_server.daemon_threads = True
        servers.append(static_server)

    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for rule, interval, function, event in schedules_from_emulator(runtime):
        log("schedule", rule=rule, every_seconds=interval, function=function)
        threading.Thread(
            target=run_schedule,
            daemon=True,
            args=(runtime, rule, interval, function, event, stopping),
        ).start()

    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log("ready")
    stopping.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    runtime.stop()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

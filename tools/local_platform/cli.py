"""The whole platform on one machine: `make up`, `make down` and their companions.

    python -m tools.local_platform up [ANSIBLE-PLAYBOOK ARGS]   moto, the DWH instance, site.yml
    python -m tools.local_platform down                         stop and remove all of it
    python -m tools.local_platform status                       what runs, where
    python -m tools.local_platform etl [--start T --end T [--force]]   invoke Lambda ETL now
                                                                       (a window: an hour at a time)
    python -m tools.local_platform traffic [--sessions N --rate R]     the synthetic shop, live
    python -m tools.local_platform psql                         psql on the warehouse (ETL login)
    python -m tools.local_platform env                          export lines for AWS_ENDPOINT_URL

`up` is what a production run is, with AWS emulated: a moto server on loopback stands in for the
account, a systemd-nspawn instance (tools/molecule_nspawn.py, the role tests' tooling) for the
DWH EC2 instance, and ``ansible-playbook site.yml -i inventories/local`` configures both. Like
the EC2 instance in its private subnet, the DWH instance has no route anywhere: it boots with no
network but its own loopback, and its links are Unix sockets bind-mounted into it, whose
machine's end is the links daemon (links.py). Inside, 127.0.0.1 on the emulator's port leads to
the emulator (the package mirror's bucket); PostgreSQL and the dashboards listen on the
instance's 127.0.0.1 and are reached at local_platform_dwh_address, the stand-in for its private
IP, and the dashboards also at the machine's 127.0.0.1 (the SSM port forward's stand-in). moto
keeps the functions but cannot run them, so `up` ends by (re)starting the local Lambda runtime
(runtime.py): the HTTP API, Lambda Invoke and the schedule.

The emulator enforces IAM (emulator.py --enforce-iam): site.yml, `make psql` and `make env` use
the operator's key, and each function runs with its own execution role's credentials. The keys
are made at random by the first `up` and kept (0600) in the state directory (credentials.py).

Every address and port comes from the local inventory (inventories/local/hosts.yml and the
group_vars beside it), read with Ansible itself; no host is contacted and the emulator need not
run. Must run as root (systemd-nspawn, nsenter).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.module_utils.clickstream_backfill import (
    MAX_WINDOW_HOURS,
    BackfillError,
    chunk_result,
    hour_text,
    invocation_result,
    loaded_line,
    parse_hour,
    require_succeeded,
    span_text,
    totals,
    window_hours,
    window_request,
)
from tools.local_platform import credentials

REPOSITORY = Path(__file__).resolve().parents[2]
INVENTORY = REPOSITORY / "inventories" / "local"
# Only the static part of the local inventory: its group_vars load, and its aws_ec2 source, which
# needs the emulator running, is left out.
SETTINGS_INVENTORY = INVENTORY / "hosts.yml"
BIN = Path(sys.executable).parent
NSPAWN_TOOL = REPOSITORY / "tools" / "molecule_nspawn.py"
STOP_TIMEOUT_SECONDS = 15
START_TIMEOUT_SECONDS = 60
DASHBOARD_START_SECONDS = 120

# The DWH instance's links (tools/molecule_nspawn.py --reach/--expose): a Unix socket each in the
# directory bind-mounted into the instance.
MOTO_LINK, WAREHOUSE_LINK, DASHBOARD_LINK = "moto", "postgresql", "dashboard"

# What `up` reads from the local inventory, rendered by Ansible (plain variables of group all).
SETTINGS_EXPRESSION = """{{ {
  'region': aws_region,
  'moto_port': local_platform_moto_port,
  's3_gateway_endpoint_port': local_platform_s3_gateway_endpoint_port,
  'ingest_port': local_platform_ingest_port,
  'invoke_port': local_platform_invoke_port,
  'shop_port': local_platform_shop_port,
  'dashboard_port': local_platform_dashboard_port,
  'state_dir': local_platform_state_dir,
  'build_dir': lambdas_build_dir,
  'etl_function': lambdas_etl_name,
  'schedule': schedule_expression,
  'dwh_machine': local_platform_dwh_machine,
  'dwh_address': local_platform_dwh_address,
  'mirror_builder_machine': local_platform_mirror_builder_machine,
  'warehouse_port': warehouse_port,
  'warehouse_database': warehouse_database,
  'warehouse_etl_user': warehouse_etl_user,
  'etl_password_parameter': secrets_etl_writer_password_parameter,
  'dashboard_instance_port': local_platform_dashboard_instance_port,
} | to_json }}"""


class PlatformError(Exception):
    """Something the operator must fix; the message says what."""


@dataclass(frozen=True)
class Settings:
    region: str
    moto_port: int
    s3_gateway_endpoint_port: int
    ingest_port: int
    invoke_port: int
    shop_port: int
    dashboard_port: int
    state_dir: Path
    build_dir: Path
    etl_function: str
    schedule: str
    # The systemd-nspawn machine standing in for the DWH instance, and its address as this
    # machine sees it (the links daemon's listeners for PostgreSQL and the dashboards).
    dwh_machine: str
    dwh_address: str
    mirror_builder_machine: str
    warehouse_port: int
    warehouse_database: str
    warehouse_etl_user: str
    etl_password_parameter: str
    dashboard_instance_port: int

    @property
    def warehouse_host(self) -> str:
        return self.dwh_address

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}/clickstream"

    @property
    def shop_url(self) -> str:
        return f"http://127.0.0.1:{self.shop_port}/demo_shop/index.html?endpoint={self.ingest_url}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}/"

    @property
    def invoke_url(self) -> str:
        return f"http://127.0.0.1:{self.invoke_port}"

    @property
    def warehouse_url(self) -> str:
        return (
            f"postgresql://{self.warehouse_etl_user}@{self.warehouse_host}:"
            f"{self.warehouse_port}/{self.warehouse_database}"
        )

    def listeners(self) -> list[tuple[str, int]]:
        """Every address the platform serves: the machine's daemons, then the instance's."""
        ports = [self.moto_port, self.s3_gateway_endpoint_port, self.ingest_port]
        ports += [self.invoke_port, self.shop_port, self.dashboard_port]
        return [("127.0.0.1", port) for port in ports] + [
            (self.dwh_address, self.warehouse_port),
            (self.dwh_address, self.dashboard_instance_port),
        ]

    @property
    def iam_keys(self) -> Path:
        """The emulator's access keys (credentials.py), made by the first `up`."""
        return self.state_dir / "iam-keys.json"

    def operator_key(self) -> dict[str, str]:
        if not self.iam_keys.exists():
            raise PlatformError(f"the emulator has no keys yet ({self.iam_keys}): run `make up`")
        return credentials.access_keys(self.iam_keys)[credentials.OPERATOR]

    def aws_environment(self) -> dict[str, str]:
        """The operator's AWS environment: the emulator, signed with the operator's key."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **credentials.key_environment(self.operator_key()),
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def aws_client(self, service: str, endpoint_url: str | None = None, **options: Any) -> Any:
        """A boto3 client of the emulator (or of ``endpoint_url``) with the operator's key."""
        import boto3

        key = self.operator_key()
        return boto3.client(
            service,
            endpoint_url=endpoint_url or self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            **options,
        )

    def pid_file(self, daemon: str) -> Path:
        return self.state_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.state_dir / "logs" / f"{daemon}.log"


def read_settings() -> Settings:
    """The local inventory's values, rendered by Ansible (no host is contacted)."""
    result = subprocess.run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-i",
            str(SETTINGS_INVENTORY),
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={SETTINGS_EXPRESSION}",
            # What playbooks/ derive from their own folder; an ad hoc run has none.
            "-e",
            f"platform_repository_root={REPOSITORY}",
        ],
        cwd=REPOSITORY,
        env={**os.environ, "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
        message = report["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
        values: dict[str, Any] = json.loads(message) if isinstance(message, str) else message
    except (ValueError, KeyError, IndexError) as error:
        raise PlatformError(
            f"could not read the local inventory's settings:\n{result.stdout[-2000:]}"
            f"{result.stderr[-2000:]}"
        ) from error
    for name in ("state_dir", "build_dir"):
        values[name] = Path(values[name])
    for name in (
        "moto_port",
        "s3_gateway_endpoint_port",
        "ingest_port",
        "invoke_port",
        "shop_port",
        "dashboard_port",
        "warehouse_port",
        "dashboard_instance_port",
    ):
        values[name] = int(values[name])
    return Settings(**values)


# --- daemons: a pid file each under the state directory -------------------------------------


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def running_pid(settings: Settings, daemon: str) -> int | None:
    """The daemon's pid if its pid file names a live process that is still that daemon."""
    try:
        pid = int(settings.pid_file(daemon).read_text())
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    # Every daemon carries --state-dir: a recycled pid is not taken for it.
    return pid if f"--state-dir={settings.state_dir}".encode() in command_line else None


def start_daemon(
    settings: Settings,
    daemon: str,
    argv: list[str],
    environment: dict[str, str],
    ready_addresses: list[tuple[str, int]],
    ready_paths: tuple[Path, ...] = (),
) -> int:
    """Start ``daemon``; it is ready when it listens on every address and path given."""
    for host, port in ready_addresses:
        if port_answers(port, host):
            raise PlatformError(
                f"{host}:{port} is already in use by another program; free it or change "
                f"its port in {INVENTORY / 'group_vars/all/local_platform.yml'}"
            )
    log_path = settings.log_file(daemon)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPOSITORY,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    settings.pid_file(daemon).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not (
        all(port_answers(port, host) for host, port in ready_addresses)
        and all(path.is_socket() for path in ready_paths)
    ):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise PlatformError(f"{daemon} did not start (log {log_path}):\n{tail}")
        time.sleep(0.1)
    return process.pid


def stop_daemon(settings: Settings, daemon: str) -> bool:
    pid = running_pid(settings, daemon)
    settings.pid_file(daemon).unlink(missing_ok=True)
    if pid is None:
        return False
    # The daemon leads its own session: its workers go with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def ensure_moto(settings: Settings) -> str:
    if (
        running_pid(settings, "moto")
        and port_answers(settings.moto_port)
        and port_answers(settings.s3_gateway_endpoint_port)
    ):
        if settings.iam_keys.exists():
            return "running"
        # Started by an earlier `make up`, before IAM was enforced: its account knows no key.
        stop_daemon(settings, "moto")
    credentials.access_keys(settings.iam_keys)
    environment = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    start_daemon(
        settings,
        "moto",
        [
            sys.executable,
            "-m",
            "tools.local_platform.emulator",
            "-H",
            "127.0.0.1",
            "-p",
            str(settings.moto_port),
            f"--s3-gateway-endpoint-port={settings.s3_gateway_endpoint_port}",
            f"--enforce-iam={settings.iam_keys}",
            f"--state-dir={settings.state_dir}",
        ],
        environment,
        [("127.0.0.1", settings.moto_port), ("127.0.0.1", settings.s3_gateway_endpoint_port)],
    )
    return "started"


def restart_runtime(settings: Settings) -> None:
    stop_daemon(settings, "runtime")
    argv = [
        sys.executable,
        "-m",
        "tools.local_platform.runtime",
        f"--state-dir={settings.state_dir}",
        f"--endpoint-url={settings.endpoint_url}",
        f"--region={settings.region}",
        f"--build-dir={settings.build_dir}",
        f"--invoke-port={settings.invoke_port}",
        f"--api-port={settings.ingest_port}",
        f"--static-port={settings.shop_port}",
        f"--static-dir={REPOSITORY / 'files'}",
        f"--iam-keys={settings.iam_keys}",
    ]
    environment = {**os.environ, **settings.aws_environment(), "PYTHONPATH": str(REPOSITORY)}
    start_daemon(
        settings,
        "runtime",
        argv,
        environment,
        [
            ("127.0.0.1", port)
            for port in (settings.invoke_port, settings.ingest_port, settings.shop_port)
        ],
    )


def boot_dwh_instance(settings: Settings) -> Path:
    """The DWH instance, booted with no network but its loopback; the host directory of its
    links' sockets."""
    result = subprocess.run(
        [
            sys.executable,
            str(NSPAWN_TOOL),
            "create",
            settings.dwh_machine,
            "--private-network",
            f"--reach={MOTO_LINK}={settings.moto_port}",
            f"--expose={WAREHOUSE_LINK}={settings.warehouse_port}",
            f"--expose={DASHBOARD_LINK}={settings.dashboard_instance_port}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    links = json.loads(result.stdout)["links"]
    if links is None:
        # Booted by an earlier `make up`, before the instance was isolated.
        raise PlatformError(
            f"{settings.dwh_machine} runs with the machine's network; `make down` and `make up`"
        )
    return Path(links)


def restart_links(settings: Settings, links: Path) -> None:
    """The machine's end of the DWH instance's links (links.py), started afresh."""
    stop_daemon(settings, "links")
    moto_socket = links / f"{MOTO_LINK}.sock"
    warehouse_socket = links / f"{WAREHOUSE_LINK}.sock"
    dashboard_socket = links / f"{DASHBOARD_LINK}.sock"
    listeners = {
        (settings.dwh_address, settings.warehouse_port): warehouse_socket,
        (settings.dwh_address, settings.dashboard_instance_port): dashboard_socket,
        # The stand-in for an SSM port-forwarding session to the dashboards.
        ("127.0.0.1", settings.dashboard_port): dashboard_socket,
    }
    argv = [
        sys.executable,
        "-m",
        "tools.local_platform.links",
        f"--state-dir={settings.state_dir}",
        # Through the emulated S3 gateway endpoint, as the instance's subnet reaches S3 in AWS.
        f"--unix-to-tcp={moto_socket}=127.0.0.1:{settings.s3_gateway_endpoint_port}",
        *(
            f"--tcp-to-unix={host}:{port}={socket_path}"
            for (host, port), socket_path in listeners.items()
        ),
    ]
    start_daemon(
        settings,
        "links",
        argv,
        {**os.environ, "PYTHONPATH": str(REPOSITORY)},
        list(listeners),
        (moto_socket,),
    )


# --- the commands ------------------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        raise PlatformError("run as root: the DWH instance is a systemd-nspawn container")


def run_site(settings: Settings, ansible_arguments: list[str]) -> None:
    command = [str(BIN / "ansible-playbook"), "site.yml", "-i", str(INVENTORY), *ansible_arguments]
    print(f"$ {' '.join(command)}", flush=True)
    environment = {
        **os.environ,
        **settings.aws_environment(),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    if subprocess.run(command, cwd=REPOSITORY, env=environment, check=False).returncode != 0:
        raise PlatformError("site.yml failed (above); fix it and run `make up` again")


def up(arguments: argparse.Namespace) -> int:
    require_root()
    started = time.monotonic()
    settings = read_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"local platform: AWS emulator (moto, IAM enforced) on {settings.endpoint_url}: "
        f"{ensure_moto(settings)}",
        flush=True,
    )
    print(
        f"local platform: booting the DWH instance {settings.dwh_machine} (systemd-nspawn, "
        "no network but its loopback)",
        flush=True,
    )
    links = boot_dwh_instance(settings)
    restart_links(settings, links)
    run_site(settings, arguments.ansible_arguments)
    restart_runtime(settings)
    wait_for_dashboard(settings)
    print_summary(settings, time.monotonic() - started)
    return 0


def dashboard_answers(settings: Settings) -> bool:
    """The dashboard's page, through its port forward, is served (200). The links daemon's
    listener accepts whether or not the app runs: only an answer proves it does."""
    # No proxy from the environment: the address is this machine's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(settings.dashboard_url, timeout=5) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def wait_for_dashboard(settings: Settings) -> None:
    """The app starts a few seconds after its service (R loads its packages): `up` is done
    when the dashboard answers."""
    deadline = time.monotonic() + DASHBOARD_START_SECONDS
    while not dashboard_answers(settings):
        if time.monotonic() > deadline:
            raise PlatformError(
                f"the dashboard did not answer {settings.dashboard_url} in "
                f"{DASHBOARD_START_SECONDS} s; its service's journal in the instance says why "
                f"(unit clickstream-dashboard), the links' log is {settings.log_file('links')}"
            )
        time.sleep(0.5)


def print_summary(settings: Settings, seconds: float | None = None) -> None:
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    print(
        f"""
The local clickstream platform is up{took}.

  Ingest (the HTTP API)        POST {settings.ingest_url}
  Demo shop (tracker inside)   {settings.shop_url}
  Dashboards (port-forward)    {settings.dashboard_url}
  DWH instance                 {settings.dwh_machine} (systemd-nspawn): no network but its
                               loopback; reached at {settings.dwh_address} through its sockets
  Warehouse                    {settings.warehouse_url}
                               password: SSM SecureString {settings.etl_password_parameter};
                               `make psql` opens psql with it
  AWS (moto)                   {settings.endpoint_url}   (`eval "$(make -s env)"` for your shell)
  Lambda Invoke                {settings.invoke_url}   logs: {settings.state_dir}/logs/

  Send traffic                 make traffic [SESSIONS=200 RATE=50]
  Run the ETL now              make etl     (the schedule runs it: {settings.schedule})
  Tear it all down             make down
""",
        flush=True,
    )


def down(arguments: argparse.Namespace) -> int:
    require_root()
    settings = read_settings()
    stop_daemon(settings, "runtime")
    stop_daemon(settings, "links")
    # The mirror's builder too, if a package_mirror.yml run was cut short before removing it.
    for machine in (settings.dwh_machine, settings.mirror_builder_machine):
        subprocess.run(
            [sys.executable, str(NSPAWN_TOOL), "destroy", machine],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    stop_daemon(settings, "moto")
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    print("local platform: stopped; nothing is left running", flush=True)
    return 0


def status(arguments: argparse.Namespace) -> int:
    settings = read_settings()
    moto, runtime = running_pid(settings, "moto"), running_pid(settings, "runtime")
    links = running_pid(settings, "links")
    print(
        json.dumps(
            {
                "moto": {"pid": moto, "url": settings.endpoint_url},
                "runtime": {
                    "pid": runtime,
                    "ingest_url": settings.ingest_url,
                    "invoke_url": settings.invoke_url,
                },
                "links": {
                    "pid": links,
                    "dashboard_url": settings.dashboard_url,
                    "warehouse_url": settings.warehouse_url,
                },
                "dwh_machine": settings.dwh_machine,
            },
            indent=2,
        )
    )
    return 0 if moto and runtime and links else 3


def lambda_client(settings: Settings):
    from botocore.config import Config

    return settings.aws_client(
        "lambda",
        endpoint_url=settings.invoke_url,
        config=Config(read_timeout=960, retries={"max_attempts": 0}),
    )


# A synchronous invocation of the ETL function: its FunctionError (None) and its payload.
Invoke = Callable[[dict[str, Any]], tuple[str | None, bytes]]


def etl_invoker(client, function_name: str) -> Invoke:
    """Invoke the ETL function with an event; BackfillError when the call itself fails."""
    from botocore.exceptions import BotoCoreError, ClientError

    def invoke(event: dict[str, Any]) -> tuple[str | None, bytes]:
        try:
            response = client.invoke(FunctionName=function_name, Payload=json.dumps(event).encode())
        except (BotoCoreError, ClientError) as error:
            raise BackfillError(f"invoking {function_name} failed: {error}") from error
        return response.get("FunctionError"), response["Payload"].read()

    return invoke


def etl(arguments: argparse.Namespace) -> int:
    if bool(arguments.start) != bool(arguments.end):
        raise PlatformError("a window needs both --start and --end")
    settings = read_settings()
    invoke = etl_invoker(lambda_client(settings), settings.etl_function)
    if arguments.start:
        return etl_window(invoke, arguments.start, arguments.end, force=arguments.force)
    try:
        function_error, payload = invoke({})
    except BackfillError as error:
        raise PlatformError(str(error)) from None
    print(json.dumps(json.loads(payload or b"null"), indent=2))
    return 1 if function_error else 0


def etl_window(invoke: Invoke, start: str, end: str, *, force: bool) -> int:
    """Load the window an hour per invocation, in order, printing each hour's line as it returns
    and then the totals; stop at the first hour that fails and say where to resume.

    An invocation per hour, not one for the window: a synchronous invocation says nothing until
    it returns, and an hour is the unit the load resumes from (the backfill playbook's default).
    """
    try:
        first, last = parse_hour(start, "--start"), parse_hour(end, "--end")
        hours = window_hours(first, last, MAX_WINDOW_HOURS)
    except BackfillError as error:
        raise PlatformError(str(error)) from None
    started = time.monotonic()
    results = []
    for hour in hours:
        hour_started = time.monotonic()
        try:
            report = invocation_result(*invoke(window_request(hour, hour, force)))
            results.append(chunk_result(hour, hour, require_succeeded(report)))
        except BackfillError as error:
            print(f"{hour_text(hour)}: failed: {error}", flush=True)
            print(
                f"The hours before {hour_text(hour)} are loaded; resume with "
                f"--start {hour_text(hour)} --end {hour_text(last)}",
                flush=True,
            )
            return 1
        print(
            loaded_line(hour_text(hour), results[-1], time.monotonic() - hour_started), flush=True
        )
    summary = totals(results)
    print(loaded_line(f"total {span_text(first, last)}", summary, time.monotonic() - started))
    return 0


def traffic(arguments: argparse.Namespace) -> int:
    from tools import synthetic_shop

    settings = read_settings()
    return synthetic_shop.main(
        [
            "send",
            "--url",
            settings.ingest_url,
            "--sessions",
            str(arguments.sessions),
            "--rate",
            str(arguments.rate),
            "--seed",
            str(arguments.seed),
        ]
    )


def psql(arguments: argparse.Namespace) -> int:
    settings = read_settings()
    ssm = settings.aws_client("ssm")
    password = ssm.get_parameter(Name=settings.etl_password_parameter, WithDecryption=True)
    # In psql's environment only: never on its command line or printed.
    environment = {**os.environ, "PGPASSWORD": password["Parameter"]["Value"]}
    psql_path = shutil.which("psql") or "/usr/bin/psql"
    return subprocess.run(
        [psql_path, settings.warehouse_url], env=environment, check=False
    ).returncode


def env(arguments: argparse.Namespace) -> int:
    """The operator's environment for a shell (the key is random, URL-safe: no quoting needed)."""
    for name, value in read_settings().aws_environment().items():
        print(f"export {name}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.local_platform", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # Everything after `up` that is not its own goes to ansible-playbook (-v, --tags, -e ...).
    command = commands.add_parser("up", help="start everything and run site.yml")
    command.set_defaults(run=up)
    commands.add_parser("down", help="stop and remove everything").set_defaults(run=down)
    commands.add_parser("status", help="what runs, where").set_defaults(run=status)
    command = commands.add_parser("etl", help="invoke Lambda ETL now")
    command.add_argument("--start", help="window start (ISO-8601); default: a scheduled run")
    command.add_argument("--end", help="window end (ISO-8601)")
    command.add_argument("--force", action="store_true", help="reload the window's objects")
    command.set_defaults(run=etl)
    command = commands.add_parser("traffic", help="synthetic shop sessions to the ingest URL")
    command.add_argument("--sessions", type=int, default=200)
    command.add_argument("--rate", type=float, default=50, help="events per second")
    command.add_argument("--seed", type=int, default=7)
    command.set_defaults(run=traffic)
    commands.add_parser("psql", help="psql on the warehouse").set_defaults(run=psql)
    commands.add_parser("env", help="export lines for the emulator").set_defaults(run=env)
    arguments, unknown = parser.parse_known_args(argv)
    if arguments.command == "up":
        arguments.ansible_arguments = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return arguments.run(arguments)
    except PlatformError as error:
        print(f"local platform: {error}", file=sys.stderr)
        return 1

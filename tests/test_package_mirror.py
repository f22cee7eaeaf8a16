"""The package mirror (playbooks/package_mirror.yml, roles/apt_mirror) for real, on one machine.

An emulated account of its own (the local platform's emulator: moto, with the VPC's S3 gateway
endpoint served on a second port), provisioned by the network, security-group, storage, IAM and
compute stages; a systemd-nspawn instance stands in for the DWH host and is found by discovery as
clickstream-local-dwh. The mirror is built for a small package list by a real builder machine that
downloads from Debian, signed on the controller and uploaded to the emulated bucket; then the host
installs from it alone, reading the bucket anonymously through the emulated endpoint, as the DWH
host does in AWS.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.ansible import REPO_ROOT, PlaybookRun, extra_vars, run_playbook
from tests.fixtures.aws import (
    LOCAL_PLATFORM_EMULATOR,
    MotoServer,
    account_of_its_own,
    aws_environment,
    stack_bucket_name,
)
from tests.fixtures.processes import free_loopback_port
from tools.molecule_nspawn import container_command, find_instance

pytestmark = pytest.mark.slow

BUCKET = stack_bucket_name("mirror")
SNAPSHOT_PARAMETER = "/clickstream/local/package-mirror/snapshot"
SIGNING_KEY_PARAMETER = "/clickstream/local/package-mirror/signing-key"
PUBLIC_KEY_PARAMETER = "/clickstream/local/package-mirror/public-key"
# Small lists in place of the roles' own, one package per role, so that a build takes seconds.
# file's version has an epoch (1:5.44-3), which the mirror's file names must not carry.
PACKAGE_LISTS = {
    "postgresql_packages": ["tree"],
    "dwh_schema_packages": ["acl"],
    "r_shiny_packages": ["file"],
}
INSTALLED_FROM_MIRROR = ("tree", "acl", "file", "libmagic1")
NOT_IN_MIRROR = "sl"
BUILDER_BOOT_TASK = "Boot the builder machine"
MOLECULE_NSPAWN = REPO_ROOT / "tools" / "molecule_nspawn.py"
# GnuPG of this machine (Debian's gnupg and gpgv), which the playbook signs with too.
GPG, GPGV, GPGCONF = "/usr/bin/gpg", "/usr/bin/gpgv", "/usr/bin/gpgconf"

RunPlaybook = Callable[..., PlaybookRun]


@dataclass(frozen=True)
class Emulator:
    moto: MotoServer
    # The emulated S3 gateway endpoint: what the host reaches S3 through.
    gateway_url: str
    log_path: Path

    def mirror_requests(self) -> int:
        """How many requests for the mirror's snapshots the emulator has answered so far."""
        return self.log_path.read_text(errors="replace").count(f"/{BUCKET}/snapshots/")


@dataclass(frozen=True)
class Machines:
    dwh: str
    builder: str
    dwh_leader_pid: int
    # The stand-in host's root file system, as this machine sees it.
    rootfs: Path


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    gateway_port = free_loopback_port()
    log_path = tmp_path_factory.mktemp("mirror-emulator") / "emulator.log"
    with account_of_its_own(
        log_path, LOCAL_PLATFORM_EMULATOR, [("--s3-gateway-endpoint-port", gateway_port)]
    ) as moto:
        yield Emulator(moto, f"http://127.0.0.1:{gateway_port}", log_path)


def nspawn(action: str, name: str) -> dict:
    completed = subprocess.run(
        [sys.executable, str(MOLECULE_NSPAWN), action, name],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def machines() -> Iterator[Machines]:
    """The stand-in DWH host, and the builder's name; both gone afterwards."""
    suffix = secrets.token_hex(3)
    dwh, builder = f"mirror-test-dwh-{suffix}", f"mirror-test-builder-{suffix}"
    try:
        created = nspawn("create", dwh)
        yield Machines(dwh, builder, created["leader_pid"], Path(created["rootfs"]))
    finally:
        nspawn("destroy", builder)
        nspawn("destroy", dwh)


@pytest.fixture(scope="module")
def run(emulator: Emulator, machines: Machines, tmp_path_factory) -> RunPlaybook:
    """A playbook run with the local inventory, the stand-in host's machine name and the small
    package lists, against this module's emulator."""
    temp_dir = tmp_path_factory.mktemp("mirror-ansible")
    # The emulated instance the compute stage makes is the stand-in machine here, not the local
    # platform's clickstream-local-dwh: a second inventory source overrides the name it composes.
    hosts = temp_dir / "hosts.yml"
    hosts.write_text(
        yaml.safe_dump(
            {"all": {"hosts": {"clickstream-local-dwh": {"ansible_nspawn_machine": machines.dwh}}}}
        )
    )
    variables = {
        **PACKAGE_LISTS,
        "package_mirror_builder_name": machines.builder,
        # The host shares this machine's network: it reaches the bucket on the emulated gateway
        # endpoint's port (the local platform's isolated instance, through its link).
        "package_mirror_base_url": f"{emulator.gateway_url}/{BUCKET}",
    }

    def run_it(playbook: str | Path, *arguments: str) -> PlaybookRun:
        return run_playbook(
            playbook,
            "-i",
            "inventories/local",
            "-i",
            str(hosts),
            *extra_vars(variables),
            *arguments,
            environment=aws_environment(emulator.moto.endpoint_url),
            temp_dir=temp_dir,
        )

    return run_it


@pytest.fixture(scope="module")
def provisioned(run: RunPlaybook) -> None:
    stages = run("site.yml", "--tags", "network,security_groups,storage,iam,compute")
    assert stages.returncode == 0, stages.explain()


@pytest.fixture(scope="module")
def builds(provisioned, run: RunPlaybook) -> tuple[PlaybookRun, PlaybookRun]:
    first = run("playbooks/package_mirror.yml")
    assert first.returncode == 0, first.explain()
    second = run("playbooks/package_mirror.yml")
    return first, second


@pytest.fixture(scope="module")
def host_playbook(tmp_path_factory) -> Path:
    """What the host plays do with packages: the mirror first, then each role's install tasks."""
    playbook = tmp_path_factory.mktemp("mirror-host") / "host.yml"
    role_installs = [
        {
            "name": f"Install the {role} role's packages",
            "ansible.builtin.include_role": {"name": role, "tasks_from": "install.yml"},
        }
        for role in ("postgresql", "dwh_schema", "r_shiny")
    ]
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Install from the package mirror alone",
                    "hosts": "dwh",
                    "become": True,
                    "gather_facts": True,
                    "roles": ["apt_mirror"],
                    "tasks": role_installs,
                }
            ],
            sort_keys=False,
        )
    )
    return playbook


@pytest.fixture(scope="module")
def host_runs(builds, run: RunPlaybook, host_playbook: Path, emulator: Emulator):
    first = run(host_playbook)
    assert first.returncode == 0, first.explain()
    requests_before = emulator.mirror_requests()
    second = run(host_playbook)
    return first, second, emulator.mirror_requests() - requests_before


def in_host(machines: Machines, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        container_command(machines.dwh_leader_pid, *argv),
        capture_output=True,
        text=True,
        check=False,
    )


def current_snapshot(moto: MotoServer) -> str:
    return moto.client("ssm").get_parameter(Name=SNAPSHOT_PARAMETER)["Parameter"]["Value"]


def snapshot_objects(moto: MotoServer, snapshot: str) -> dict[str, bytes]:
    s3 = moto.client("s3")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"snapshots/{snapshot}/")["Contents"]
    return {
        item["Key"].rsplit("/", 1)[1]: s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        for item in listed
    }


def anonymous_get(url: str) -> int:
    # Our own loopback emulator.
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# --- Building the mirror -----------------------------------------------------------------------


def test_the_first_run_publishes_a_snapshot_of_what_the_roles_install(builds, emulator):
    first, _ = builds
    assert first.failures == []
    snapshot = current_snapshot(emulator.moto)
    files = snapshot_objects(emulator.moto, snapshot)
    manifest = json.loads(files["manifest.json"])
    assert manifest["package_groups"] == {
        "postgresql": ["tree"],
        "dwh_schema": ["acl"],
        "r_shiny": ["file"],
    }
    assert (manifest["distribution"], manifest["release"]) == ("Debian", "bookworm")
    assert {"InRelease", "Release", "Release.gpg", "Packages"} <= set(files)
    debs = {name.split("_")[0] for name in files if name.endswith(".deb")}
    assert set(INSTALLED_FROM_MIRROR) <= debs
    # Pool names: no epoch (S3 would not find a key holding apt's %3a).
    assert [name for name in files if "%" in name or ":" in name] == []


def test_the_builder_is_gone_after_the_build(builds, machines):
    assert find_instance(machines.builder) is None


def test_the_snapshot_is_signed_by_the_key_whose_public_half_is_in_ssm(builds, emulator, tmp_path):
    ssm = emulator.moto.client("ssm")
    public_key = ssm.get_parameter(Name=PUBLIC_KEY_PARAMETER)["Parameter"]["Value"]
    signing_key = ssm.get_parameter(Name=SIGNING_KEY_PARAMETER)["Parameter"]
    assert signing_key["Type"] == "SecureString"
    files = snapshot_objects(emulator.moto, current_snapshot(emulator.moto))
    keyring = tmp_path / "mirror.gpg"
    subprocess.run(
        [GPG, "--dearmor", "--output", str(keyring)], input=public_key.encode(), check=True
    )
    (tmp_path / "InRelease").write_bytes(files["InRelease"])
    verified = subprocess.run(
        [GPGV, "--keyring", str(keyring), str(tmp_path / "InRelease")], capture_output=True
    )
    assert verified.returncode == 0, verified.stderr.decode()


def test_a_second_run_changes_nothing_and_starts_no_builder(builds):
    _, second = builds
    assert second.returncode == 0, second.explain()
    assert [f"{r.play} / {r.task}" for r in second.task_results if r.changed] == []
    booted = [r for r in second.task_results if r.task == BUILDER_BOOT_TASK]
    assert [r for r in booted if not r.result.get("skipped")] == []


def test_check_mode_says_what_it_would_build_and_builds_nothing(builds, run, emulator):
    snapshot = current_snapshot(emulator.moto)
    check = run(
        "playbooks/package_mirror.yml",
        "--check",
        *extra_vars({"r_shiny_packages": ["file", NOT_IN_MIRROR]}),
    )
    assert check.returncode == 0, check.explain()
    (would_build,) = [r for r in check.task_results if r.task == "Say what a run would build"]
    assert would_build.changed
    assert NOT_IN_MIRROR in would_build.result["msg"]
    assert [r for r in check.task_results if r.task == BUILDER_BOOT_TASK and r.changed] == []
    assert current_snapshot(emulator.moto) == snapshot


def test_a_failed_build_keeps_the_current_snapshot_and_removes_the_builder(
    builds, run, emulator, machines
):
    snapshot = current_snapshot(emulator.moto)
    failed = run(
        "playbooks/package_mirror.yml",
        *extra_vars({"r_shiny_packages": ["no-such-package-in-debian"]}),
    )
    assert failed.returncode != 0
    # The download's own error first, then the message of the rescue.
    assert [f.task for f in failed.failures] == [
        "Download each role's package closure",
        "Fail with what the mirror holds now",
    ]
    failure = failed.failures[-1]
    assert f"still names {snapshot}" in failure.result["msg"]
    assert current_snapshot(emulator.moto) == snapshot
    assert find_instance(machines.builder) is None


def test_the_snapshots_are_readable_anonymously_only_through_the_vpc_endpoint(builds, emulator):
    path = f"{BUCKET}/snapshots/{current_snapshot(emulator.moto)}/InRelease"
    assert anonymous_get(f"{emulator.gateway_url}/{path}") == 200
    assert anonymous_get(f"{emulator.moto.endpoint_url}/{path}") == 403


# --- The host installing from it ---------------------------------------------------------------


def test_the_host_installs_each_roles_packages_from_the_mirror(host_runs, machines, emulator):
    mirror = f"{emulator.gateway_url}/{BUCKET}/snapshots"
    for package in INSTALLED_FROM_MIRROR:
        policy = in_host(machines, "apt-cache", "policy", package).stdout
        assert "Installed: (none)" not in policy, policy
        assert mirror in policy, policy


def test_apt_reads_no_source_but_the_mirror(host_runs, machines, emulator):
    targets = in_host(machines, "apt-get", "indextargets", "--format", "$(URI)").stdout.split()
    assert targets
    assert [uri for uri in targets if not uri.startswith(emulator.gateway_url)] == []


def test_a_package_that_is_not_in_the_mirror_cannot_be_installed(host_runs, machines):
    attempt = in_host(machines, "apt-get", "install", "--simulate", NOT_IN_MIRROR)
    assert attempt.returncode != 0
    assert f"Unable to locate package {NOT_IN_MIRROR}" in attempt.stderr


def test_a_second_host_run_changes_nothing_and_asks_the_mirror_for_nothing(host_runs):
    _, second, mirror_requests = host_runs
    assert second.returncode == 0, second.explain()
    assert [r.task for r in second.task_results if r.changed] == []
    assert mirror_requests == 0


# --- Snapshots apt must refuse -----------------------------------------------------------------


def forge_snapshot(emulator: Emulator, name: str, replace: dict[str, bytes | None]) -> str:
    """A copy of the current snapshot's indexes under snapshots/NAME/, with some files replaced or
    left out (None); the URL apt would be given for it. Its Packages still names the current
    snapshot's .debs (paths relative to snapshots/)."""
    files = snapshot_objects(emulator.moto, current_snapshot(emulator.moto))
    indexes = {key: files[key] for key in ("InRelease", "Release", "Release.gpg", "Packages")}
    s3 = emulator.moto.client("s3")
    for file_name, body in {**indexes, **replace}.items():
        if body is not None:
            s3.put_object(Bucket=BUCKET, Key=f"snapshots/{name}/{file_name}", Body=body)
    return f"{emulator.gateway_url}/{BUCKET}/snapshots/{name}"


def clearsign_with_a_new_key(text: bytes, tmp_path: Path) -> bytes:
    home = tmp_path / "other-gnupg"
    home.mkdir(mode=0o700)
    gpg = [GPG, "--batch", "--homedir", str(home)]
    try:
        subprocess.run(
            [*gpg, "--passphrase", "", "--quick-generate-key", "Not the mirror", "ed25519"],
            check=True,
            capture_output=True,
        )
        signed = subprocess.run([*gpg, "--clearsign"], input=text, check=True, capture_output=True)
        return signed.stdout
    finally:
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], check=False)


def apt_update_from(machines: Machines, url: str, name: str) -> subprocess.CompletedProcess[str]:
    """apt-get update inside the host from URL alone, trusting the mirror's key as the role
    installed it, with a source, lists and cache of its own (the host's own stay as they are)."""
    root, suite = url.rsplit("/", 1)
    directory = f"/var/lib/mirror-test/apt-{name}"
    sources = machines.rootfs / directory.lstrip("/") / "sources"
    sources.mkdir(parents=True)
    (sources / "forged.sources").write_text(
        f"Types: deb\nURIs: {root}\nSuites: {suite}/\n"
        "Signed-By: /etc/apt/keyrings/clickstream-mirror.asc\n"
    )
    return in_host(
        machines,
        "apt-get",
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        f"Dir::Etc::SourceParts={directory}/sources",
        "-o",
        f"Dir::State::Lists={directory}/lists",
        "-o",
        f"Dir::Cache={directory}/cache",
        "update",
    )


def test_apt_accepts_the_genuine_snapshot_the_same_way(host_runs, machines, emulator):
    # The control for the refusals below: the same command on the real snapshot succeeds.
    url = f"{emulator.gateway_url}/{BUCKET}/snapshots/{current_snapshot(emulator.moto)}"
    genuine = apt_update_from(machines, url, "genuine")
    assert genuine.returncode == 0, genuine.stdout + genuine.stderr
    assert "W:" not in genuine.stderr
    assert "E:" not in genuine.stderr


def test_apt_refuses_a_snapshot_signed_by_another_key(host_runs, machines, emulator, tmp_path):
    files = snapshot_objects(emulator.moto, current_snapshot(emulator.moto))
    url = forge_snapshot(
        emulator,
        "forged-other-key",
        {"InRelease": clearsign_with_a_new_key(files["Release"], tmp_path), "Release.gpg": None},
    )
    refused = apt_update_from(machines, url, "other-key")
    assert refused.returncode != 0
    assert "NO_PUBKEY" in refused.stderr, refused.stderr


def test_apt_refuses_an_unsigned_snapshot(host_runs, machines, emulator):
    url = forge_snapshot(emulator, "forged-unsigned", {"InRelease": None, "Release.gpg": None})
    refused = apt_update_from(machines, url, "unsigned")
    assert refused.returncode != 0
    assert "is not signed" in refused.stderr, refused.stderr


def test_apt_refuses_an_index_altered_under_a_genuine_signature(host_runs, machines, emulator):
    files = snapshot_objects(emulator.moto, current_snapshot(emulator.moto))
    altered = files["Packages"].replace(b"Package: tree", b"Package: tree-altered")
    url = forge_snapshot(emulator, "forged-index", {"Packages": altered})
    refused = apt_update_from(machines, url, "altered")
    assert refused.returncode != 0
    assert "Hash Sum mismatch" in refused.stderr or "unexpected size" in refused.stderr, (
        refused.stderr
    )

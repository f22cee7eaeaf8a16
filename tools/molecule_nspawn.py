#!/usr/bin/env python3
"""Create and destroy the systemd-nspawn instances that the molecule scenarios test roles on.

There is no Docker engine on our machines (shared/notes/platform.md): an instance is a Debian
root file system made by debootstrap and booted with ``systemd-nspawn --boot`` (real systemd,
real apt, real services). The debootstrap result is cached as a tarball keyed by what it holds,
so only the first run on a machine pays for debootstrap; each instance is a fresh copy of it.

    molecule_nspawn.py create NAME     boot instance NAME, print {"name", "leader_pid", ...}
    molecule_nspawn.py destroy NAME    stop instance NAME and delete its root file system

By default an instance shares the host's network: the scenarios bind each instance's services
to its own loopback address. The packages that apt downloads inside such instances are kept in
a cache beside the base image, so warm runs download nothing again.

``create NAME --private-network`` boots an instance with no network but its own loopback (only
``lo``, no route): the local stand-in for a host in a private subnet without NAT. What it may
reach, and what may reach it, are links through Unix sockets in a directory of the host
(MACHINES/NAME/links, printed as "links") bind-mounted into the instance at /run/host-links:

    --reach NAME=PORT    inside, 127.0.0.1:PORT is served by systemd-socket-proxyd, which
                         connects to /run/host-links/NAME.sock: a host program listening on
                         that socket (tools/local_platform/links.py) carries it further
    --expose NAME=PORT   inside, /run/host-links/NAME.sock is served by systemd-socket-proxyd,
                         which connects to 127.0.0.1:PORT in the instance: a host program
                         connecting to the socket reaches the instance's loopback service

The socket and service units are written into the root file system before boot (enabled in
sockets.target) and use the image's own /lib/systemd/systemd-socket-proxyd. Such an instance
gets no shared apt cache either: whatever apt installs comes through its links.

Must run as root (debootstrap, systemd-nspawn, nsenter).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_DIRECTORY = Path(
    os.environ.get("CLICKSTREAM_MOLECULE_CACHE", "/var/cache/clickstream-molecule")
)
MACHINES_DIRECTORY = Path(
    os.environ.get("CLICKSTREAM_MOLECULE_MACHINES", "/var/lib/clickstream-molecule")
)
SUITE = os.environ.get("CLICKSTREAM_MOLECULE_SUITE", "bookworm")
# What every instance needs before Ansible can manage it: systemd as init, Python and python3-apt
# for the modules, sudo for become_user, iproute2 for `ss` in verify. Roles install the rest.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-apt",
    "sudo",
    "iproute2",
    "ca-certificates",
)
# Bump when the way the base image is prepared changes, so that old tarballs are not reused.
BASE_IMAGE_FORMAT = "2"
# The Debian package of each host command this script runs.
PACKAGE_OF = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "tar": "tar",
    "zstd": "zstd",
    "rm": "coreutils",
}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BOOT_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 60
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where a private-network instance finds its links' Unix sockets (MACHINES/NAME/links on the host).
LINKS_MOUNT_POINT = "/run/host-links"
# systemd's own TCP/Unix socket proxy, in the image's systemd package.
SOCKET_PROXY = "/lib/systemd/systemd-socket-proxyd"
LINK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")


def tool(name: str) -> str:
    """Absolute path of a host command this script runs (apt packages in tools/bootstrap.sh)."""
    path = shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise SystemExit(f"molecule_nspawn: {name} is missing (apt-get install {PACKAGE_OF[name]})")
    return path


def run_tar(*arguments: str) -> None:
    """tar with zstd, keeping owners, modes, ACLs and file capabilities as they are."""
    compressor = f"{tool('zstd')} -T0 -3"
    subprocess.run(
        [tool("tar"), "--numeric-owner", "--xattrs", "--acls", "-I", compressor, *arguments],
        check=True,
    )


def log(message: str) -> None:
    print(f"molecule_nspawn: {message}", file=sys.stderr, flush=True)


def debian_mirror(suite: str) -> str:
    """The host's own Debian mirror for ``suite`` (apt sources), else deb.debian.org."""
    override = os.environ.get("CLICKSTREAM_MOLECULE_MIRROR")
    if override:
        return override
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text(encoding="utf-8").split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if re.match(r"^[A-Za-z-]+:", line)
            )
            suites = fields.get("Suites", "").split()
            uris = fields.get("URIs", "").split()
            if suite in suites and uris and "security" not in uris[0]:
                return uris[0]
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for line in sources_list.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    return DEFAULT_MIRROR


def base_image_path(suite: str) -> Path:
    key = hashlib.sha256(
        json.dumps([BASE_IMAGE_FORMAT, suite, sorted(BASE_PACKAGES)]).encode()
    ).hexdigest()[:12]
    return CACHE_DIRECTORY / f"{suite}-base-{key}.tar.zst"


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def ensure_base_image(suite: str) -> Path:
    """The cached base tarball of ``suite``, made by debootstrap when it is missing."""
    image = base_image_path(suite)
    with locked(CACHE_DIRECTORY / ".base-image.lock"):
        if image.exists():
            return image
        build = CACHE_DIRECTORY / f"build-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        rootfs = build / "rootfs"
        mirror = debian_mirror(suite)
        log(f"building the {suite} base image with debootstrap from {mirror} (cached afterwards)")
        started = time.monotonic()
        subprocess.run(
            [
                tool("debootstrap"),
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                suite,
                str(rootfs),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # The instance takes its host name from --machine and a fresh machine id at boot.
        (rootfs / "etc/hostname").unlink(missing_ok=True)
        (rootfs / "etc/machine-id").write_text("")
        # Downloaded packages go to a cache bind-mounted over this directory (see create).
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        partial = image.with_suffix(".partial")
        run_tar("-C", str(rootfs), "-cf", str(partial), ".")
        partial.rename(image)
        shutil.rmtree(build)
        log(f"base image {image.name} ready in {time.monotonic() - started:.0f} s")
        return image


def _process_table() -> dict[int, tuple[int, list[str]]]:
    """pid → (parent pid, argv) of every process the host can see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (parent, [word.decode(errors="replace") for word in argv if word])
    return table


def find_instance(name: str) -> tuple[int, int | None] | None:
    """(pid of systemd-nspawn, pid of the container's init or None) of instance ``name``."""
    table = _process_table()
    for pid, (_, argv) in table.items():
        if argv and os.path.basename(argv[0]) == "systemd-nspawn" and f"--machine={name}" in argv:
            children = [child for child, (parent, _) in table.items() if parent == pid]
            return pid, (min(children) if children else None)
    return None


def container_command(leader_pid: int, *argv: str) -> list[str]:
    return [
        "nsenter",
        "--target",
        str(leader_pid),
        "--all",
        "--",
        "/usr/bin/env",
        "-i",
        f"PATH={CONTAINER_PATH}",
        "LANG=C.UTF-8",
        *argv,
    ]


def children_of(pid: int) -> list[int]:
    return sorted(child for child, (parent, _) in _process_table().items() if parent == pid)


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_booted(name: str, nspawn_pid: int) -> int:
    """The init's pid once systemd in the container says it has booted."""
    deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
    state = "not started"
    while time.monotonic() < deadline:
        # By pid, not by name: right after the fork the child's command line is not yet
        # systemd-nspawn's.
        if not is_running(nspawn_pid):
            console = MACHINES_DIRECTORY / name / "console.log"
            raise RuntimeError(f"systemd-nspawn of {name} exited: {console.read_text()[-3000:]}")
        children = children_of(nspawn_pid)
        leader = children[0] if children else None
        if leader is not None:
            result = subprocess.run(
                container_command(leader, "systemctl", "is-system-running"),
                capture_output=True,
                text=True,
                check=False,
            )
            state = result.stdout.strip()
            # "degraded": a unit that needs what a container lacks failed; nothing we use.
            if state in ("running", "degraded"):
                return leader
        time.sleep(0.5)
    raise RuntimeError(
        f"{name} did not finish booting in {BOOT_TIMEOUT_SECONDS} s (state {state!r})"
    )


@dataclass(frozen=True)
class Link:
    """One socket link of a private-network instance (see the module's docstring)."""

    name: str
    port: int
    # "reach": the instance's 127.0.0.1:port leads to the host's socket NAME.sock;
    # "expose": the socket NAME.sock leads to the instance's 127.0.0.1:port.
    direction: str

    @classmethod
    def parse(cls, text: str, direction: str) -> Link:
        name, _, port = text.partition("=")
        if not LINK_NAME.fullmatch(name) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: NAME=PORT, NAME in lower-case letters, digits and '-'")
        return cls(name, int(port), direction)

    @property
    def unit(self) -> str:
        return f"host-link-{self.name}"

    @property
    def socket_path(self) -> str:
        return f"{LINKS_MOUNT_POINT}/{self.name}.sock"

    def unit_files(self) -> dict[str, str]:
        """The socket unit and the socket-activated proxy service, by file name."""
        if self.direction == "reach":
            listen, target = f"127.0.0.1:{self.port}", self.socket_path
            what = f"127.0.0.1:{self.port} leads to the host's {self.name} ({self.socket_path})"
            socket_options = ""
        else:
            listen, target = self.socket_path, f"127.0.0.1:{self.port}"
            what = f"{self.socket_path} leads to {self.name} on 127.0.0.1:{self.port}"
            # Only root (the host's link daemon, through the bind mount) connects; the socket
            # goes with the unit.
            socket_options = "SocketMode=0600\nRemoveOnStop=yes\n"
        header = "# Written by tools/molecule_nspawn.py before boot: a link of this instance.\n"
        return {
            f"{self.unit}.socket": (
                f"{header}[Unit]\nDescription=Link: {what}\n\n"
                f"[Socket]\nListenStream={listen}\n{socket_options}\n"
                "[Install]\nWantedBy=sockets.target\n"
            ),
            f"{self.unit}.service": (
                f"{header}[Unit]\nDescription=Link: {what}\n"
                f"Requires={self.unit}.socket\nAfter={self.unit}.socket\n\n"
                f"[Service]\nExecStart={SOCKET_PROXY} {target}\nNoNewPrivileges=yes\n"
            ),
        }


def install_link_units(rootfs: Path, links: tuple[Link, ...]) -> None:
    """Each link's units in the instance's /etc/systemd/system, enabled as systemctl would."""
    units = rootfs / "etc/systemd/system"
    wants = units / "sockets.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for link in links:
        for file_name, text in link.unit_files().items():
            (units / file_name).write_text(text)
        (wants / f"{link.unit}.socket").symlink_to(f"../{link.unit}.socket")


def create(
    name: str, suite: str, private_network: bool = False, links: tuple[Link, ...] = ()
) -> dict:
    instance_directory = MACHINES_DIRECTORY / name
    links_directory = instance_directory / "links"
    found = find_instance(name)
    if found is None:
        image = ensure_base_image(suite)
        remove_root(instance_directory)
        rootfs = instance_directory / "rootfs"
        rootfs.mkdir(parents=True)
        run_tar("-C", str(rootfs), "-xf", str(image))
        if private_network:
            # No shared apt cache: a private instance gets its packages through its links only.
            links_directory.mkdir(mode=0o700)
            install_link_units(rootfs, links)
            network = ["--private-network", f"--bind={links_directory}:{LINKS_MOUNT_POINT}"]
        else:
            archives = CACHE_DIRECTORY / f"{suite}-apt-archives"
            (archives / "partial").mkdir(parents=True, exist_ok=True)
            network = [f"--bind={archives}:/var/cache/apt/archives"]
        console = (instance_directory / "console.log").open("w")
        nspawn = subprocess.Popen(
            [
                tool("systemd-nspawn"),
                f"--directory={rootfs}",
                "--boot",
                f"--machine={name}",
                # The host has no systemd or dbus of its own (shared/notes/platform.md).
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                *network,
            ],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (instance_directory / "nspawn.pid").write_text(f"{nspawn.pid}\n")
        nspawn_pid = nspawn.pid
    else:
        nspawn_pid = found[0]
    leader = wait_until_booted(name, nspawn_pid)
    return {
        "name": name,
        "nspawn_pid": nspawn_pid,
        "leader_pid": leader,
        "rootfs": str(instance_directory / "rootfs"),
        "links": str(links_directory) if links_directory.is_dir() else None,
    }


def mount_points_under(directory: Path) -> list[str]:
    """The host's mount points at or below ``directory`` (/proc/self/mountinfo)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with space, tab, newline and backslash escaped in octal.
        point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), line.split()[4])
        if point == str(directory) or point.startswith(f"{directory}/"):
            found.append(point)
    return found


def remove_root(instance_directory: Path) -> None:
    if instance_directory.exists():
        # The instance's bind mounts (apt cache, links) live in its own mount namespace; one
        # seen here was left by something else, and a bind mount of the same file system is
        # not something --one-file-system can tell apart: refuse rather than delete through it.
        mounts = mount_points_under(instance_directory)
        if mounts:
            raise RuntimeError(
                f"not removing {instance_directory}: mounted below it: {', '.join(mounts)}"
            )
        # --one-file-system: never follow a mount of another file system into the host.
        subprocess.run(
            [tool("rm"), "-rf", "--one-file-system", str(instance_directory)], check=True
        )


def destroy(name: str) -> dict:
    found = find_instance(name)
    if found is not None:
        nspawn_pid = found[0]
        # systemd-nspawn turns SIGTERM into an orderly shutdown of the booted container.
        os.kill(nspawn_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while find_instance(name) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if find_instance(name) is not None:
            log(f"{name} did not stop in {STOP_TIMEOUT_SECONDS} s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(nspawn_pid, signal.SIGKILL)
            time.sleep(1)
    remove_root(MACHINES_DIRECTORY / name)
    return {"name": name, "destroyed": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("create", "destroy", "base-image"))
    parser.add_argument("name", nargs="?", help="the instance (machine) name")
    parser.add_argument("--suite", default=SUITE)
    parser.add_argument(
        "--private-network",
        action="store_true",
        help="create: no network but the instance's own loopback, links through Unix sockets",
    )
    parser.add_argument(
        "--reach",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="create: the instance's 127.0.0.1:PORT leads to the host's socket LINKS/NAME.sock",
    )
    parser.add_argument(
        "--expose",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="create: the host's socket LINKS/NAME.sock leads to the instance's 127.0.0.1:PORT",
    )
    arguments = parser.parse_args(argv)
    try:
        links = [Link.parse(text, "reach") for text in arguments.reach] + [
            Link.parse(text, "expose") for text in arguments.expose
        ]
    except ValueError as error:
        parser.error(str(error))
    if links and not arguments.private_network:
        parser.error("--reach and --expose need --private-network")
    names = [link.name for link in links]
    reached_ports = [link.port for link in links if link.direction == "reach"]
    if len(set(names)) != len(names) or len(set(reached_ports)) != len(reached_ports):
        parser.error("each link needs a name and each --reach a port of its own")
    if os.geteuid() != 0:
        parser.error("must run as root (debootstrap, systemd-nspawn, nsenter)")
    if arguments.action == "base-image":
        result = {"image": str(ensure_base_image(arguments.suite))}
    elif not arguments.name or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", arguments.name):
        parser.error("NAME: lower-case letters, digits and '-'")
    elif arguments.action == "create":
        result = create(arguments.name, arguments.suite, arguments.private_network, tuple(links))
    else:
        result = destroy(arguments.name)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

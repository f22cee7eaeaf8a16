"""A private-network instance and its links, as the local platform's DWH instance has them.

One small systemd-nspawn instance, booted by ``tools/molecule_nspawn.py create --private-network``
with a ``--reach`` and an ``--expose`` link, and the machine's end of the links
(tools/local_platform/links.py): the instance has no network but its loopback, a server on the
machine's loopback is reached from inside at the instance's own 127.0.0.1, a server on the
instance's 127.0.0.1 is reached from the machine, and destroying it leaves nothing behind.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.processes import (
    free_loopback_port,
    port_answers,
    processes_whose_command_has,
    wait_until,
)
from tools.molecule_nspawn import MACHINES_DIRECTORY, container_command, find_instance

REPOSITORY = Path(__file__).resolve().parents[1]
NSPAWN_TOOL = REPOSITORY / "tools" / "molecule_nspawn.py"
MACHINE = "clickstream-linktest"
MACHINE_PAGE = b"served on the machine's loopback\n"
INSTANCE_PAGE = "served on the instance's loopback\n"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="systemd-nspawn and nsenter need root"),
    pytest.mark.skipif(
        not shutil.which("systemd-nspawn"), reason="systemd-nspawn comes with tools/bootstrap.sh"
    ),
]


def nspawn_tool(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(NSPAWN_TOOL), *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )


def inside(*argv: str) -> str:
    """What ``argv`` prints, run inside the instance."""
    found = find_instance(MACHINE)
    assert found is not None, f"{MACHINE} does not run"
    assert found[1] is not None, f"{MACHINE} has no init yet"
    result = subprocess.run(
        container_command(found[1], *argv), capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def http_get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.read()


def answers(url: str) -> bool:
    try:
        http_get(url)
    except OSError:
        return False
    return True


def links_processes(state_dir: Path) -> list[str]:
    """Command lines of the processes of the instance or of this module's links daemon."""
    return processes_whose_command_has(f"--machine={MACHINE}", f"--state-dir={state_dir}")


@pytest.fixture(scope="module")
def machine_server():
    """An HTTP server on the machine's loopback, which the instance reaches through its link."""
    handler = type(
        "MachinePage",
        (http.server.BaseHTTPRequestHandler,),
        {
            "do_GET": lambda self: (
                self.send_response(200),
                self.send_header("Content-Length", str(len(MACHINE_PAGE))),
                self.end_headers(),
                self.wfile.write(MACHINE_PAGE),
            ),
            "log_message": lambda self, *_: None,
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_loopback_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def instance(machine_server, tmp_path_factory):
    """The instance with its two links, and the links daemon; removed at the end of the module."""
    state_dir = tmp_path_factory.mktemp("links-state")
    # Inside, the instance's own loopback: any port; the machine's side: a free loopback port.
    instance_port, machine_port = free_loopback_port(), free_loopback_port()
    nspawn_tool("destroy", MACHINE)  # what an interrupted run may have left
    created = nspawn_tool(
        "create",
        MACHINE,
        "--private-network",
        f"--reach=machine={machine_server}",
        f"--expose=web={instance_port}",
    )
    links = Path(json.loads(created.stdout)["links"])
    log = (state_dir / "links.log").open("wb")
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.local_platform.links",
            f"--state-dir={state_dir}",
            f"--unix-to-tcp={links / 'machine.sock'}=127.0.0.1:{machine_server}",
            f"--tcp-to-unix=127.0.0.1:{machine_port}={links / 'web.sock'}",
        ],
        cwd=REPOSITORY,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: port_answers(machine_port), "the links daemon")
    yield {
        "links": links,
        "rootfs": Path(json.loads(created.stdout)["rootfs"]),
        "instance_port": instance_port,
        "machine_port": machine_port,
        "daemon": daemon,
        "state_dir": state_dir,
    }
    if daemon.poll() is None:
        daemon.terminate()
        daemon.wait(timeout=10)
    log.close()
    nspawn_tool("destroy", MACHINE)


def test_the_instance_has_only_its_loopback_and_no_route(instance):
    interfaces = [line.split(":")[1].strip() for line in inside("ip", "-o", "link").splitlines()]
    assert interfaces == ["lo"]
    # The loopback's own routes are in the local table; the main table, where routes out
    # would be, is empty.
    assert inside("ip", "-4", "route").strip() == ""
    assert inside("ip", "-6", "route").strip() == ""


def test_a_server_on_the_machine_is_reached_at_the_instances_own_loopback(instance, machine_server):
    fetch = (
        "import urllib.request; "
        f"print(urllib.request.urlopen('http://127.0.0.1:{machine_server}/', timeout=10)"
        ".read().decode(), end='')"
    )
    assert inside("python3", "-c", fetch) == MACHINE_PAGE.decode()


def test_a_server_on_the_instances_loopback_is_reached_from_the_machine(instance):
    served = instance["rootfs"] / "srv/linktest"
    served.mkdir(parents=True)
    (served / "page.txt").write_text(INSTANCE_PAGE)
    inside(
        "systemd-run",
        "--unit=linktest-web",
        "--property=WorkingDirectory=/srv/linktest",
        "python3",
        "-m",
        "http.server",
        "--bind=127.0.0.1",
        str(instance["instance_port"]),
    )
    url = f"http://127.0.0.1:{instance['machine_port']}/page.txt"
    wait_until(functools.partial(answers, url), "the instance's server through its link")
    assert http_get(url).decode() == INSTANCE_PAGE


def test_destroying_the_instance_leaves_nothing_behind(instance):
    instance["daemon"].terminate()
    instance["daemon"].wait(timeout=10)
    nspawn_tool("destroy", MACHINE)
    assert links_processes(instance["state_dir"]) == []
    assert not (MACHINES_DIRECTORY / MACHINE).exists()
    assert not (instance["links"] / "machine.sock").exists()
    assert not (instance["links"] / "web.sock").exists()
    assert not port_answers(instance["machine_port"])

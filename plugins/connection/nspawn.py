# Connection plugin for systemd-nspawn containers, entered with nsenter.
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

# DOCUMENTATION, EXAMPLES: what ansible-doc shows; the imports above need nothing from them.
DOCUMENTATION = r"""
name: nspawn
short_description: Run tasks inside a booted systemd-nspawn container through nsenter
description:
  - Runs commands inside a running C(systemd-nspawn --boot) container by entering every namespace
    of the container's init (C(nsenter --target PID --all)), and copies files in and out through
    the same namespaces (C(cat) inside the container), so paths resolve exactly as the container
    sees them.
  - Works without systemd-machined. Containers started with C(--register=no) (hosts without a
    systemd of their own, CI sandboxes) are found by their C(--machine=NAME) argument in the
    host's process table; the init is the child process of that C(systemd-nspawn).
  - The controller must be the host of the containers and run as root.
  - Commands run with a clean environment (C(PATH), C(HOME), C(LANG) only), so that nothing of
    the controller's environment leaks into the container.
author:
  - Clickstream platform team
options:
  remote_addr:
    description:
      - The machine name of the container, as given to C(systemd-nspawn --machine).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_nspawn_machine
  leader_pid:
    description:
      - PID (on the host) of the container's init. Found from O(remote_addr) when not set.
    type: int
    vars:
      - name: ansible_nspawn_leader_pid
  nsenter_path:
    description:
      - Path of C(nsenter) on the host.
    type: path
    default: /usr/bin/nsenter
    vars:
      - name: ansible_nspawn_nsenter_path
  container_path:
    description:
      - The C(PATH) that commands run with inside the container.
    type: str
    default: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    vars:
      - name: ansible_nspawn_container_path
"""

EXAMPLES = r"""
# molecule.yml of a scenario whose create playbook boots "clickstream-dwh" with systemd-nspawn
# (tools/molecule_nspawn.py), with ANSIBLE_CONNECTION_PLUGINS pointing at plugins/connection:
#
#   provisioner:
#     inventory:
#       host_vars:
#         clickstream-dwh:
#           ansible_connection: nspawn

# An inventory entry naming the machine explicitly:
all:
  hosts:
    warehouse-test:
      ansible_connection: nspawn
      ansible_nspawn_machine: clickstream-dwh
"""

display = Display()


def _process_table() -> dict[int, tuple[int, list[bytes]]]:
    """pid → (parent pid, argv) of every process visible on the host."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                stat = stat_file.read()
            with open(f"/proc/{name}/cmdline", "rb") as cmdline_file:
                argv = [word for word in cmdline_file.read().split(b"\0") if word]
        except OSError:
            continue
        parent = int(stat.rsplit(b")", 1)[1].split()[1])
        table[int(name)] = (parent, argv)
    return table


def find_leader_pid(machine: str) -> int:
    """The host PID of the init of the systemd-nspawn container named ``machine``."""
    wanted = to_bytes(f"--machine={machine}")
    table = _process_table()
    for pid, (_, argv) in table.items():
        if argv and os.path.basename(argv[0]) == b"systemd-nspawn" and wanted in argv:
            children = sorted(child for child, (parent, _) in table.items() if parent == pid)
            if children:
                return children[0]
            raise AnsibleConnectionFailure(f"systemd-nspawn of {machine} has not started its init")
    raise AnsibleConnectionFailure(
        f"no running 'systemd-nspawn --machine={machine}' on this host (is the instance created?)"
    )


class Connection(ConnectionBase):
    """Commands and files through nsenter into a systemd-nspawn container."""

    transport = "nspawn"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._leader_pid: int | None = None

    def _connect(self):
        if not self._connected:
            if os.geteuid() != 0:
                raise AnsibleConnectionFailure("the nspawn connection needs root on the controller")
            self._leader_pid = self.get_option("leader_pid") or find_leader_pid(
                self.get_option("remote_addr")
            )
            display.vvv(
                f"NSPAWN: {self.get_option('remote_addr')} is init pid {self._leader_pid}",
                host=self.get_option("remote_addr"),
            )
            self._connected = True
        return self

    def _container_argv(self, command: str) -> list[str]:
        return [
            self.get_option("nsenter_path"),
            f"--target={self._leader_pid}",
            "--all",
            "--",
            "/usr/bin/env",
            "-i",
            f"PATH={self.get_option('container_path')}",
            "HOME=/root",
            "LANG=C.UTF-8",
            "/bin/sh",
            "-c",
            command,
        ]

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"NSPAWN EXEC {cmd}", host=self.get_option("remote_addr"))
        process = subprocess.Popen(
            self._container_argv(cmd),
            stdin=subprocess.PIPE if in_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = process.communicate(in_data)
        return process.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"NSPAWN PUT {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        try:
            with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as source:
                result = subprocess.run(
                    self._container_argv(f"cat > {shlex.quote(out_path)}"),
                    stdin=source,
                    capture_output=True,
                    check=False,
                )
        except OSError as error:
            raise AnsibleError(f"cannot read {in_path}: {error}") from error
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace")
            raise AnsibleError(f"failed to write {out_path} in the container: {message}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"NSPAWN FETCH {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as destination:
            result = subprocess.run(
                self._container_argv(f"cat {shlex.quote(in_path)}"),
                stdout=destination,
                stderr=subprocess.PIPE,
                check=False,
            )
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace")
            raise AnsibleError(f"failed to read {in_path} in the container: {message}")

    def reset(self):
        self.close()

    def close(self):
        self._connected = False
        self._leader_pid = None

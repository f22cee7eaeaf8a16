"""The role tests: each molecule scenario (molecule/<name>/) on systemd-nspawn hosts.

`molecule test -s <name>` creates the instance (tools/molecule_nspawn.py), converges it, converges
again expecting no change, runs in check mode, verifies behaviour and destroys the instance. The
whole log goes to test-artifacts/molecule-<name>.log; a failure shows its end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(path.parent.name for path in (REPOSITORY / "molecule").glob("*/molecule.yml"))
SCENARIO_TIMEOUT_SECONDS = 30 * 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="molecule scenarios boot systemd-nspawn instances: debootstrap, systemd-nspawn "
        "and nsenter need root",
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_converges_idempotently_and_verifies(scenario: str) -> None:
    tools = Path(sys.executable).parent
    environment = {
        **os.environ,
        "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
    }
    log_path = REPOSITORY / "test-artifacts" / f"molecule-{scenario}.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("w") as log:
        result = subprocess.run(
            [str(tools / "molecule"), "test", "--scenario-name", scenario],
            cwd=REPOSITORY,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=SCENARIO_TIMEOUT_SECONDS,
            check=False,
        )
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[-15000:]
        pytest.fail(f"molecule test -s {scenario} failed (full log: {log_path}):\n{tail}")

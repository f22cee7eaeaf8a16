"""Values of an inventory's variables, rendered by Ansible itself (no host is contacted).

An ad hoc ``ansible localhost -m debug`` renders one Jinja expression with the inventory's
group_vars, so a value derived from other variables comes out exactly as a playbook sees it.
tools/cost.py and the infra tests read the inventory through this, never through copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
ANSIBLE = Path(sys.executable).with_name("ansible")


class InventoryError(Exception):
    """Ansible could not render the expression; the message holds its output."""


def render_variables(
    names: list[str],
    inventory: Path | str,
    extra: Mapping[str, Any] | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values of the variables ``names`` of group all in ``inventory``.

    ``extra`` are extra variables (``-e``) and ``environment`` the environment, as a playbook run
    would be given them (an inventory may read the environment, e.g. the stack).
    """
    expression = "{{ {" + ", ".join(f"'{name}': {name}" for name in names) + "} | to_json }}"
    return render_expression(expression, inventory, extra, environment)


def render_expression(
    expression: str,
    inventory: Path | str,
    extra: Mapping[str, Any] | None = None,
    environment: Mapping[str, str] | None = None,
) -> Any:
    """The JSON value that ``expression`` (a Jinja template ending in ``| to_json``) renders to."""
    result = subprocess.run(
        [
            str(ANSIBLE),
            "localhost",
            "-i",
            str(inventory),
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={expression}",
            # What playbooks/ derive from their own folder; an ad hoc run has none.
            "-e",
            json.dumps({"platform_repository_root": str(REPOSITORY), **(extra or {})}),
        ],
        cwd=REPOSITORY,
        env={
            **(os.environ if environment is None else environment),
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
        host = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
        message = host["msg"]
        if host.get("failed"):
            raise InventoryError(f"{inventory}: {message}")
        return json.loads(message) if isinstance(message, str) else message
    except (ValueError, KeyError, IndexError) as error:
        raise InventoryError(
            f"could not render the variables of {inventory}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        ) from error

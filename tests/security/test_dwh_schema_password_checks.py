"""The dwh_schema role refuses login passwords that are missing, short or the same for both
logins, before it touches the database, and says why without printing them (docs/security.md,
"Credentials").

Each case runs the role's own checks (tasks/assert.yml) in a real ansible-playbook at -vvv, as an
operator chasing a refusal would, and looks at everything it printed.
"""

from __future__ import annotations

import json
import re
import secrets

import pytest

from tests.fixtures.ansible import run_playbook_verbosely

PLAYBOOK = """\
- name: The dwh_schema role's checks of its variables
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Run the role's checks
      ansible.builtin.include_role:
        name: dwh_schema
        tasks_from: assert.yml
"""
REFUSAL = "must be set (16 characters or more, different from each other)"


def a_password(length: int = 24) -> str:
    return secrets.token_urlsafe(length)[:length]


def run_checks(tmp_path, etl_password: str, reader_password: str):
    playbook = tmp_path / "checks.yml"
    playbook.write_text(PLAYBOOK)
    # Extra variables from a file: the passwords are not on a command line that -vvv echoes.
    variables = tmp_path / "passwords.json"
    variables.write_text(
        json.dumps(
            {"dwh_schema_etl_password": etl_password, "dwh_schema_reader_password": reader_password}
        )
    )
    return run_playbook_verbosely(
        playbook,
        "-e",
        f"@{variables}",
        environment={},
        temp_dir=tmp_path,
        timeout_seconds=120,
    )


SHORT = a_password(15)
SAME = a_password()


@pytest.mark.parametrize(
    ("etl_password", "reader_password"),
    [
        pytest.param("", a_password(), id="no ETL password"),
        pytest.param(a_password(), "", id="no reader password"),
        pytest.param(SHORT, a_password(), id="an ETL password of 15 characters"),
        pytest.param(a_password(), SHORT, id="a reader password of 15 characters"),
        pytest.param(SAME, SAME, id="the same password for both logins"),
    ],
)
def test_a_bad_password_is_refused_with_the_reason_and_not_printed(
    tmp_path, etl_password, reader_password
):
    run = run_checks(tmp_path, etl_password, reader_password)
    output = run.stdout + run.stderr
    assert run.returncode == 2, output[-3000:]
    assert "Ensure the login passwords and the reporting time zone are given" in output
    assert REFUSAL in output, output[-3000:]
    for password in {etl_password, reader_password} - {""}:
        assert password not in output


def test_two_good_passwords_pass_the_checks_and_are_not_printed(tmp_path):
    etl_password, reader_password = a_password(), a_password()
    run = run_checks(tmp_path, etl_password, reader_password)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert re.search(r"localhost\s+: ok=2\s+changed=0\s+unreachable=0\s+failed=0", output)
    assert etl_password not in output
    assert reader_password not in output

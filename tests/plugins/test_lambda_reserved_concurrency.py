"""lambda_reserved_concurrency: the decision from the account's settings alone, then the real
module run by ansible-playbook against moto (reserve, re-run, check mode, remove) and against a
moto whose account has a new account's concurrency limit, where AWS refuses any reservation.

moto 5.2.5 has no GetAccountSettings (the server answers 404), so against moto the module decides
from PutFunctionConcurrency's answer; moto refuses a reservation below the unreserved minimum of
100 only when MOTO_LAMBDA_CONCURRENCY_QUOTA is set in the server's environment. The decision from
the settings themselves is proven by the pure tests.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.module_utils.lambda_concurrency import (
    MINIMUM_UNRESERVED_CONCURRENCY,
    AccountConcurrency,
    plan_reservation,
)
from tests.fixtures.ansible import run_playbook
from tests.fixtures.aws import MotoServer, account_of_its_own

FUNCTION = "clickstream-test-etl"
NEW_ACCOUNT_LIMIT = 10


# --- the decision -------------------------------------------------------------------------------


def settings(limit: int, unreserved: int) -> AccountConcurrency:
    return AccountConcurrency.from_account_settings(
        {
            "AccountLimit": {
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": unreserved,
            }
        }
    )


def test_a_reservation_that_leaves_the_minimum_unreserved_is_made():
    assert plan_reservation(FUNCTION, None, 1, settings(1000, 1000)).action == "put"


def test_a_reservation_on_a_new_accounts_limit_is_skipped_with_the_reason():
    plan = plan_reservation(FUNCTION, None, 1, settings(NEW_ACCOUNT_LIMIT, NEW_ACCOUNT_LIMIT))
    assert plan.action == "skip"
    assert "concurrency limit is 10, so only 9 unreserved executions would remain" in (
        plan.skipped_reason
    )
    assert "advisory run lock" in plan.skipped_reason


def test_the_minimum_itself_may_remain():
    limit = MINIMUM_UNRESERVED_CONCURRENCY + 1
    assert plan_reservation(FUNCTION, None, 1, settings(limit, limit)).action == "put"
    assert plan_reservation(FUNCTION, None, 2, settings(limit, limit)).action == "skip"


def test_the_functions_own_reservation_counts_as_returned_to_the_pool():
    # 150 limit, this function holds 50: raising it to 51 leaves 99.
    assert plan_reservation(FUNCTION, 50, 51, settings(150, 100)).action == "skip"
    assert plan_reservation(FUNCTION, 50, 50, settings(150, 100)).action == "none"
    assert plan_reservation(FUNCTION, 50, 40, settings(150, 100)).action == "put"


def test_removing_a_reservation_needs_no_settings():
    assert plan_reservation(FUNCTION, 1, None, None).action == "delete"


def test_unread_settings_leave_the_decision_to_aws():
    assert plan_reservation(FUNCTION, None, 1, None).action == "put"


# --- the module against moto ---------------------------------------------------------------------


def function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def deploy_function(server: MotoServer) -> None:
    role = server.client("iam").create_role(
        RoleName=f"{FUNCTION}-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]
    server.client("lambda").create_function(
        FunctionName=FUNCTION,
        Runtime="python3.11",
        Role=role["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": function_zip()},
    )


def reservation(server: MotoServer) -> int | None:
    response = server.client("lambda").get_function_concurrency(FunctionName=FUNCTION)
    return response.get("ReservedConcurrentExecutions")


def run_module(tmp_path: Path, check_mode: bool = False, **options: Any) -> dict[str, Any]:
    play = {
        "name": "Exercise lambda_reserved_concurrency",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [
            {
                "name": "Run lambda_reserved_concurrency",
                "lambda_reserved_concurrency": {"function_name": FUNCTION, **options},
                "check_mode": check_mode,
            }
        ],
    }
    playbook = tmp_path / f"playbook-{len(list(tmp_path.glob('playbook-*.yml')))}.yml"
    playbook.write_text(json.dumps([play]))  # JSON is YAML
    playbook_run = run_playbook(
        playbook, "-i", "localhost,", environment={}, temp_dir=tmp_path, timeout_seconds=120
    )
    [result] = [task.result for task in playbook_run.task_results]
    assert not result.get("failed"), result.get("msg")
    return result


@pytest.fixture
def function(aws: MotoServer) -> MotoServer:
    deploy_function(aws)
    return aws


def test_reserving_changes_once_and_a_second_run_changes_nothing(function, tmp_path):
    first = run_module(tmp_path, reserved_concurrent_executions=1)
    second = run_module(tmp_path, reserved_concurrent_executions=1)

    assert (first["changed"], first["reserved_concurrent_executions"]) == (True, 1)
    assert first["skipped_reason"] is None
    assert (second["changed"], second["reserved_concurrent_executions"]) == (False, 1)
    assert reservation(function) == 1


def test_moto_has_no_account_settings_so_the_module_says_it_could_not_read_them(function, tmp_path):
    result = run_module(tmp_path, reserved_concurrent_executions=1)
    assert result["account_concurrency"] is None
    assert "Failed to read the account's Lambda settings" in result["account_settings_error"]


def test_check_mode_reports_the_change_and_reserves_nothing(function, tmp_path):
    result = run_module(tmp_path, check_mode=True, reserved_concurrent_executions=1)
    assert (result["changed"], result["reserved_concurrent_executions"]) == (True, 1)
    assert reservation(function) is None


def test_absent_removes_the_reservation(function, tmp_path):
    function.client("lambda").put_function_concurrency(
        FunctionName=FUNCTION, ReservedConcurrentExecutions=3
    )
    result = run_module(tmp_path, state="absent")
    assert (result["changed"], result["reserved_concurrent_executions"]) == (True, None)
    assert reservation(function) is None


@pytest.fixture(scope="module")
def new_account(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MotoServer]:
    """A moto server whose Lambda enforces a new account's concurrency limit of 10."""
    log_path = tmp_path_factory.mktemp("new-account-moto") / "moto.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_LAMBDA_CONCURRENCY_QUOTA", str(NEW_ACCOUNT_LIMIT))
        with account_of_its_own(log_path) as server:
            deploy_function(server)
            yield server


def test_on_a_new_accounts_limit_the_reservation_is_skipped_with_a_warning(new_account, tmp_path):
    result = run_module(tmp_path, reserved_concurrent_executions=1)

    assert result["changed"] is False
    assert result["reserved_concurrent_executions"] is None
    assert "AWS refused it" in result["skipped_reason"]
    assert any("advisory run lock" in warning for warning in result["warnings"])
    assert reservation(new_account) is None

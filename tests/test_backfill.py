"""Backfills: the clickstream_backfill module, alone and through playbooks/backfill.yml.

The integration tests run the real playbook with ansible-playbook, as an operator runs it on the
controller: the module, an item of a loop per chunk of hours, invokes Lambda ETL's window run, and
the terminal shows each chunk's figures as it loads. The function is
deployed once, by the platform's own stages, to a moto server of this module, and runs from its
deployed zip in the local Lambda runtime (tools/local_platform/runtime.py), which serves Lambda's
Invoke API for what moto stores but cannot run. The playbook's Lambda client is pointed at the
runtime (botocore's AWS_ENDPOINT_URL_LAMBDA) while S3 and SSM stay on moto; the function reaches a
real PostgreSQL through the environment the stage gave it (DWH_HOST, DWH_PORT, DWH_DATABASE, the
password's SSM parameter).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from clickstream import loader
from plugins.module_utils import clickstream_backfill as backfill_logic
from plugins.module_utils.clickstream_backfill import (
    BackfillError,
    chunks,
    invocation_result,
    parse_hour,
    throttle_delay,
    totals,
    window_hours,
)
from tests.fixtures.ansible import (
    REPO_ROOT,
    PlaybookRun,
    extra_vars,
    run_playbook,
    run_playbook_on_terminal,
)
from tests.fixtures.aws import (
    REGION,
    MotoServer,
    account_of_its_own,
    aws_environment,
    stack_bucket_name,
)
from tests.fixtures.local_runtime import local_lambda_runtime
from tests.fixtures.warehouse import TEMPLATE_DATABASE, Warehouse
from tests.raw_events import put_raw_bytes, put_raw_object, raw_record, tracker_event

MODULE_PATH = REPO_ROOT / "plugins/modules/clickstream_backfill.py"
WEEK_START = datetime(2025, 12, 1, tzinfo=UTC)
WEEK_HOURS = 7 * 24
EVENTS_PER_OBJECT = 5
# The stages Lambda ETL needs: its subnet and security group, its role, the DWH host whose
# address it would be given (lambdas_etl_dwh_host overrides it), and the function itself.
DEPLOY_STAGES = "network,security_groups,iam,compute,lambdas"
# What the local inventory names them: storage_raw_bucket_name and
# secrets_etl_writer_password_parameter, the function's RAW_BUCKET and DWH_PASSWORD_PARAM.
RAW_BUCKET = stack_bucket_name("raw")
PASSWORD_PARAMETER = "/clickstream/local/warehouse/etl-writer-password"
# The database the deployed function loads into (its DWH_DATABASE), made afresh for each test.
BACKFILL_DATABASE = "clickstream_dw_backfill"


# --- the pure logic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hour"),
    [
        ("2025-12-01T07", datetime(2025, 12, 1, 7, tzinfo=UTC)),
        ("2025-12-01T07:45:10", datetime(2025, 12, 1, 7, tzinfo=UTC)),
        ("2025-12-01T14:00+07:00", datetime(2025, 12, 1, 7, tzinfo=UTC)),
        ("2025-12-01T07:00Z", datetime(2025, 12, 1, 7, tzinfo=UTC)),
    ],
)
def test_window_edges_are_read_as_utc_hours(text, hour):
    assert parse_hour(text, "start") == hour


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("", "2025-12-01T00", "start is empty"),
        ("yesterday", "2025-12-01T00", "is not an ISO-8601 time"),
        ("2025-12-02T00", "2025-12-01T00", "the window is reversed"),
        ("2025-01-01T00", "2025-12-31T23", "more than max_window_hours=744"),
    ],
)
def test_a_bad_window_is_refused_with_the_reason(start, end, message):
    with pytest.raises(BackfillError, match=message):
        window_hours(parse_hour(start, "start"), parse_hour(end, "end"), max_hours=744)


def test_a_window_splits_into_ordered_chunks_of_at_most_chunk_hours():
    hours = window_hours(WEEK_START, WEEK_START + timedelta(hours=4), max_hours=744)
    assert chunks(hours, 2) == [
        (hours[0], hours[1]),
        (hours[2], hours[3]),
        (hours[4], hours[4]),
    ]


def test_a_failed_invocation_raises_the_functions_error():
    payload = json.dumps({"errorType": "WarehouseUnavailable", "errorMessage": "no route"})
    with pytest.raises(BackfillError, match="WarehouseUnavailable: no route"):
        invocation_result("Unhandled", payload.encode())


def test_an_invocation_answer_that_is_not_a_report_is_an_error():
    with pytest.raises(BackfillError, match="unexpected"):
        invocation_result(None, b"null")


def test_a_successful_invocation_returns_the_report():
    assert invocation_result(None, b'{"status": "succeeded"}') == {"status": "succeeded"}


def test_totals_add_up_every_chunk():
    results = [
        {"objects": 2, "events_loaded": 10, "events_updated": 0, "duplicates_skipped": 1,
         "rejected_lines": 0, "missing_objects": 0},
        {"objects": 1, "events_loaded": 4, "events_updated": 3, "duplicates_skipped": 0,
         "rejected_lines": 2, "missing_objects": 1},
    ]  # fmt: skip
    assert totals(results) == {
        "objects": 3,
        "events_loaded": 14,
        "events_updated": 3,
        "duplicates_skipped": 1,
        "rejected_lines": 2,
        "missing_objects": 1,
        "throttle_retries": 0,
        "lock_retries": 0,
        "chunks": 2,
    }


def test_throttle_retries_are_added_up_with_the_chunks():
    results = [
        {"objects": 1, "throttle_retries": 3, "lock_retries": 1},
        {"objects": 1, "throttle_retries": 2, "lock_retries": 0},
    ]
    summed = totals(results)
    assert (summed["throttle_retries"], summed["lock_retries"]) == (5, 1)


def test_throttle_backoff_doubles_up_to_the_cap_with_full_jitter():
    def highest(low, high):
        return high

    def lowest(low, high):
        return low

    assert [throttle_delay(retry, 1.0, 60.0, draw=highest) for retry in range(8)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0,
    ]  # fmt: skip
    assert throttle_delay(5, 1.0, 60.0, draw=lowest) == 0.0
    assert 0.0 <= throttle_delay(3, 1.0, 60.0) <= 8.0


# --- the module's contract: argument_spec mirrors DOCUMENTATION --------------------------------


@pytest.fixture
def module_source(monkeypatch: pytest.MonkeyPatch):
    """The module's Python source, imported the way Ansible runs it: its module_utils appear
    under ansible.module_utils."""
    monkeypatch.setitem(sys.modules, "ansible.module_utils.clickstream_backfill", backfill_logic)
    spec = importlib.util.spec_from_file_location("clickstream_backfill", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argument_spec_mirrors_documentation(module_source):
    documented = yaml.safe_load(module_source.DOCUMENTATION)["options"]
    assert {
        name: (doc.get("type", "str"), doc.get("required", False), doc.get("default"))
        for name, doc in documented.items()
    } == {
        name: (option["type"], option.get("required", False), option.get("default"))
        for name, option in module_source.build_argument_spec().items()
    }


def test_examples_and_return_are_yaml(module_source):
    assert isinstance(yaml.safe_load(module_source.EXAMPLES), list)
    assert "resume_from" in yaml.safe_load(module_source.RETURN)


# --- through the playbook and the deployed function ----------------------------------------------


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server for this module alone (the function is deployed to it once), with AWS's
    managed IAM policies that the IAM stage attaches."""
    with account_of_its_own(tmp_path_factory.mktemp("backfill-moto") / "moto.log") as server:
        yield server


@pytest.fixture(scope="module")
def deployed_etl(emulator, postgres, migrated_template, tmp_path_factory) -> Path:
    """Lambda ETL deployed by the platform's stages, pointed at this session's PostgreSQL, with
    its password in SSM and its raw bucket; returns the folder of the deployed zips."""
    temp_dir = tmp_path_factory.mktemp("backfill-deploy")
    build_dir = temp_dir / "lambda-build"
    deployment = run_playbook(
        "site.yml", "-i", "inventories/local", "--tags", DEPLOY_STAGES,
        *extra_vars({
            "lambdas_build_dir": str(build_dir),
            "lambdas_etl_dwh_host": "127.0.0.1",
            "warehouse_port": postgres.port,
            "warehouse_database": BACKFILL_DATABASE,
        }),
        environment=aws_environment(emulator.endpoint_url),
        temp_dir=temp_dir,
    )  # fmt: skip
    assert deployment.returncode == 0, deployment.explain()
    # Not the secrets and storage stages: the password is the test cluster's login's, and the
    # storage stage's TLS-only bucket policy would refuse every request under plain moto (it
    # counts a condition it cannot evaluate as a Deny; tools/local_platform/emulator.py).
    emulator.client("ssm").put_parameter(
        Name=PASSWORD_PARAMETER, Value=migrated_template.etl, Type="SecureString"
    )
    emulator.client("s3").create_bucket(
        Bucket=RAW_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return build_dir


@pytest.fixture(scope="module")
def runtime_state_dir(tmp_path_factory) -> Path:
    """The local Lambda runtime's state; its runtime.log says when it throttled."""
    return tmp_path_factory.mktemp("backfill-runtime")


@pytest.fixture(scope="module")
def lambda_invoke_url(emulator, deployed_etl, runtime_state_dir) -> Iterator[str]:
    """The local Lambda runtime serving the deployed function's Invoke API."""
    with local_lambda_runtime(
        emulator.endpoint_url,
        build_dir=deployed_etl,
        state_dir=runtime_state_dir,
        log_path=runtime_state_dir / "runtime.log",
        environment=aws_environment(emulator.endpoint_url),
    ) as invoke_url:
        yield invoke_url


@pytest.fixture
def backfill_warehouse(postgres, migrated_template) -> Iterator[Warehouse]:
    """The function's database, made again from the migrated template for each test."""
    postgres.execute_autocommit(f"CREATE DATABASE {BACKFILL_DATABASE} TEMPLATE {TEMPLATE_DATABASE}")
    yield Warehouse(postgres, BACKFILL_DATABASE, migrated_template.etl, migrated_template.reader)
    postgres.execute_autocommit(f"DROP DATABASE {BACKFILL_DATABASE} WITH (FORCE)")


@pytest.fixture
def raw_s3(emulator, deployed_etl):
    """The raw bucket's client, the bucket emptied of the previous test's objects."""
    s3 = emulator.client("s3")
    listed = s3.list_objects_v2(Bucket=RAW_BUCKET).get("Contents", [])
    if listed:
        s3.delete_objects(
            Bucket=RAW_BUCKET, Delete={"Objects": [{"Key": item["Key"]} for item in listed]}
        )
    return s3


@pytest.fixture
def week_of_raw_objects(backfill_warehouse, raw_s3) -> Warehouse:
    """One object of five events per hour of a week; the first two days already loaded."""
    for hour in range(WEEK_HOURS):
        received = WEEK_START + timedelta(hours=hour, minutes=10)
        records = [
            raw_record(tracker_event(sessionId=f"s{hour}"), received + timedelta(seconds=second))
            for second in range(EVENTS_PER_OBJECT)
        ]
        put_raw_object(raw_s3, RAW_BUCKET, records, received)
    connection = backfill_warehouse.etl_connection()
    try:
        loader.run_window(
            connection, raw_s3, RAW_BUCKET, start=WEEK_START, end=WEEK_START + timedelta(hours=47)
        )
    finally:
        connection.close()
    return backfill_warehouse


@pytest.fixture
def backfill_command(emulator, lambda_invoke_url, tmp_path):
    """The arguments and keywords of run_playbook for playbooks/backfill.yml over a window."""

    def command(*, start, end, check=False, **extra) -> tuple[tuple[str, ...], dict]:
        variables = {
            "backfill_start": start,
            "backfill_end": end,
            "backfill_chunk_hours": 24,
            **extra,
        }
        arguments = ("playbooks/backfill.yml", "-i", "inventories/local", *extra_vars(variables))
        # Lambda's Invoke API from the runtime; every other service from moto.
        environment = {
            **aws_environment(emulator.endpoint_url),
            "AWS_ENDPOINT_URL_LAMBDA": lambda_invoke_url,
        }
        return arguments + (("--check",) if check else ()), {
            "environment": environment,
            "temp_dir": tmp_path,
        }

    return command


@pytest.fixture
def backfill(backfill_command):
    """Runs ansible-playbook playbooks/backfill.yml; returns what it did (backfill_result)."""

    def run(**window) -> dict:
        arguments, keywords = backfill_command(**window)
        return backfill_result(run_playbook(*arguments, **keywords))

    return run


def backfill_result(playbook_run: PlaybookRun) -> dict:
    """The playbook's run in the shape of the module's result for a whole window: the failure of
    the window's split as it is; else each chunk's result put together, the totals read from the
    playbook's summary, and the message of its last task when a chunk failed (with that chunk's
    error and resume_from)."""
    tasks = {task.task: task.result for task in playbook_run.task_results}
    split = tasks["Split the window into chunks"]
    if split.get("failed"):
        return split
    chunks = tasks["Backfill the window"]["results"]
    summary = tasks["Report what the backfill did"]["msg"]
    window, counts = summary.split(": ", 1)
    assert window == f"{split['window']['start']}..{split['window']['end']}", summary
    result = {
        "changed": any(chunk["changed"] for chunk in chunks),
        "chunks": chunks,
        "results": [each for chunk in chunks for each in chunk.get("results", [])],
        "hours": [hour for chunk in chunks for hour in chunk.get("hours", [])],
        "totals": {name: int(count) for name, count in map(str.split, counts.split(", "))},
        "throttle_retries": sum(chunk["throttle_retries"] for chunk in chunks),
    }
    stop = tasks["Stop at the chunk that failed"]
    if stop.get("failed"):
        *loaded, failed = chunks
        assert failed["failed"]
        assert not any(chunk.get("failed") for chunk in loaded)
        result.update(
            failed=True, msg=stop["msg"], error=failed["msg"], resume_from=failed["resume_from"]
        )
    return result


def loaded_events(warehouse) -> int:
    return warehouse.scalar("SELECT count(*) FROM clickstream_events")


def test_check_mode_reports_exactly_the_unloaded_objects_and_changes_nothing(
    week_of_raw_objects, backfill
):
    result = backfill(start="2025-12-01T00", end="2025-12-07T23", check=True)
    assert result["changed"] is True
    hours = result["hours"]
    assert len(hours) == WEEK_HOURS
    assert [h["to_load"] for h in hours] == [0] * 48 + [1] * (WEEK_HOURS - 48)
    assert result["totals"] == {
        "hours": WEEK_HOURS,
        "objects": WEEK_HOURS,
        "loaded": 48,
        "to_load": 120,
    }
    assert loaded_events(week_of_raw_objects) == 48 * EVENTS_PER_OBJECT


def test_a_backfill_loads_exactly_the_missing_events_and_a_second_run_changes_nothing(
    week_of_raw_objects, backfill
):
    first = backfill(start="2025-12-01T00", end="2025-12-07T23")
    second = backfill(start="2025-12-01T00", end="2025-12-07T23")

    assert first["changed"] is True
    assert first["totals"]["objects"] == 120
    assert first["totals"]["events_loaded"] == 120 * EVENTS_PER_OBJECT
    assert [(r["start"], r["end"]) for r in first["results"]][:2] == [
        ("2025-12-01T00", "2025-12-01T23"),
        ("2025-12-02T00", "2025-12-02T23"),
    ]
    assert second["changed"] is False
    assert second["totals"]["objects"] == 0
    assert loaded_events(week_of_raw_objects) == WEEK_HOURS * EVENTS_PER_OBJECT


def test_per_hour_chunks_report_each_hour(week_of_raw_objects, backfill):
    result = backfill(start="2025-12-03T00", end="2025-12-03T05", backfill_chunk_hours=1)
    assert [(r["start"], r["objects"], r["events_loaded"]) for r in result["results"]] == [
        (f"2025-12-03T{hour:02d}", 1, EVENTS_PER_OBJECT) for hour in range(6)
    ]


def item_labels(output: str) -> list[str]:
    """The loop items' labels in ansible-playbook's default output: each chunk's line."""
    return re.findall(r"^changed: \[localhost\] => \(item=(.*)\)$", output, re.MULTILINE)


def test_the_terminal_shows_each_hour_as_it_loads_then_the_totals(
    week_of_raw_objects, backfill_command
):
    def terminal(**options) -> str:
        arguments, keywords = backfill_command(
            start="2025-12-03T00", end="2025-12-03T02", backfill_chunk_hours=1, **options
        )
        completed = run_playbook_on_terminal(*arguments, **keywords)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return completed.stdout

    planned = terminal(check=True)
    loaded = terminal()

    hours = [f"2025-12-03T{hour:02d}" for hour in range(3)]
    assert item_labels(planned) == [f"{hour}: 1 objects, 0 loaded, 1 to load" for hour in hours]
    assert "2025-12-03T00..2025-12-03T02: hours 3, objects 3, loaded 0, to_load 3" in planned
    assert [re.sub(r"\d+\.\d s$", "_ s", label) for label in item_labels(loaded)] == [
        f"{hour}: 1 objects, 5 events loaded, 0 updated, 0 duplicates, 0 rejected, _ s"
        for hour in hours
    ]
    assert (
        "2025-12-03T00..2025-12-03T02: objects 3, events_loaded 15, events_updated 0, "
        "duplicates_skipped 0, rejected_lines 0, missing_objects 0, throttle_retries 0, "
        "lock_retries 0, chunks 3"
    ) in loaded


def test_force_reloads_without_changing_the_row_count(week_of_raw_objects, backfill):
    result = backfill(start="2025-12-01T00", end="2025-12-01T23", backfill_force=True)
    assert result["changed"] is True
    assert result["totals"]["objects"] == 24
    assert result["totals"]["duplicates_skipped"] == 24 * EVENTS_PER_OBJECT
    assert loaded_events(week_of_raw_objects) == 48 * EVENTS_PER_OBJECT


def test_a_malformed_object_is_reported_and_the_rest_of_the_window_loads(
    week_of_raw_objects, raw_s3, backfill
):
    put_raw_bytes(
        raw_s3, RAW_BUCKET, b"{broken\nnot json either\n", WEEK_START + timedelta(hours=60)
    )
    result = backfill(start="2025-12-03T00", end="2025-12-03T23")
    assert result["totals"]["objects"] == 25
    assert result["totals"]["rejected_lines"] == 2
    assert result["totals"]["events_loaded"] == 24 * EVENTS_PER_OBJECT
    assert week_of_raw_objects.scalar("SELECT count(*) FROM etl_rejects") == 2


def test_a_window_larger_than_the_maximum_is_refused(week_of_raw_objects, backfill):
    result = backfill(start="2025-12-01T00", end="2025-12-07T23", backfill_max_window_hours=24)
    assert result["failed"] is True
    assert "more than max_window_hours=24" in result["msg"]


def test_a_function_that_is_not_deployed_fails_the_first_chunk_by_name(
    week_of_raw_objects, backfill
):
    result = backfill(
        start="2025-12-03T00", end="2025-12-03T23", lambdas_etl_name="clickstream-not-deployed"
    )
    assert result["failed"] is True
    assert result["resume_from"] == "2025-12-03T00"
    assert "-e backfill_start=2025-12-03T00 to resume" in result["msg"]
    assert "invoking clickstream-not-deployed failed" in result["error"]
    assert "ResourceNotFoundException" in result["error"]
    assert loaded_events(week_of_raw_objects) == 48 * EVENTS_PER_OBJECT


def test_a_database_that_stops_mid_window_names_the_hour_to_resume_from(
    week_of_raw_objects, postgres, backfill
):
    warehouse = week_of_raw_objects

    run_over = threading.Event()
    stopped = threading.Event()

    def stop_the_database_once_day_four_is_loaded():
        while not run_over.wait(0.05):
            if warehouse.scalar(
                "SELECT count(*) FROM etl_loaded_objects WHERE partition_hour >= '2025-12-04'"
            ):
                postgres.stop()
                stopped.set()
                return

    stopper = threading.Thread(target=stop_the_database_once_day_four_is_loaded)
    stopper.start()
    try:
        failed = backfill(start="2025-12-03T00", end="2025-12-07T23", backfill_chunk_hours=1)
    finally:
        run_over.set()
        stopper.join()
        if stopped.is_set():
            postgres.start_server()

    assert stopped.is_set(), "the backfill ended before the database could be stopped"
    assert failed["failed"] is True
    # The function's own error, as Lambda reports it.
    assert "the ETL function failed" in failed["error"]
    resume_from = failed["resume_from"]
    assert "2025-12-04T00" <= resume_from <= "2025-12-07T23"
    assert f"The backfill stopped at {resume_from}" in failed["msg"]
    assert f"-e backfill_start={resume_from} to resume" in failed["msg"]
    resume_hour = parse_hour(resume_from, "resume_from")
    hours_before = int((resume_hour - datetime(2025, 12, 3, tzinfo=UTC)) / timedelta(hours=1))
    # The loop ended at the chunk that failed: a chunk per hour before it, and that one.
    assert [chunk["backfill_chunk"]["start"] for chunk in failed["chunks"]][-1] == resume_from
    assert len(failed["chunks"]) == hours_before + 1
    # Every hour before resume_from is loaded. The resume_from hour itself is loaded whole or not
    # at all: the database may stop after its load committed, during the aggregate refresh that
    # follows (its dirty-hour marks committed with it, so the next run refreshes it).
    assert loaded_events(warehouse) in {
        (48 + hours_before) * EVENTS_PER_OBJECT,
        (48 + hours_before + 1) * EVENTS_PER_OBJECT,
    }

    resumed = backfill(start=resume_from, end="2025-12-07T23", backfill_chunk_hours=24)

    assert not resumed.get("failed"), resumed.get("msg")
    assert resumed["totals"]["duplicates_skipped"] == 0
    assert loaded_events(warehouse) == WEEK_HOURS * EVENTS_PER_OBJECT


def test_the_refresh_playbook_recomputes_the_rollups_of_a_range(
    week_of_raw_objects, emulator, tmp_path
):
    warehouse = week_of_raw_objects
    warehouse.query("UPDATE rollup_funnel_daily SET sessions = 999 RETURNING 1")
    variables = {
        "refresh_start": "2025-12-01T00",
        "refresh_end": "2025-12-01T23",
        "refresh_hosts": "localhost",
        "refresh_login_host": "127.0.0.1",
        "refresh_login_user": "clickstream_etl",
        "refresh_login_password": warehouse.etl_password,
        "warehouse_port": warehouse.cluster.port,
        "warehouse_database": warehouse.database,
        "ansible_python_interpreter": sys.executable,
    }
    playbook_run = run_playbook(
        "playbooks/refresh_rollups.yml", "-i", "inventories/local", *extra_vars(variables),
        # The local inventory finds its DWH host in the emulated account: this module's moto.
        environment=aws_environment(emulator.endpoint_url), temp_dir=tmp_path,
    )  # fmt: skip
    assert playbook_run.returncode == 0, playbook_run.explain()
    assert warehouse.query("SELECT day::text, sessions FROM rollup_funnel_daily ORDER BY day") == [
        ("2025-12-01", 24),
        ("2025-12-02", 999),
    ]


# --- throttling: Lambda ETL's reserved concurrency taken -----------------------------------------


@pytest.fixture
def etl_reservation(emulator, deployed_etl) -> Iterator:
    """Sets Lambda ETL's reserved concurrency in the emulator, which the runtime reads for each
    synchronous invocation; restores the deployed reservation after the test."""
    functions = emulator.client("lambda").list_functions()["Functions"]
    [etl] = [
        function["FunctionName"]
        for function in functions
        if "DWH_HOST" in (function.get("Environment") or {}).get("Variables", {})
    ]
    lambda_client = emulator.client("lambda")
    deployed = lambda_client.get_function_concurrency(FunctionName=etl).get(
        "ReservedConcurrentExecutions"
    )

    def reserve(count: int) -> None:
        lambda_client.put_function_concurrency(FunctionName=etl, ReservedConcurrentExecutions=count)

    yield reserve
    if deployed is None:
        lambda_client.delete_function_concurrency(FunctionName=etl)
    else:
        reserve(deployed)


def throttles_logged(runtime_state_dir: Path) -> int:
    log = (runtime_state_dir / "runtime.log").read_text()
    return sum('"message": "throttled"' in line for line in log.splitlines())


def test_a_throttled_backfill_retries_until_the_etl_is_free_and_counts_the_retries(
    week_of_raw_objects, etl_reservation, runtime_state_dir, backfill
):
    # The hourly run holds the ETL's one reserved execution: Lambda throttles the backfill.
    etl_reservation(0)
    throttles_before = throttles_logged(runtime_state_dir)
    run_over = threading.Event()

    def end_the_hourly_run_once_the_backfill_is_throttled_twice():
        while not run_over.wait(0.05):
            if throttles_logged(runtime_state_dir) >= throttles_before + 2:
                etl_reservation(1)
                return

    releaser = threading.Thread(target=end_the_hourly_run_once_the_backfill_is_throttled_twice)
    releaser.start()
    try:
        result = backfill(
            start="2025-12-03T00",
            end="2025-12-03T23",
            backfill_throttle_retries=40,
            backfill_throttle_base_delay=0.1,
            backfill_throttle_max_delay=0.3,
        )
    finally:
        run_over.set()
        releaser.join()

    assert not result.get("failed"), result.get("msg")
    [chunk] = result["results"]
    assert chunk["throttle_retries"] >= 2
    assert (
        result["totals"]["throttle_retries"]
        == result["throttle_retries"]
        == chunk["throttle_retries"]
    )
    assert result["totals"]["events_loaded"] == 24 * EVENTS_PER_OBJECT
    assert loaded_events(week_of_raw_objects) == (48 + 24) * EVENTS_PER_OBJECT


def test_a_backfill_throttled_through_every_retry_fails_naming_the_retries(
    week_of_raw_objects, etl_reservation, backfill
):
    etl_reservation(0)
    result = backfill(
        start="2025-12-03T00",
        end="2025-12-03T23",
        backfill_throttle_retries=2,
        backfill_throttle_base_delay=0.05,
        backfill_throttle_max_delay=0.1,
    )
    assert result["failed"] is True
    assert "TooManyRequestsException" in result["error"]
    assert "through 2 throttle_retries" in result["error"]
    assert result["resume_from"] == "2025-12-03T00"
    assert result["throttle_retries"] == 2
    assert loaded_events(week_of_raw_objects) == 48 * EVENTS_PER_OBJECT

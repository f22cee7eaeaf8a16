"""apigatewayv2_http_api: its pure helpers alone, then the real module run by ansible-playbook
against the moto server (create, re-run, update, check mode, purge, delete)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from plugins.module_utils import apigatewayv2 as helpers
from plugins.module_utils.apigatewayv2 import (
    DesiredRoute,
    IntegrationTarget,
    LambdaIntegration,
    plan_routes,
)
from tests.fixtures.ansible import run_playbook
from tests.fixtures.aws import MotoServer

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_PATH = REPO_ROOT / "plugins" / "modules" / "apigatewayv2_http_api.py"

INGEST_LAMBDA_ARN = "arn:aws:lambda:ap-southeast-1:123456789012:function:clickstream-local-ingest"
BACKFILL_LAMBDA_ARN = "arn:aws:lambda:ap-southeast-1:123456789012:function:clickstream-backfill"
LOG_GROUP_ARN = "arn:aws:logs:ap-southeast-1:123456789012:log-group:/clickstream/http-api"
ACCESS_LOG_FORMAT = '{"requestId":"$context.requestId","status":"$context.status"}'
API_NAME = "clickstream-local-http-api"

# moto 5.2.5 has no UpdateStage: the server raises NotImplementedError ("The update_stage action
# has not been implemented") and answers HTTP 500. Remove the marker once moto implements it.
MOTO_HAS_NO_UPDATE_STAGE = pytest.mark.xfail(
    strict=True,
    reason="moto 5.2.5 apigatewayv2 does not implement UpdateStage (HTTP 500, NotImplementedError)",
)


# --- Pure helpers -------------------------------------------------------------------------------


def lambda_integration(arn: str = INGEST_LAMBDA_ARN, timeout_ms: int = 10000) -> LambdaIntegration:
    return LambdaIntegration(lambda_arn=arn, payload_format_version="2.0", timeout_ms=timeout_ms)


def api_integration(integration_id: str, settings: LambdaIntegration) -> dict[str, Any]:
    return {"IntegrationId": integration_id, **settings.request()}


def api_route(route_id: str, route_key: str, integration_id: str) -> dict[str, Any]:
    return {"RouteId": route_id, "RouteKey": route_key, "Target": f"integrations/{integration_id}"}


def test_cors_lists_compare_without_case_or_order():
    ours = {"AllowHeaders": ["Content-Type", "X-Trace"], "AllowMethods": ["POST", "OPTIONS"]}
    services = {"AllowHeaders": ["x-trace", "content-type"], "AllowMethods": ["OPTIONS", "post"]}

    assert helpers.normalise_cors(ours) == helpers.normalise_cors(services)


def test_cors_without_credentials_or_lists_equals_no_cors():
    assert helpers.normalise_cors({"AllowCredentials": False, "AllowOrigins": []}) == {}


def test_cors_request_leaves_out_unset_suboptions():
    option = {"allow_origins": ["https://shop.example.com"], "max_age": 3600, "allow_headers": None}

    assert helpers.cors_request(option) == {
        "AllowOrigins": ["https://shop.example.com"],
        "MaxAge": 3600,
    }


def test_cors_option_with_nothing_set_asks_for_no_cors():
    assert helpers.cors_request(dict.fromkeys(helpers.CORS_FIELDS)) is None


def test_lambda_invocation_uri_names_the_function_arn():
    uri = (
        "arn:aws:apigateway:ap-southeast-1:lambda:path/2015-03-31/functions/"
        f"{INGEST_LAMBDA_ARN}/invocations"
    )

    assert helpers.lambda_function_arn(uri) == INGEST_LAMBDA_ARN
    assert helpers.lambda_function_arn(INGEST_LAMBDA_ARN) == INGEST_LAMBDA_ARN


def test_integration_that_is_not_a_lambda_proxy_has_no_lambda_settings():
    http_proxy = {"IntegrationId": "i1", "IntegrationType": "HTTP_PROXY", "IntegrationUri": "x"}

    assert helpers.integration_from_api(http_proxy) is None


def test_duplicate_route_keys_are_reported():
    routes = [DesiredRoute("POST /a", lambda_integration())] * 2

    assert helpers.duplicate_route_keys(routes) == ["POST /a"]


def test_routes_already_as_wanted_need_no_change():
    settings = lambda_integration()
    plan = plan_routes(
        [api_route("r1", "POST /clickstream", "i1")],
        [api_integration("i1", settings)],
        [DesiredRoute("POST /clickstream", settings)],
        purge_routes=True,
    )

    assert not plan.changed


def test_new_route_gets_a_new_integration():
    plan = plan_routes([], [], [DesiredRoute("POST /clickstream", lambda_integration())], True)

    assert plan.create_integrations == [lambda_integration()]
    assert plan.create_routes == [("POST /clickstream", IntegrationTarget(new_integration=0))]


def test_new_route_reuses_an_integration_with_the_same_settings():
    settings = lambda_integration()
    plan = plan_routes(
        [api_route("r1", "POST /clickstream", "i1")],
        [api_integration("i1", settings)],
        [DesiredRoute("POST /clickstream", settings), DesiredRoute("POST /batch", settings)],
        purge_routes=True,
    )

    assert plan.create_integrations == []
    assert plan.create_routes == [("POST /batch", IntegrationTarget(integration_id="i1"))]


def test_changed_settings_of_a_route_with_its_own_integration_update_it_in_place():
    plan = plan_routes(
        [api_route("r1", "POST /clickstream", "i1")],
        [api_integration("i1", lambda_integration(timeout_ms=10000))],
        [DesiredRoute("POST /clickstream", lambda_integration(timeout_ms=5000))],
        purge_routes=True,
    )

    assert plan.update_integrations == {"i1": lambda_integration(timeout_ms=5000)}
    assert (plan.create_integrations, plan.retarget_routes, plan.delete_integrations) == (
        [],
        [],
        [],
    )


def test_changed_settings_of_a_route_sharing_its_integration_move_it_to_a_new_one():
    shared = lambda_integration()
    plan = plan_routes(
        [api_route("r1", "POST /clickstream", "i1"), api_route("r2", "POST /batch", "i1")],
        [api_integration("i1", shared)],
        [
            DesiredRoute("POST /clickstream", shared),
            DesiredRoute("POST /batch", lambda_integration(BACKFILL_LAMBDA_ARN)),
        ],
        purge_routes=True,
    )

    assert plan.update_integrations == {}
    assert plan.create_integrations == [lambda_integration(BACKFILL_LAMBDA_ARN)]
    assert plan.retarget_routes == [("r2", "POST /batch", IntegrationTarget(new_integration=0))]
    assert plan.delete_integrations == []


def test_an_integration_changed_in_place_is_not_reused_for_its_old_settings():
    old, new = lambda_integration(timeout_ms=10000), lambda_integration(timeout_ms=5000)
    plan = plan_routes(
        [api_route("r1", "POST /clickstream", "i1")],
        [api_integration("i1", old)],
        [DesiredRoute("POST /batch", old), DesiredRoute("POST /clickstream", new)],
        purge_routes=True,
    )

    assert plan.update_integrations == {"i1": new}
    assert plan.create_routes == [("POST /batch", IntegrationTarget(new_integration=0))]
    assert plan.create_integrations == [old]


def test_purge_deletes_unlisted_routes_and_integrations_left_unused():
    plan = plan_routes(
        [api_route("r1", "POST /clickstream", "i1"), api_route("r2", "POST /batch", "i2")],
        [
            api_integration("i1", lambda_integration()),
            api_integration("i2", lambda_integration(BACKFILL_LAMBDA_ARN)),
        ],
        [DesiredRoute("POST /clickstream", lambda_integration())],
        purge_routes=True,
    )

    assert plan.delete_routes == [("r2", "POST /batch")]
    assert plan.delete_integrations == ["i2"]


def test_without_purge_unlisted_routes_and_their_integrations_stay():
    plan = plan_routes(
        [api_route("r2", "POST /batch", "i2")],
        [api_integration("i2", lambda_integration(BACKFILL_LAMBDA_ARN))],
        [DesiredRoute("POST /clickstream", lambda_integration())],
        purge_routes=False,
    )

    assert plan.delete_routes == []
    assert plan.delete_integrations == []
    assert plan.create_routes == [("POST /clickstream", IntegrationTarget(new_integration=0))]


def test_integrations_no_route_used_before_are_left_alone():
    plan = plan_routes(
        [],
        [api_integration("orphan", lambda_integration(BACKFILL_LAMBDA_ARN))],
        [],
        purge_routes=True,
    )

    assert not plan.changed


def stage_option(**settings: Any) -> dict[str, Any]:
    option = {
        "name": "$default",
        "auto_deploy": None,
        "throttling_burst_limit": None,
        "throttling_rate_limit": None,
        "detailed_metrics_enabled": None,
        "access_log_destination_arn": None,
        "access_log_format": None,
    }
    return {**option, **settings}


CURRENT_STAGE = {
    "StageName": "$default",
    "AutoDeploy": True,
    "DefaultRouteSettings": {"ThrottlingBurstLimit": 200, "ThrottlingRateLimit": 100.0},
    "AccessLogSettings": {"DestinationArn": LOG_GROUP_ARN, "Format": ACCESS_LOG_FORMAT},
}


def test_stage_in_sync_needs_no_update():
    wanted = helpers.stage_settings(
        stage_option(
            auto_deploy=True,
            throttling_burst_limit=200,
            throttling_rate_limit=100,
            access_log_destination_arn=LOG_GROUP_ARN,
            access_log_format=ACCESS_LOG_FORMAT,
        )
    )

    assert helpers.stage_update(CURRENT_STAGE, wanted) == {}


def test_stage_options_left_unset_are_not_compared():
    assert helpers.stage_update(CURRENT_STAGE, helpers.stage_settings(stage_option())) == {}


def test_one_changed_limit_sends_the_whole_route_settings():
    wanted = helpers.stage_settings(stage_option(throttling_rate_limit=50))

    assert helpers.stage_update(CURRENT_STAGE, wanted) == {
        "DefaultRouteSettings": {"ThrottlingBurstLimit": 200, "ThrottlingRateLimit": 50.0}
    }


def test_changed_access_log_format_updates_the_access_log_settings():
    wanted = helpers.stage_settings(
        stage_option(access_log_destination_arn=LOG_GROUP_ARN, access_log_format="$context.status")
    )

    assert helpers.stage_update(CURRENT_STAGE, wanted) == {
        "AccessLogSettings": {"DestinationArn": LOG_GROUP_ARN, "Format": "$context.status"}
    }


def test_log_group_arn_with_the_describe_log_groups_suffix_matches_the_stage():
    wanted = helpers.stage_settings(
        stage_option(
            access_log_destination_arn=f"{LOG_GROUP_ARN}:*", access_log_format=ACCESS_LOG_FORMAT
        )
    )

    assert helpers.stage_update(CURRENT_STAGE, wanted) == {}


def test_purged_tags_keep_reserved_aws_tags():
    current = {"aws:cloudformation:stack-name": "x", "owner": "data", "project": "old"}

    assert helpers.expected_tags(current, {"project": "clickstream"}, purge_tags=True) == {
        "aws:cloudformation:stack-name": "x",
        "project": "clickstream",
    }


# --- The module's contract: argument_spec mirrors DOCUMENTATION ---------------------------------


def contract_from_docs(options: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "type": doc.get("type", "str"),
            "required": doc.get("required", False),
            "default": doc.get("default"),
            "choices": doc.get("choices"),
            "elements": doc.get("elements"),
            "aliases": doc.get("aliases"),
            "options": contract_from_docs(doc["suboptions"]) if "suboptions" in doc else None,
        }
        for name, doc in options.items()
    }


def contract_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "type": option.get("type", "str"),
            "required": option.get("required", False),
            "default": option.get("default"),
            "choices": option.get("choices"),
            "elements": option.get("elements"),
            "aliases": option.get("aliases"),
            "options": contract_from_spec(option["options"]) if "options" in option else None,
        }
        for name, option in spec.items()
    }


@pytest.fixture
def module_source(monkeypatch: pytest.MonkeyPatch):
    """The module's Python source, imported the way Ansible runs it: its module_utils appear
    under ansible.module_utils."""
    monkeypatch.setitem(sys.modules, "ansible.module_utils.apigatewayv2", helpers)
    spec = importlib.util.spec_from_file_location("apigatewayv2_http_api", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module is being executed.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_argument_spec_mirrors_documentation(module_source):
    from ansible_collections.amazon.aws.plugins.doc_fragments.tags import ModuleDocFragment

    documented = yaml.safe_load(module_source.DOCUMENTATION)["options"]
    documented |= yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]

    assert contract_from_spec(module_source.build_argument_spec()) == contract_from_docs(documented)


def test_examples_and_return_are_yaml(module_source):
    assert isinstance(yaml.safe_load(module_source.EXAMPLES), list)
    assert "api" in yaml.safe_load(module_source.RETURN)


# --- The module against moto, through ansible-playbook ------------------------------------------


def clickstream_api(**overrides: Any) -> dict[str, Any]:
    """The module options the platform uses, with some replaced."""
    options: dict[str, Any] = {
        "name": API_NAME,
        "state": "present",
        "cors": {
            "allow_origins": ["https://shop.example.com"],
            "allow_methods": ["POST", "OPTIONS"],
            "allow_headers": ["content-type"],
            "max_age": 3600,
        },
        "routes": [
            {
                "route_key": "POST /clickstream",
                "lambda_arn": INGEST_LAMBDA_ARN,
                "payload_format_version": "2.0",
                "timeout_ms": 10000,
            }
        ],
        "stage": {
            "name": "$default",
            "auto_deploy": True,
            "throttling_burst_limit": 200,
            "throttling_rate_limit": 100,
            "access_log_destination_arn": LOG_GROUP_ARN,
            "access_log_format": ACCESS_LOG_FORMAT,
        },
        "tags": {"project": "clickstream"},
    }
    return {**options, **overrides}


def stage_with(**settings: Any) -> dict[str, Any]:
    return {**clickstream_api()["stage"], **settings}


def route(route_key: str, lambda_arn: str = INGEST_LAMBDA_ARN, **settings: Any) -> dict:
    return {"route_key": route_key, "lambda_arn": lambda_arn, "timeout_ms": 10000, **settings}


def task(options: dict[str, Any], check_mode: bool = False, may_fail: bool = False) -> dict:
    return {
        "name": "Run apigatewayv2_http_api",
        "apigatewayv2_http_api": options,
        "check_mode": check_mode,
        "ignore_errors": may_fail,
    }


def run_tasks(tmp_path: Path, *tasks: dict[str, Any], diff: bool = False) -> list[dict]:
    """Run the tasks in one play on localhost; return each task's result.

    tests.fixtures.ansible.run_playbook runs it in the repository (ansible.cfg's library and
    module_utils paths apply) with this process's environment, which the aws fixture points at
    moto.
    """
    play = {
        "name": "Exercise apigatewayv2_http_api",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        # Interpreter discovery may pick a Python that is not installed (shared platform notes).
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": list(tasks),
    }
    playbook = tmp_path / f"playbook-{len(list(tmp_path.glob('playbook-*.yml')))}.yml"
    playbook.write_text(json.dumps([play], indent=2))  # JSON is YAML
    playbook_run = run_playbook(
        playbook, "-i", "localhost,", *(["--diff"] if diff else []),
        environment={}, temp_dir=tmp_path, timeout_seconds=120,
    )  # fmt: skip
    results = [task.result for task in playbook_run.task_results]
    for index, (ran, result) in enumerate(zip(tasks, results, strict=False)):
        if result.get("failed") and not ran["ignore_errors"]:
            pytest.fail(f"task {index} failed: {result.get('msg')}")
    assert len(results) == len(tasks), playbook_run.stderr
    return results


def apis(aws: MotoServer) -> list[dict[str, Any]]:
    return aws.client("apigatewayv2").get_apis()["Items"]


def only_api(aws: MotoServer) -> dict[str, Any]:
    (api,) = apis(aws)
    return api


def routes_and_integrations(aws: MotoServer, api_id: str) -> tuple[list[dict], list[dict]]:
    client = aws.client("apigatewayv2")
    routes = client.get_routes(ApiId=api_id)["Items"]
    integrations = client.get_integrations(ApiId=api_id)["Items"]
    return routes, integrations


def default_stage(aws: MotoServer, api_id: str) -> dict[str, Any]:
    stage = aws.client("apigatewayv2").get_stage(ApiId=api_id, StageName="$default")
    stage.pop("ResponseMetadata")
    return stage


def test_create_reports_changed_and_builds_the_api(aws: MotoServer, tmp_path: Path):
    (result,) = run_tasks(tmp_path, task(clickstream_api()))

    assert result["changed"] is True
    api = only_api(aws)
    assert result["api"]["api_id"] == api["ApiId"]
    assert result["api"]["api_endpoint"] == api["ApiEndpoint"]
    assert api["Name"] == API_NAME
    assert api["ProtocolType"] == "HTTP"
    assert api["Tags"] == {"project": "clickstream"}
    assert helpers.normalise_cors(api["CorsConfiguration"]) == {
        "AllowHeaders": ["content-type"],
        "AllowMethods": ["options", "post"],
        "AllowOrigins": ["https://shop.example.com"],
        "MaxAge": 3600,
    }


def test_create_adds_the_route_with_its_lambda_proxy_integration(aws: MotoServer, tmp_path):
    (result,) = run_tasks(tmp_path, task(clickstream_api()))

    routes, integrations = routes_and_integrations(aws, result["api"]["api_id"])
    (route_,) = routes
    (integration,) = integrations
    assert route_["RouteKey"] == "POST /clickstream"
    assert route_["Target"] == f"integrations/{integration['IntegrationId']}"
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["IntegrationUri"] == INGEST_LAMBDA_ARN
    assert integration["PayloadFormatVersion"] == "2.0"
    assert integration["TimeoutInMillis"] == 10000
    assert [r["route_key"] for r in result["api"]["routes"]] == ["POST /clickstream"]


def test_create_adds_the_stage_with_throttling_and_access_logs(aws: MotoServer, tmp_path):
    (result,) = run_tasks(tmp_path, task(clickstream_api()))

    stage = default_stage(aws, result["api"]["api_id"])
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 200
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == 100.0
    assert stage["AccessLogSettings"] == {
        "DestinationArn": LOG_GROUP_ARN,
        "Format": ACCESS_LOG_FORMAT,
    }
    assert result["api"]["stage"]["stage_name"] == "$default"


def test_second_run_with_the_same_options_changes_nothing(aws: MotoServer, tmp_path: Path):
    first, second = run_tasks(tmp_path, task(clickstream_api()), task(clickstream_api()))

    assert first["changed"] is True
    assert second["changed"] is False
    assert second["api"]["api_id"] == first["api"]["api_id"]
    assert len(apis(aws)) == 1


def test_changed_cors_updates_only_the_cors_configuration(aws: MotoServer, tmp_path: Path):
    new_cors = {**clickstream_api()["cors"], "allow_origins": ["https://m.shop.example.com"]}

    first, second = run_tasks(
        tmp_path, task(clickstream_api()), task(clickstream_api(cors=new_cors))
    )

    assert second["changed"] is True
    assert only_api(aws)["CorsConfiguration"]["AllowOrigins"] == ["https://m.shop.example.com"]
    for unchanged in ("routes", "integrations", "stage", "tags"):
        assert second["api"][unchanged] == first["api"][unchanged], unchanged


def test_empty_cors_removes_the_cors_configuration(aws: MotoServer, tmp_path: Path):
    _, removed, again = run_tasks(
        tmp_path,
        task(clickstream_api()),
        task(clickstream_api(cors={})),
        task(clickstream_api(cors={})),
    )

    assert (removed["changed"], again["changed"]) == (True, False)
    assert not only_api(aws).get("CorsConfiguration")


def test_changed_route_timeout_updates_its_integration_in_place(aws: MotoServer, tmp_path):
    faster = clickstream_api(routes=[route("POST /clickstream", timeout_ms=5000)])

    first, second = run_tasks(tmp_path, task(clickstream_api()), task(faster))

    assert second["changed"] is True
    routes, integrations = routes_and_integrations(aws, second["api"]["api_id"])
    (integration,) = integrations
    assert integration["TimeoutInMillis"] == 5000
    assert integration["IntegrationId"] == first["api"]["integrations"][0]["integration_id"]
    assert routes[0]["RouteId"] == first["api"]["routes"][0]["route_id"]
    for unchanged in ("cors_configuration", "stage", "tags"):
        assert second["api"][unchanged] == first["api"][unchanged], unchanged


def test_route_moved_to_another_lambda_invokes_that_lambda(aws: MotoServer, tmp_path):
    moved = clickstream_api(routes=[route("POST /clickstream", BACKFILL_LAMBDA_ARN)])

    _, second = run_tasks(tmp_path, task(clickstream_api()), task(moved))

    assert second["changed"] is True
    _, integrations = routes_and_integrations(aws, second["api"]["api_id"])
    assert [i["IntegrationUri"] for i in integrations] == [BACKFILL_LAMBDA_ARN]


@MOTO_HAS_NO_UPDATE_STAGE
def test_changed_throttling_updates_the_stage(aws: MotoServer, tmp_path: Path):
    slower = clickstream_api(stage=stage_with(throttling_rate_limit=50))

    first, second = run_tasks(tmp_path, task(clickstream_api()), task(slower, may_fail=True))

    assert second["changed"] is True, second.get("msg")
    stage = default_stage(aws, first["api"]["api_id"])
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": 200,
        "ThrottlingRateLimit": 50.0,
    }
    assert second["api"]["routes"] == first["api"]["routes"]


def test_unlisted_route_is_deleted_with_its_integration(aws: MotoServer, tmp_path: Path):
    two_routes = clickstream_api(
        routes=[route("POST /clickstream"), route("POST /backfill", BACKFILL_LAMBDA_ARN)]
    )

    _, purged, again = run_tasks(
        tmp_path, task(two_routes), task(clickstream_api()), task(clickstream_api())
    )

    assert (purged["changed"], again["changed"]) == (True, False)
    routes, integrations = routes_and_integrations(aws, purged["api"]["api_id"])
    assert [r["RouteKey"] for r in routes] == ["POST /clickstream"]
    assert [i["IntegrationUri"] for i in integrations] == [INGEST_LAMBDA_ARN]


def test_without_purge_routes_unlisted_routes_stay(aws: MotoServer, tmp_path: Path):
    two_routes = clickstream_api(
        routes=[route("POST /clickstream"), route("POST /backfill", BACKFILL_LAMBDA_ARN)]
    )

    _, kept = run_tasks(tmp_path, task(two_routes), task(clickstream_api(purge_routes=False)))

    assert kept["changed"] is False
    routes, integrations = routes_and_integrations(aws, kept["api"]["api_id"])
    assert sorted(r["RouteKey"] for r in routes) == ["POST /backfill", "POST /clickstream"]
    assert len(integrations) == 2


def test_tags_are_set_and_unlisted_tags_purged(aws: MotoServer, tmp_path: Path):
    first_tags = {"project": "clickstream", "owner": "data-team"}
    second_tags = {"project": "clickstream", "cost-centre": "analytics"}

    run_tasks(
        tmp_path,
        task(clickstream_api(tags=first_tags)),
        task(clickstream_api(tags=second_tags)),
    )

    assert only_api(aws)["Tags"] == second_tags


def test_check_mode_on_a_fresh_account_reports_changed_and_creates_nothing(aws, tmp_path):
    (result,) = run_tasks(tmp_path, task(clickstream_api(), check_mode=True))

    assert result["changed"] is True
    assert apis(aws) == []


def test_check_mode_in_sync_reports_unchanged(aws: MotoServer, tmp_path: Path):
    _, checked = run_tasks(
        tmp_path, task(clickstream_api()), task(clickstream_api(), check_mode=True)
    )

    assert checked["changed"] is False


def test_check_mode_reports_changes_without_making_them(aws: MotoServer, tmp_path: Path):
    changed_everything = clickstream_api(
        cors={**clickstream_api()["cors"], "max_age": 60},
        routes=[route("POST /clickstream", timeout_ms=5000), route("POST /backfill")],
        stage=stage_with(throttling_burst_limit=50),
        tags={"project": "other"},
    )
    (created,) = run_tasks(tmp_path, task(clickstream_api()))
    api_id = created["api"]["api_id"]
    before = (only_api(aws), routes_and_integrations(aws, api_id), default_stage(aws, api_id))

    (checked,) = run_tasks(tmp_path, task(changed_everything, check_mode=True))

    assert checked["changed"] is True
    after = (only_api(aws), routes_and_integrations(aws, api_id), default_stage(aws, api_id))
    assert after == before


def test_check_mode_diff_shows_the_stage_change(aws: MotoServer, tmp_path: Path):
    slower = clickstream_api(stage=stage_with(throttling_rate_limit=50))

    _, checked = run_tasks(
        tmp_path, task(clickstream_api()), task(slower, check_mode=True), diff=True
    )

    assert checked["changed"] is True
    assert checked["diff"]["before"]["stage"]["throttling_rate_limit"] == 100.0
    assert checked["diff"]["after"]["stage"]["throttling_rate_limit"] == 50.0
    assert checked["diff"]["after"]["routes"] == checked["diff"]["before"]["routes"]


def test_state_absent_deletes_the_api_then_reports_unchanged(aws: MotoServer, tmp_path: Path):
    absent = {"name": API_NAME, "state": "absent"}

    _, deleted, again = run_tasks(tmp_path, task(clickstream_api()), task(absent), task(absent))

    assert (deleted["changed"], again["changed"]) == (True, False)
    assert apis(aws) == []


def test_check_mode_absent_reports_changed_and_keeps_the_api(aws: MotoServer, tmp_path: Path):
    absent = {"name": API_NAME, "state": "absent"}

    _, checked = run_tasks(tmp_path, task(clickstream_api()), task(absent, check_mode=True))

    assert checked["changed"] is True
    assert len(apis(aws)) == 1


def test_several_apis_with_the_name_fail_naming_their_ids(aws: MotoServer, tmp_path: Path):
    client = aws.client("apigatewayv2")
    api_ids = sorted(client.create_api(Name=API_NAME, ProtocolType="HTTP")["ApiId"] for _ in "ab")

    (result,) = run_tasks(tmp_path, task(clickstream_api(), may_fail=True))

    assert result["failed"] is True
    assert f"2 HTTP APIs are named {API_NAME}" in result["msg"]
    assert result["api_ids"] == api_ids


def test_duplicate_route_keys_fail_before_any_change(aws: MotoServer, tmp_path: Path):
    twice = clickstream_api(routes=[route("POST /clickstream"), route("POST /clickstream")])

    (result,) = run_tasks(tmp_path, task(twice, may_fail=True))

    assert result["failed"] is True
    assert "POST /clickstream" in result["msg"]
    assert apis(aws) == []

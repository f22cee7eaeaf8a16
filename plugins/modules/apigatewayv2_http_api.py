# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: an API Gateway v2 HTTP API with Lambda proxy routes, CORS and one stage."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: apigatewayv2_http_api
short_description: Manage an API Gateway v2 HTTP API, its Lambda routes, CORS and stage
description:
  - Create, update or delete an Amazon API Gateway v2 HTTP API identified by its O(name).
  - Manages the API's CORS configuration, its routes (each a Lambda proxy integration), one stage
    (throttling, access logs, auto-deploy) and the API's tags.
  - Reads the API first, compares it with the options and changes only what differs, so a second
    run with the same options reports no change. Check mode and diff mode are supported.
  - Options that are not set are left as they are on the API.
notes:
  - API names are not unique in API Gateway. The module fails, naming the ids, when more than one
    HTTP API has O(name).
  - A route that alone uses its Lambda integration has that integration updated in place when its
    settings change. A route that shares its integration with other routes is moved to a new (or an
    identical existing) integration instead, so the other routes keep theirs.
  - An integration that a deleted or re-targeted route used, and that no route uses afterwards, is
    deleted. Integrations that no route used before the run are left alone.
  - Only the stage named by O(stage.name) is managed; other stages are left alone. The module
    cannot yet remove a stage's access log settings.
  - The Lambda functions also need a resource policy that lets API Gateway invoke them, for example
    with M(amazon.aws.lambda_policy); this module does not manage it.
  - For details of the API see
    U(https://docs.aws.amazon.com/apigatewayv2/latest/api-reference/api-reference.html).
author:
  - Clickstream platform maintainers
options:
  name:
    description:
      - The name of the HTTP API. The module finds the API by this name.
    type: str
    required: true
  state:
    description:
      - Whether the API should exist. V(absent) deletes the API with its routes, integrations and
        stages.
    type: str
    choices: ["present", "absent"]
    default: present
  description:
    description:
      - The description of the API.
    type: str
  cors:
    description:
      - The API's whole CORS configuration. Suboptions that are not set are not part of it.
      - Header names, methods and origins are compared without regard to case or order, as the
        service treats them (it stores header names in lower case).
      - Set O(cors={}) to remove the CORS configuration. Leave O(cors) unset to leave it alone.
    type: dict
    suboptions:
      allow_origins:
        description: The origins allowed to call the API, for example C(https://shop.example.com).
        type: list
        elements: str
      allow_methods:
        description: The HTTP methods allowed in cross-origin requests.
        type: list
        elements: str
      allow_headers:
        description: The request headers allowed in cross-origin requests.
        type: list
        elements: str
      expose_headers:
        description: The response headers that browsers may expose to scripts.
        type: list
        elements: str
      max_age:
        description: How many seconds browsers may cache a preflight response.
        type: int
      allow_credentials:
        description: Whether cross-origin requests may include credentials (cookies, authorization).
        type: bool
  routes:
    description:
      - The routes of the API, each proxied to a Lambda function.
      - Leave unset to leave the routes alone. With O(purge_routes=true), V([]) deletes every route.
    type: list
    elements: dict
    suboptions:
      route_key:
        description:
          - The route key, a method and a path such as C(POST /clickstream), or C($default).
          - Route keys must be unique within O(routes).
        type: str
        required: true
      lambda_arn:
        description:
          - The ARN of the Lambda function the route invokes through an C(AWS_PROXY) integration.
        type: str
        required: true
      payload_format_version:
        description: The format of the event the function receives.
        type: str
        choices: ["1.0", "2.0"]
        default: "2.0"
      timeout_ms:
        description: The integration timeout in milliseconds, between 50 and 30000.
        type: int
        default: 30000
  purge_routes:
    description:
      - If V(true) and O(routes) is set, routes of the API that O(routes) does not list are deleted.
      - If V(false), such routes, and the integrations they use, are left alone.
      - Has no effect when O(routes) is not set.
    type: bool
    default: true
  stage:
    description:
      - One stage of the API. Suboptions that are not set are left as they are on the stage (or at
        the service's default when the stage is created).
      - Leave unset to leave the API's stages alone.
    type: dict
    suboptions:
      name:
        description: The stage name. C($default) serves the API at its base URL.
        type: str
        default: $default
      auto_deploy:
        description: Whether every change to the API is deployed to this stage automatically.
        type: bool
      throttling_burst_limit:
        description: The default burst limit (requests) for every route of the stage.
        type: int
      throttling_rate_limit:
        description: The default steady-state rate limit (requests per second) for every route.
        type: float
      detailed_metrics_enabled:
        description: Whether per-route CloudWatch metrics are enabled.
        type: bool
      access_log_destination_arn:
        description:
          - The ARN of the CloudWatch Logs log group that receives access logs.
          - A trailing C(:*), as in the C(arn) that M(amazon.aws.cloudwatchlogs_log_group) returns,
            is dropped, since the stage stores the ARN without it.
          - Requires O(stage.access_log_format).
        type: str
      access_log_format:
        description:
          - One access log line, with C($context) variables, for example a JSON object.
          - Requires O(stage.access_log_destination_arn).
        type: str
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.tags
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Ensure the clickstream HTTP API exists
  apigatewayv2_http_api:
    name: clickstream-prod-http-api
    state: present
    cors:
      allow_origins: ["https://shop.example.com"]
      allow_methods: [POST, OPTIONS]
      allow_headers: [content-type]
      max_age: 3600
    routes:
      - route_key: POST /clickstream
        lambda_arn: "{{ ingest_lambda_arn }}"
        payload_format_version: "2.0"
        timeout_ms: 10000
    stage:
      name: $default
      auto_deploy: true
      throttling_burst_limit: 200
      throttling_rate_limit: 100
      access_log_destination_arn: "{{ api_log_group_arn }}"
      access_log_format: '{"requestId":"$context.requestId","status":"$context.status"}'
    tags:
      project: clickstream
  register: clickstream_api

- name: Add a route without touching the others
  apigatewayv2_http_api:
    name: clickstream-prod-http-api
    purge_routes: false
    routes:
      - route_key: GET /health
        lambda_arn: "{{ health_lambda_arn }}"

- name: Remove the CORS configuration
  apigatewayv2_http_api:
    name: clickstream-prod-http-api
    cors: {}

- name: Delete the API
  apigatewayv2_http_api:
    name: clickstream-prod-http-api
    state: absent
"""

RETURN = r"""
api:
  description:
    - The API after the run. In check mode, the API as it is (empty if it does not exist yet).
    - Empty when O(state=absent).
  returned: always
  type: complex
  contains:
    api_id:
      description: The id of the API.
      returned: when the API exists
      type: str
      sample: a1b2c3d4e5
    api_endpoint:
      description: The base URL of the API.
      returned: when the API exists
      type: str
      sample: https://a1b2c3d4e5.execute-api.ap-southeast-1.amazonaws.com
    arn:
      description: The ARN of the API, as tagging calls take it.
      returned: when the API exists
      type: str
      sample: arn:aws:apigateway:ap-southeast-1::/apis/a1b2c3d4e5
    name:
      description: The name of the API.
      returned: when the API exists
      type: str
      sample: clickstream-prod-http-api
    description:
      description: The description of the API.
      returned: when the API has one
      type: str
    protocol_type:
      description: Always C(HTTP).
      returned: when the API exists
      type: str
      sample: HTTP
    cors_configuration:
      description: The CORS configuration, with the keys of O(cors).
      returned: when the API has one
      type: dict
      sample: {"allow_origins": ["https://shop.example.com"], "max_age": 3600}
    tags:
      description: The tags of the API.
      returned: when the API exists
      type: dict
      sample: {"project": "clickstream"}
    routes:
      description: Every route of the API.
      returned: when the API exists
      type: list
      elements: dict
      sample:
        - route_id: r1a2b3c
          route_key: POST /clickstream
          target: integrations/i1a2b3c
    integrations:
      description: Every integration of the API.
      returned: when the API exists
      type: list
      elements: dict
      sample:
        - integration_id: i1a2b3c
          integration_type: AWS_PROXY
          integration_uri: >-
            arn:aws:lambda:ap-southeast-1:123456789012:function:clickstream-prod-ingest
          payload_format_version: "2.0"
          timeout_in_millis: 10000
    stage:
      description:
        - The stage named by O(stage.name).
        - Empty when O(stage) is not set or the stage does not exist.
      returned: when the API exists
      type: dict
      sample:
        stage_name: $default
        auto_deploy: true
        default_route_settings: {"throttling_burst_limit": 200, "throttling_rate_limit": 100.0}
        access_log_settings:
          destination_arn: >-
            arn:aws:logs:ap-southeast-1:123456789012:log-group:/aws/apigateway/clickstream-prod-http-api
          format: '{"requestId":"$context.requestId"}'
"""

from dataclasses import dataclass
from typing import Any

try:
    import botocore
except ImportError:
    botocore = None  # AnsibleAWSModule reports a missing boto3/botocore itself

from ansible.module_utils.apigatewayv2 import (
    INTEGRATION_TARGET_PREFIX,
    IntegrationTarget,
    RoutePlan,
    api_arn,
    cors_request,
    cors_view,
    desired_routes,
    duplicate_route_keys,
    expected_routes_view,
    expected_stage_view,
    expected_tags,
    find_http_apis,
    get_stage,
    list_integrations,
    list_routes,
    normalise_cors,
    plan_routes,
    routes_view,
    stage_settings,
    stage_update,
    stage_view,
)
from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import compare_aws_tags


def build_argument_spec() -> dict[str, Any]:
    """The module's options, mirroring DOCUMENTATION (a unit test holds them together)."""
    return {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "description": {"type": "str"},
        "cors": {
            "type": "dict",
            "options": {
                "allow_origins": {"type": "list", "elements": "str"},
                "allow_methods": {"type": "list", "elements": "str"},
                "allow_headers": {"type": "list", "elements": "str"},
                "expose_headers": {"type": "list", "elements": "str"},
                "max_age": {"type": "int"},
                "allow_credentials": {"type": "bool"},
            },
        },
        "routes": {
            "type": "list",
            "elements": "dict",
            "options": {
                "route_key": {"type": "str", "required": True},
                "lambda_arn": {"type": "str", "required": True},
                "payload_format_version": {
                    "type": "str",
                    "choices": ["1.0", "2.0"],
                    "default": "2.0",
                },
                "timeout_ms": {"type": "int", "default": 30000},
            },
        },
        "purge_routes": {"type": "bool", "default": True},
        "stage": {
            "type": "dict",
            "options": {
                "name": {"type": "str", "default": "$default"},
                "auto_deploy": {"type": "bool"},
                "throttling_burst_limit": {"type": "int"},
                "throttling_rate_limit": {"type": "float"},
                "detailed_metrics_enabled": {"type": "bool"},
                "access_log_destination_arn": {"type": "str"},
                "access_log_format": {"type": "str"},
            },
            "required_together": [["access_log_destination_arn", "access_log_format"]],
        },
        "tags": {"type": "dict", "aliases": ["resource_tags"]},
        "purge_tags": {"type": "bool", "default": True},
    }


@dataclass
class ApiState:
    """An HTTP API as read from the service: the API, its routes, integrations and managed stage."""

    api: dict[str, Any]
    routes: list[dict[str, Any]]
    integrations: list[dict[str, Any]]
    stage: dict[str, Any] | None


def aws_call(module, what: str, method, **kwargs):
    """Call a client method with retries; on an AWS error fail with 'Failed to <what>'."""
    try:
        return method(aws_retry=True, **kwargs)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Failed to {what}")


def aws_read(module, what: str, reader, *args):
    """Run a module_utils reader; on an AWS error fail with 'Failed to <what>'."""
    try:
        return reader(*args)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Failed to {what}")


def find_api(module, client, name: str) -> dict[str, Any] | None:
    apis = aws_read(module, f"list HTTP APIs to find {name}", find_http_apis, client, name)
    if len(apis) > 1:
        api_ids = sorted(api["ApiId"] for api in apis)
        module.fail_json(
            msg=(
                f"{len(apis)} HTTP APIs are named {name} ({', '.join(api_ids)}); this module finds "
                "an API by its name, so delete or rename all but one of them"
            ),
            api_ids=api_ids,
        )
    return apis[0] if apis else None


def describe(module, client, api: dict[str, Any], stage_name: str | None) -> ApiState:
    api_id = api["ApiId"]
    routes = aws_read(module, f"list the routes of HTTP API {api_id}", list_routes, client, api_id)
    integrations = aws_read(
        module, f"list the integrations of HTTP API {api_id}", list_integrations, client, api_id
    )
    stage = None
    if stage_name is not None:
        stage = aws_read(
            module,
            f"read stage {stage_name} of HTTP API {api_id}",
            get_stage,
            client,
            api_id,
            stage_name,
        )
    return ApiState(api=api, routes=routes, integrations=integrations, stage=stage)


def reread(module, client, api_id: str, stage_name: str | None) -> ApiState:
    api = aws_call(module, f"read HTTP API {api_id}", client.get_api, ApiId=api_id)
    api.pop("ResponseMetadata", None)
    return describe(module, client, api, stage_name)


# --- Views for diff mode ----------------------------------------------------------------------


def state_view(state: ApiState) -> dict[str, Any]:
    """The API as the module's options describe it."""
    return {
        "name": state.api["Name"],
        "description": state.api.get("Description") or "",
        "cors": cors_view(state.api.get("CorsConfiguration")),
        "routes": routes_view(state.routes, state.integrations),
        "stage": stage_view(state.stage),
        "tags": dict(state.api.get("Tags") or {}),
    }


def expected_view(params: dict[str, Any], current: ApiState | None) -> dict[str, Any]:
    """The API as it will be once the options are applied (for check mode's diff)."""
    before = state_view(current) if current else {"routes": {}, "tags": {}}
    view = {
        "name": params["name"],
        "description": (
            params["description"]
            if params["description"] is not None
            else before.get("description", "")
        ),
        "cors": (
            cors_view(cors_request(params["cors"]))
            if params["cors"] is not None
            else before.get("cors")
        ),
        "routes": before["routes"],
        "stage": before.get("stage"),
        "tags": before["tags"],
    }
    if params["routes"] is not None:
        wanted = desired_routes(params["routes"])
        view["routes"] = expected_routes_view(before["routes"], wanted, params["purge_routes"])
    if params["stage"] is not None:
        view["stage"] = expected_stage_view(current.stage if current else None, params["stage"])
    if params["tags"] is not None:
        view["tags"] = expected_tags(before["tags"], params["tags"], params["purge_tags"])
    return view


# --- Results ----------------------------------------------------------------------------------


def format_api(client, region: str, state: ApiState | None) -> dict[str, Any]:
    if state is None:
        return {}
    api = camel_dict_to_snake_dict(state.api, ignore_list=["Tags"])
    api["arn"] = api_arn(client.meta.partition, region, state.api["ApiId"])
    api["routes"] = [
        camel_dict_to_snake_dict(route, ignore_list=["RequestModels", "RequestParameters"])
        for route in state.routes
    ]
    api["integrations"] = [
        camel_dict_to_snake_dict(
            integration,
            ignore_list=["RequestParameters", "RequestTemplates", "ResponseParameters"],
        )
        for integration in state.integrations
    ]
    api["stage"] = (
        camel_dict_to_snake_dict(
            state.stage, ignore_list=["Tags", "StageVariables", "RouteSettings"]
        )
        if state.stage
        else {}
    )
    return api


# --- Changes: each returns whether something differs, and writes only outside check mode -------


def ensure_api_settings(module, client, api: dict[str, Any]) -> bool:
    params = module.params
    api_id = api["ApiId"]
    update: dict[str, Any] = {}
    remove_cors = False
    if (
        params["description"] is not None
        and (api.get("Description") or "") != params["description"]
    ):
        update["Description"] = params["description"]
    if params["cors"] is not None:
        wanted_cors = cors_request(params["cors"])
        if normalise_cors(wanted_cors) != normalise_cors(api.get("CorsConfiguration")):
            if wanted_cors is None:
                remove_cors = True
            else:
                update["CorsConfiguration"] = wanted_cors
    if not update and not remove_cors:
        return False
    if module.check_mode:
        return True
    if update:
        aws_call(module, f"update HTTP API {api_id}", client.update_api, ApiId=api_id, **update)
    if remove_cors:
        aws_call(
            module,
            f"delete the CORS configuration of HTTP API {api_id}",
            client.delete_cors_configuration,
            ApiId=api_id,
        )
    return True


def ensure_tags(module, client, api: dict[str, Any]) -> bool:
    params = module.params
    if params["tags"] is None:
        return False
    to_set, to_unset = compare_aws_tags(api.get("Tags") or {}, params["tags"], params["purge_tags"])
    if not to_set and not to_unset:
        return False
    if module.check_mode:
        return True
    arn = api_arn(client.meta.partition, module.region, api["ApiId"])
    if to_unset:
        aws_call(
            module,
            f"remove tags from HTTP API {api['ApiId']}",
            client.untag_resource,
            ResourceArn=arn,
            TagKeys=to_unset,
        )
    if to_set:
        aws_call(
            module,
            f"tag HTTP API {api['ApiId']}",
            client.tag_resource,
            ResourceArn=arn,
            Tags={key: str(value) for key, value in to_set.items()},
        )
    return True


def ensure_routes(module, client, state: ApiState) -> bool:
    params = module.params
    if params["routes"] is None:
        return False
    plan = plan_routes(
        state.routes, state.integrations, desired_routes(params["routes"]), params["purge_routes"]
    )
    if not plan.changed:
        return False
    if not module.check_mode:
        apply_route_plan(module, client, state.api["ApiId"], plan)
    return True


def apply_route_plan(module, client, api_id: str, plan: RoutePlan) -> None:
    """Apply a route plan in an order the service accepts: an integration is created before a
    route targets it, and deleted only once no route targets it any more."""
    created_ids: list[str] = []
    for settings in plan.create_integrations:
        integration = aws_call(
            module,
            f"create an integration with {settings.lambda_arn} on HTTP API {api_id}",
            client.create_integration,
            ApiId=api_id,
            **settings.request(),
        )
        created_ids.append(integration["IntegrationId"])

    def target(ref: IntegrationTarget) -> str:
        integration_id = (
            ref.integration_id if ref.new_integration is None else created_ids[ref.new_integration]
        )
        return INTEGRATION_TARGET_PREFIX + integration_id

    for integration_id, settings in plan.update_integrations.items():
        aws_call(
            module,
            f"update integration {integration_id} of HTTP API {api_id}",
            client.update_integration,
            ApiId=api_id,
            IntegrationId=integration_id,
            **settings.request(),
        )
    for route_key, ref in plan.create_routes:
        aws_call(
            module,
            f"create route {route_key} on HTTP API {api_id}",
            client.create_route,
            ApiId=api_id,
            RouteKey=route_key,
            Target=target(ref),
        )
    for route_id, route_key, ref in plan.retarget_routes:
        aws_call(
            module,
            f"point route {route_key} of HTTP API {api_id} at a new integration",
            client.update_route,
            ApiId=api_id,
            RouteId=route_id,
            Target=target(ref),
        )
    for route_id, route_key in plan.delete_routes:
        aws_call(
            module,
            f"delete route {route_key} of HTTP API {api_id}",
            client.delete_route,
            ApiId=api_id,
            RouteId=route_id,
        )
    for integration_id in plan.delete_integrations:
        aws_call(
            module,
            f"delete unused integration {integration_id} of HTTP API {api_id}",
            client.delete_integration,
            ApiId=api_id,
            IntegrationId=integration_id,
        )


def ensure_stage(module, client, state: ApiState) -> bool:
    stage_option = module.params["stage"]
    if stage_option is None:
        return False
    api_id = state.api["ApiId"]
    stage_name = stage_option["name"]
    settings = stage_settings(stage_option)
    if state.stage is None:
        if not module.check_mode:
            aws_call(
                module,
                f"create stage {stage_name} of HTTP API {api_id}",
                client.create_stage,
                ApiId=api_id,
                StageName=stage_name,
                **settings,
            )
        return True
    update = stage_update(state.stage, settings)
    if not update:
        return False
    if not module.check_mode:
        aws_call(
            module,
            f"update stage {stage_name} of HTTP API {api_id}",
            client.update_stage,
            ApiId=api_id,
            StageName=stage_name,
            **update,
        )
    return True


# --- States -----------------------------------------------------------------------------------


def ensure_present(module, client) -> None:
    params = module.params
    name = params["name"]
    stage_name = params["stage"]["name"] if params["stage"] else None
    if params["routes"] is not None:
        duplicates = duplicate_route_keys(desired_routes(params["routes"]))
        if duplicates:
            module.fail_json(msg=f"routes lists these route keys more than once: {duplicates}")

    api = find_api(module, client, name)
    current = describe(module, client, api, stage_name) if api else None
    diff = {
        "before": state_view(current) if current else {},
        "after": expected_view(params, current),
    }

    changed = False
    if current is None:
        changed = True
        if module.check_mode:
            module.exit_json(changed=True, api={}, diff=diff)
        request: dict[str, Any] = {"Name": name, "ProtocolType": "HTTP"}
        if params["description"] is not None:
            request["Description"] = params["description"]
        if params["cors"] is not None and cors_request(params["cors"]) is not None:
            request["CorsConfiguration"] = cors_request(params["cors"])
        if params["tags"]:
            request["Tags"] = {key: str(value) for key, value in params["tags"].items()}
        api = aws_call(module, f"create HTTP API {name}", client.create_api, **request)
        api.pop("ResponseMetadata", None)
        current = ApiState(api=api, routes=[], integrations=[], stage=None)

    changed |= ensure_api_settings(module, client, current.api)
    changed |= ensure_tags(module, client, current.api)
    changed |= ensure_routes(module, client, current)
    changed |= ensure_stage(module, client, current)

    if changed and not module.check_mode:
        current = reread(module, client, current.api["ApiId"], stage_name)
        diff["after"] = state_view(current)
    module.exit_json(changed=changed, api=format_api(client, module.region, current), diff=diff)


def ensure_absent(module, client) -> None:
    api = find_api(module, client, module.params["name"])
    if api is None:
        module.exit_json(changed=False, api={}, diff={"before": {}, "after": {}})
    stage_name = module.params["stage"]["name"] if module.params["stage"] else None
    diff = {"before": state_view(describe(module, client, api, stage_name)), "after": {}}
    if not module.check_mode:
        aws_call(module, f"delete HTTP API {api['ApiId']}", client.delete_api, ApiId=api["ApiId"])
    module.exit_json(changed=True, api={}, diff=diff)


def main() -> None:
    module = AnsibleAWSModule(argument_spec=build_argument_spec(), supports_check_mode=True)
    client = module.client("apigatewayv2", retry_decorator=AWSRetry.jittered_backoff())
    if module.params["state"] == "present":
        ensure_present(module, client)
    else:
        ensure_absent(module, client)


if __name__ == "__main__":
    main()

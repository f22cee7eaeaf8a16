"""Helpers for the apigatewayv2_http_api module.

Most of this file is pure: it turns the module's options into API Gateway v2 requests, puts what
the service returns into a comparable form, and works out the smallest set of changes. None of
that touches boto3, so it is unit-tested without AWS. The few readers at the end take a client
and let botocore errors propagate: the module turns them into fail_json_aws messages.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

# HTTP APIs call a Lambda with a 30 s integration timeout unless told otherwise.
DEFAULT_INTEGRATION_TIMEOUT_MS = 30000
INTEGRATION_TARGET_PREFIX = "integrations/"

# IntegrationUri may be the function ARN or the older "invocations" URI that wraps it;
# both name the same function, so they compare equal.
_LAMBDA_INVOCATION_URI = re.compile(
    r"^arn:[^:]+:apigateway:[^:]+:lambda:path/[^/]+/functions/(?P<function_arn>.+)/invocations$"
)

# The module's cors suboptions and the CorsConfiguration fields they set.
CORS_FIELDS = {
    "allow_origins": "AllowOrigins",
    "allow_methods": "AllowMethods",
    "allow_headers": "AllowHeaders",
    "expose_headers": "ExposeHeaders",
    "max_age": "MaxAge",
    "allow_credentials": "AllowCredentials",
}
_CORS_LIST_FIELDS = ("AllowOrigins", "AllowMethods", "AllowHeaders", "ExposeHeaders")

# The module's stage suboptions that live in the stage's DefaultRouteSettings.
STAGE_ROUTE_SETTINGS = {
    "throttling_burst_limit": "ThrottlingBurstLimit",
    "throttling_rate_limit": "ThrottlingRateLimit",
    "detailed_metrics_enabled": "DetailedMetricsEnabled",
}


# --- CORS -------------------------------------------------------------------------------------


def cors_request(cors_option: dict[str, Any]) -> dict[str, Any] | None:
    """The CorsConfiguration the cors option asks for, or None when it asks for no CORS at all."""
    request = {
        api_field: cors_option[option]
        for option, api_field in CORS_FIELDS.items()
        if cors_option.get(option) is not None
    }
    return request or None


def normalise_cors(cors: dict[str, Any] | None) -> dict[str, Any]:
    """CorsConfiguration in a form where equal configurations compare equal.

    The service stores header lists lower-cased, and every CORS list is case-insensitive and
    unordered (origins, methods and header names all are), so lists become sorted lower-case
    lists. Unset, empty and default values (no credentials) are dropped.
    """
    normalised: dict[str, Any] = {}
    for api_field, value in (cors or {}).items():
        if value is None or value == []:
            continue
        if api_field in _CORS_LIST_FIELDS:
            normalised[api_field] = sorted({str(item).lower() for item in value})
        elif api_field == "AllowCredentials":
            if value:
                normalised[api_field] = True
        else:
            normalised[api_field] = value
    return normalised


def cors_view(cors: dict[str, Any] | None) -> dict[str, Any] | None:
    """CORS as the module's options name it, for diffs: None when there is no CORS."""
    normalised = normalise_cors(cors)
    if not normalised:
        return None
    option_names = {api_field: option for option, api_field in CORS_FIELDS.items()}
    return {option_names[api_field]: value for api_field, value in normalised.items()}


# --- Routes and their Lambda proxy integrations -----------------------------------------------


@dataclass(frozen=True)
class LambdaIntegration:
    """What the module manages about a route's integration: a Lambda proxy and its settings."""

    lambda_arn: str
    payload_format_version: str
    timeout_ms: int

    def request(self) -> dict[str, Any]:
        """The CreateIntegration / UpdateIntegration fields for these settings."""
        return {
            "IntegrationType": "AWS_PROXY",
            # Lambda proxy integrations are always invoked with POST, whatever the route's method.
            "IntegrationMethod": "POST",
            "IntegrationUri": self.lambda_arn,
            "PayloadFormatVersion": self.payload_format_version,
            "TimeoutInMillis": self.timeout_ms,
        }

    def view(self) -> dict[str, Any]:
        return {
            "lambda_arn": self.lambda_arn,
            "payload_format_version": self.payload_format_version,
            "timeout_ms": self.timeout_ms,
        }


@dataclass(frozen=True)
class DesiredRoute:
    route_key: str
    integration: LambdaIntegration


def lambda_function_arn(integration_uri: str) -> str:
    """The Lambda function ARN named by an integration URI (either of its two spellings)."""
    match = _LAMBDA_INVOCATION_URI.match(integration_uri)
    return match.group("function_arn") if match else integration_uri


def desired_routes(routes_option: list[dict[str, Any]]) -> list[DesiredRoute]:
    return [
        DesiredRoute(
            route_key=route["route_key"],
            integration=LambdaIntegration(
                lambda_arn=lambda_function_arn(route["lambda_arn"]),
                payload_format_version=route["payload_format_version"],
                timeout_ms=route["timeout_ms"],
            ),
        )
        for route in routes_option
    ]


def duplicate_route_keys(routes: list[DesiredRoute]) -> list[str]:
    counts = Counter(route.route_key for route in routes)
    return sorted(key for key, count in counts.items() if count > 1)


def integration_from_api(integration: dict[str, Any]) -> LambdaIntegration | None:
    """The Lambda proxy settings of an existing integration; None for any other kind."""
    if integration.get("IntegrationType") != "AWS_PROXY" or integration.get("IntegrationSubtype"):
        return None
    return LambdaIntegration(
        lambda_arn=lambda_function_arn(integration.get("IntegrationUri") or ""),
        payload_format_version=integration.get("PayloadFormatVersion") or "",
        timeout_ms=int(integration.get("TimeoutInMillis") or DEFAULT_INTEGRATION_TIMEOUT_MS),
    )


def route_integration_id(route: dict[str, Any]) -> str | None:
    """The id of the integration a route targets, or None when it targets no integration."""
    target = route.get("Target") or ""
    if target.startswith(INTEGRATION_TARGET_PREFIX):
        return target[len(INTEGRATION_TARGET_PREFIX) :]
    return None


@dataclass(frozen=True)
class IntegrationTarget:
    """A route's target: an existing integration, or one that this run creates first."""

    integration_id: str | None = None
    new_integration: int | None = None  # index into RoutePlan.create_integrations


@dataclass
class RoutePlan:
    """The changes that bring an API's routes to the desired list, in the order to apply them."""

    create_integrations: list[LambdaIntegration] = field(default_factory=list)
    update_integrations: dict[str, LambdaIntegration] = field(default_factory=dict)
    create_routes: list[tuple[str, IntegrationTarget]] = field(default_factory=list)
    # (route id, route key, new target)
    retarget_routes: list[tuple[str, str, IntegrationTarget]] = field(default_factory=list)
    # (route id, route key)
    delete_routes: list[tuple[str, str]] = field(default_factory=list)
    delete_integrations: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(
            (
                self.create_integrations,
                self.update_integrations,
                self.create_routes,
                self.retarget_routes,
                self.delete_routes,
                self.delete_integrations,
            )
        )


def plan_routes(
    current_routes: list[dict[str, Any]],
    current_integrations: list[dict[str, Any]],
    wanted: list[DesiredRoute],
    purge_routes: bool,
) -> RoutePlan:
    """The fewest changes that give every wanted route a Lambda integration with its settings.

    - A route whose integration already has the wanted settings is left alone.
    - A route that alone uses its Lambda integration gets that integration updated in place,
      so the integration keeps its id.
    - Otherwise the route is pointed at an integration that already has the wanted settings and
      is not changing in this run, or at a new one.
    - With purge_routes, routes not wanted are deleted. Integrations that a route used before
      and that no route uses afterwards are deleted; integrations no route used before are not
      ours to judge and stay.
    """
    integrations = {
        integration["IntegrationId"]: integration_from_api(integration)
        for integration in current_integrations
    }
    routes_by_key = {route["RouteKey"]: route for route in current_routes}
    target_of = {route["RouteKey"]: route_integration_id(route) for route in current_routes}
    routes_per_integration = Counter(i for i in target_of.values() if i is not None)
    wanted_keys = {route.route_key for route in wanted}

    in_sync = {
        route.route_key
        for route in wanted
        if route.route_key in routes_by_key
        and integrations.get(target_of[route.route_key]) == route.integration
    }
    untouched_keys = set(in_sync)
    if not purge_routes:
        untouched_keys |= set(routes_by_key) - wanted_keys
    # Integrations that routes left as they are keep using: their settings must not change.
    pinned = {target_of[key] for key in untouched_keys if target_of[key] is not None}
    reusable: dict[LambdaIntegration, IntegrationTarget] = {}
    for integration_id in sorted(pinned):
        settings = integrations.get(integration_id)
        if settings is not None:
            reusable.setdefault(settings, IntegrationTarget(integration_id=integration_id))

    plan = RoutePlan()
    final_target: dict[str, IntegrationTarget] = {
        key: IntegrationTarget(integration_id=target_of[key]) for key in untouched_keys
    }
    for route in wanted:
        if route.route_key in in_sync:
            continue
        existing = routes_by_key.get(route.route_key)
        current_id = target_of.get(route.route_key)
        if route.integration in reusable:
            target = reusable[route.integration]
        elif (
            existing is not None
            and current_id is not None
            and current_id not in pinned
            and routes_per_integration[current_id] == 1
            and integrations.get(current_id) is not None
        ):
            plan.update_integrations[current_id] = route.integration
            target = IntegrationTarget(integration_id=current_id)
            pinned.add(current_id)
            reusable[route.integration] = target
        else:
            plan.create_integrations.append(route.integration)
            target = IntegrationTarget(new_integration=len(plan.create_integrations) - 1)
            reusable[route.integration] = target
        final_target[route.route_key] = target
        if existing is None:
            plan.create_routes.append((route.route_key, target))
        elif target.integration_id != current_id:
            plan.retarget_routes.append((existing["RouteId"], route.route_key, target))

    if purge_routes:
        plan.delete_routes = [
            (route["RouteId"], route["RouteKey"])
            for route in current_routes
            if route["RouteKey"] not in wanted_keys
        ]
    used_after = {t.integration_id for t in final_target.values() if t.integration_id is not None}
    plan.delete_integrations = sorted(
        integration_id
        for integration_id in routes_per_integration
        if integration_id not in used_after and integration_id in integrations
    )
    return plan


def routes_view(
    routes: list[dict[str, Any]], integrations: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Routes as the module's options name them, keyed by route key, for diffs."""
    by_id = {integration["IntegrationId"]: integration for integration in integrations}
    view: dict[str, dict[str, Any]] = {}
    for route in routes:
        integration = by_id.get(route_integration_id(route) or "")
        settings = integration_from_api(integration) if integration else None
        view[route["RouteKey"]] = (
            settings.view() if settings else {"target": route.get("Target") or None}
        )
    return view


def expected_routes_view(
    current: dict[str, dict[str, Any]], wanted: list[DesiredRoute], purge_routes: bool
) -> dict[str, dict[str, Any]]:
    expected = {} if purge_routes else dict(current)
    expected.update({route.route_key: route.integration.view() for route in wanted})
    return expected


# --- Stage ------------------------------------------------------------------------------------


def log_group_arn(arn: str) -> str:
    """A log group ARN as the stage stores it: without the ":*" that DescribeLogGroups (and so
    amazon.aws.cloudwatchlogs_log_group) appends."""
    return arn.removesuffix(":*")


def stage_settings(stage_option: dict[str, Any]) -> dict[str, Any]:
    """The stage fields the stage option sets; options left unset are not managed."""
    settings: dict[str, Any] = {}
    if stage_option.get("auto_deploy") is not None:
        settings["AutoDeploy"] = stage_option["auto_deploy"]
    route_settings = {
        api_field: stage_option[option]
        for option, api_field in STAGE_ROUTE_SETTINGS.items()
        if stage_option.get(option) is not None
    }
    if "ThrottlingRateLimit" in route_settings:
        route_settings["ThrottlingRateLimit"] = float(route_settings["ThrottlingRateLimit"])
    if route_settings:
        settings["DefaultRouteSettings"] = route_settings
    if stage_option.get("access_log_destination_arn") is not None:
        settings["AccessLogSettings"] = {
            "DestinationArn": log_group_arn(stage_option["access_log_destination_arn"]),
            "Format": stage_option["access_log_format"],
        }
    return settings


def _same_setting(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(current, bool):
        return current is wanted or (current is None and wanted is False)
    if isinstance(wanted, (int, float)) and isinstance(current, (int, float)):
        return float(current) == float(wanted)
    return current == wanted


def stage_update(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The UpdateStage fields needed to turn the current stage into the wanted one ({} if none).

    DefaultRouteSettings is sent whole (current values merged with the wanted ones) so that a
    change to one limit never resets the others.
    """
    update: dict[str, Any] = {}
    if "AutoDeploy" in wanted and not _same_setting(
        bool(current.get("AutoDeploy")), wanted["AutoDeploy"]
    ):
        update["AutoDeploy"] = wanted["AutoDeploy"]
    if "DefaultRouteSettings" in wanted:
        current_settings = current.get("DefaultRouteSettings") or {}
        wanted_settings = wanted["DefaultRouteSettings"]
        if any(
            not _same_setting(current_settings.get(name), value)
            for name, value in wanted_settings.items()
        ):
            update["DefaultRouteSettings"] = {**current_settings, **wanted_settings}
    if (
        "AccessLogSettings" in wanted
        and (current.get("AccessLogSettings") or {}) != (wanted["AccessLogSettings"])
    ):
        update["AccessLogSettings"] = wanted["AccessLogSettings"]
    return update


def stage_view(stage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stage as the module's options name it, for diffs: None when there is no stage."""
    if stage is None:
        return None
    route_settings = stage.get("DefaultRouteSettings") or {}
    access_logs = stage.get("AccessLogSettings") or {}
    view: dict[str, Any] = {
        "name": stage["StageName"],
        "auto_deploy": bool(stage.get("AutoDeploy")),
        "access_log_destination_arn": access_logs.get("DestinationArn"),
        "access_log_format": access_logs.get("Format"),
    }
    for option, api_field in STAGE_ROUTE_SETTINGS.items():
        view[option] = route_settings.get(api_field)
    if view["throttling_rate_limit"] is not None:
        view["throttling_rate_limit"] = float(view["throttling_rate_limit"])
    return view


def expected_stage_view(current: dict[str, Any] | None, stage_option: dict[str, Any]) -> dict:
    settings = stage_settings(stage_option)
    stage = dict(current or {"StageName": stage_option["name"]})
    if "AutoDeploy" in settings:
        stage["AutoDeploy"] = settings["AutoDeploy"]
    if "DefaultRouteSettings" in settings:
        stage["DefaultRouteSettings"] = {
            **(stage.get("DefaultRouteSettings") or {}),
            **settings["DefaultRouteSettings"],
        }
    if "AccessLogSettings" in settings:
        stage["AccessLogSettings"] = settings["AccessLogSettings"]
    return stage_view(stage) or {}


# --- Tags -------------------------------------------------------------------------------------


def expected_tags(current: dict[str, str], wanted: dict[str, str], purge_tags: bool) -> dict:
    """The tags after compare_aws_tags' changes: reserved aws: tags are never purged."""
    kept = {k: v for k, v in current.items() if not purge_tags or k.startswith("aws:")}
    return {**kept, **{k: str(v) for k, v in wanted.items()}}


def api_arn(partition: str, region: str, api_id: str) -> str:
    """The ARN that TagResource and UntagResource take for an API (it has no account id)."""
    return f"arn:{partition}:apigateway:{region}::/apis/{api_id}"


# --- Readers (take a client; botocore errors propagate) ---------------------------------------


@AWSRetry.jittered_backoff()
def _all_items(client, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
    paginator = client.get_paginator(operation)
    return paginator.paginate(**kwargs).build_full_result().get("Items", [])


def find_http_apis(client, name: str) -> list[dict[str, Any]]:
    """Every HTTP API with this name (API names are not unique in API Gateway)."""
    return [
        api
        for api in _all_items(client, "get_apis")
        if api.get("Name") == name and api.get("ProtocolType") == "HTTP"
    ]


def list_routes(client, api_id: str) -> list[dict[str, Any]]:
    return _all_items(client, "get_routes", ApiId=api_id)


def list_integrations(client, api_id: str) -> list[dict[str, Any]]:
    return _all_items(client, "get_integrations", ApiId=api_id)


@AWSRetry.jittered_backoff()
def get_stage(client, api_id: str, stage_name: str) -> dict[str, Any] | None:
    try:
        stage = client.get_stage(ApiId=api_id, StageName=stage_name)
    except is_boto3_error_code("NotFoundException"):
        return None
    stage.pop("ResponseMetadata", None)
    return stage

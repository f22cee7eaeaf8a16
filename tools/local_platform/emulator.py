"""moto's server for the local platform, with one correction to its policy evaluation.

moto evaluates S3 bucket policies, but a statement whose Condition is not met counts as a Deny
there, whatever its Effect, and moto passes no request context (aws:SecureTransport,
aws:SourceIp, ...) to evaluate conditions with. So the storage stage's TLS-only statement (Deny
s3:* when aws:SecureTransport is false) refuses every PutObject and GetObject under moto, and
Lambda Ingest could write nothing.

In AWS a statement whose conditions are not met does not apply, and a condition on a key that
the request does not carry is not met (unless its operator ends in IfExists, or is Null). This
launcher applies those two rules and then runs moto's own server unchanged. The TLS-only
statement is therefore not enforced locally, where moto cannot tell the transport; AWS enforces
it, and tests/infra check that the policy is deployed.

It also emulates the VPC's S3 gateway endpoint. In AWS a request from the private subnets reaches
S3 through that endpoint and carries its id as aws:SourceVpce, which the package mirror's bucket
policy requires of anonymous reads (playbooks/storage.yml); moto passes no request context, so
such a read would always be refused. With ``--s3-gateway-endpoint-port=PORT`` this launcher
serves the same emulator on a second port, the endpoint's side: bucket policies are evaluated for
a request that arrives there with aws:SourceVpce = the id of the S3 gateway endpoint of the
bucket's account and region (when it has exactly one), and for any other request with no context,
as before. The local DWH instance's link to S3 leads to that port, as its route table leads to
the endpoint in AWS.

    python -m tools.local_platform.emulator -H 127.0.0.1 -p 4566 \
        [--s3-gateway-endpoint-port=4567] [--state-dir=DIR]

moto_server's arguments; ``--state-dir`` only marks the process as the local platform's.
Not production code: it exists only for the local inventory.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto import server
from moto.ec2.models import ec2_backends
from moto.iam.access_control import IAMPolicy, IAMPolicyStatement, PermissionResult
from moto.iam.policy_conditions import TrustRelationShipConditions
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.models import FakeBucket
from werkzeug.serving import make_server

GATEWAY_ENDPOINT_PORT_OPTION = "--s3-gateway-endpoint-port="
# Whether the request this thread serves arrived through the emulated gateway endpoint.
_request = threading.local()

_moto_is_action_permitted = IAMPolicyStatement.is_action_permitted


def conditions_met(statement: dict[str, Any], context: dict[str, str] | None) -> bool:
    """AWS's rule: every condition is met, and a key missing from ``context`` meets none."""
    for condition in TrustRelationShipConditions(statement.get("Condition") or {}):
        operator = condition._condition
        values = [(context or {})[key] for key in condition.context_keys if key in (context or {})]
        if len(values) < len(condition.context_keys):
            if operator.endswith("IfExists") or operator == "Null":
                continue
            return False
        if not condition.verify_condition(values):
            return False
    return True


def is_action_permitted(
    self: IAMPolicyStatement,
    action: str,
    resource: str = "*",
    principal: str | None = None,
    incoming_condition_values: dict[str, str] | None = None,
) -> PermissionResult:
    if not conditions_met(self._statement, incoming_condition_values):
        return PermissionResult.NEUTRAL  # the statement does not apply to this request
    return _moto_is_action_permitted(self, action, resource, principal, incoming_condition_values)


def s3_gateway_endpoint_id(account_id: str, region: str) -> str | None:
    """The id of the one S3 gateway endpoint of ``account_id`` in ``region``, else None."""
    backend = ec2_backends[account_id].get(region) if account_id in ec2_backends else None
    endpoints = [
        endpoint.id
        for endpoint in (backend.vpc_end_points.values() if backend else ())
        if endpoint.vpc_endpoint_type == "Gateway" and endpoint.service_name.endswith(".s3")
    ]
    return endpoints[0] if len(endpoints) == 1 else None


def bucket_permission(self: FakeBucket, action: str, resource: str) -> PermissionResult:
    """moto's FakeBucket.get_permission, with aws:SourceVpce for requests through the endpoint."""
    if self.policy is None:
        return PermissionResult.NEUTRAL
    context = {}
    if getattr(_request, "through_gateway_endpoint", False):
        endpoint_id = s3_gateway_endpoint_id(self.account_id, self.region_name)
        if endpoint_id:
            context["aws:SourceVpce"] = endpoint_id
    return IAMPolicy(self.policy.decode()).is_action_permitted(
        action, resource, incoming_condition_values=context
    )


def through_gateway_endpoint(application: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
    """The WSGI application of the endpoint's side: marks each request as arriving through it."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        _request.through_gateway_endpoint = True
        try:
            # moto answers in full while the application is called (no streamed bodies).
            return application(environ, start_response)
        finally:
            _request.through_gateway_endpoint = False

    return serve


def serve_gateway_endpoint(host: str, port: int) -> None:
    """The endpoint's side, in a thread: the same backends as the main port."""
    application = DomainDispatcherApplication(create_backend_app)
    endpoint_server = make_server(
        host,
        port,
        through_gateway_endpoint(application),
        threaded=True,
        request_handler=server.MotoRequestHandler,
    )
    threading.Thread(target=endpoint_server.serve_forever, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    IAMPolicyStatement.is_action_permitted = is_action_permitted
    FakeBucket.get_permission = bucket_permission
    arguments = [argument for argument in argv or [] if not argument.startswith("--state-dir=")]
    endpoint_ports = [a for a in arguments if a.startswith(GATEWAY_ENDPOINT_PORT_OPTION)]
    arguments = [a for a in arguments if a not in endpoint_ports]
    if endpoint_ports:
        host = arguments[arguments.index("-H") + 1] if "-H" in arguments else "127.0.0.1"
        endpoint_port = int(endpoint_ports[-1].removeprefix(GATEWAY_ENDPOINT_PORT_OPTION))
        serve_gateway_endpoint(host, endpoint_port)
    server.main(arguments)


if __name__ == "__main__":
    main(sys.argv[1:])

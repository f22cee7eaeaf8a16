"""moto's server for the local platform, with corrections to its policy evaluation.

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

With ``--enforce-iam=FILE`` it also enforces IAM, as AWS does, which moto leaves off by default
(it stores the policies and checks nothing). Every request must then be signed with a key the
account knows: the keys in FILE (credentials.py: the operator's, allowed everything, and the
Lambda and EC2 services' stand-ins, allowed only sts:AssumeRole and admitted by a role's trust
policy where it names that service) or the temporary keys of a role assumed with them; a
request is allowed only where the caller's policies allow it. moto's evaluation then needs these
corrections to reach AWS's verdict for the platform's policies (each patch below says why):

- the resource of an SSM parameter request is the parameter's ARN (moto checks SSM against "*",
  so a statement scoped to one parameter would match nothing);
- identity policies are evaluated with the request's context (moto passes none): s3:prefix of a
  listing, aws:SourceVpce through the gateway endpoint; and StringLike is evaluated (moto knows
  only StringEquals and counts every other operator as met);
- a trust policy's Service principal admits that service's stand-in (moto compares only AWS
  principals and fails on a Service one);
- an anonymous S3 request (no Authorization header: the DWH instance's apt) is allowed only where
  the bucket policy allows it (moto would fail on the missing header).

docs/security.md ("IAM in the emulation") lists where moto's evaluation still differs from AWS's.

    python -m tools.local_platform.emulator -H 127.0.0.1 -p 4566 \
        [--s3-gateway-endpoint-port=4567] [--enforce-iam=FILE] [--state-dir=DIR]

moto_server's arguments; ``--state-dir`` only marks the process as the local platform's.
Not production code: it exists only for the local inventory.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moto import server, settings
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.authorization import ActionAuthenticatorMixin
from moto.ec2.models import ec2_backends
from moto.iam.access_control import (
    IAMPolicy,
    IAMPolicyStatement,
    IAMRequestBase,
    PermissionResult,
    S3IAMRequest,
)
from moto.iam.models import iam_backends
from moto.iam.policy_conditions import CONDITION_OPERATIONS, TrustRelationShipConditions
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError
from moto.s3.models import FakeBucket, s3_backends
from moto.ssm.responses import SimpleSystemManagerResponse
from werkzeug.serving import make_server

from tools.local_platform import credentials

GATEWAY_ENDPOINT_PORT_OPTION = "--s3-gateway-endpoint-port="
ENFORCE_IAM_OPTION = "--enforce-iam="
# The emulator's own IAM users (credentials.py): the operator, and a stand-in per AWS service,
# which a trust policy's {"Service": NAME} admits.
OPERATOR_USER = "local-platform-operator"
SERVICE_STAND_INS = {
    f"local-platform-{name.split('.')[0]}-service": name for name in credentials.SERVICES
}
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


def string_like(expected: list[str] | str, actual: str) -> bool:
    """IAM's StringLike: * and ? wildcards, case-sensitive; any of the expected values."""
    patterns = [expected] if isinstance(expected, str) else expected
    return any(fnmatch.fnmatchcase(actual, pattern) for pattern in patterns)


def is_action_permitted(
    self: IAMPolicyStatement,
    action: str,
    resource: str = "*",
    principal: str | None = None,
    incoming_condition_values: dict[str, str] | None = None,
) -> PermissionResult:
    # An identity policy is evaluated with no context by moto (check_action_permitted passes
    # none): it gets the context of the request this thread serves (see request_context).
    if incoming_condition_values is None:
        incoming_condition_values = getattr(_request, "context", None)
    if not conditions_met(self._statement, incoming_condition_values):
        return PermissionResult.NEUTRAL  # the statement does not apply to this request
    return _moto_is_action_permitted(self, action, resource, principal, incoming_condition_values)


def principal_matches(self: IAMPolicyStatement, principal: str) -> bool:
    """Whether a trust policy's Principal names the caller: moto compares only AWS principals
    (and fails on a Service one); here a service's stand-in user is that Service principal."""
    expected = self._statement.get("Principal")
    if not expected or expected == "*":
        return True
    service = next(
        (name for user, name in SERVICE_STAND_INS.items() if principal.endswith(f":user/{user}")),
        None,
    )
    if service:
        return service in as_list(expected.get("Service"))
    account = principal.split(":")[4]
    names = as_list(expected.get("AWS"))
    return bool({"*", principal, account, f"arn:aws:iam::{account}:root"} & set(names))


def as_list(value: list[str] | str | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else value


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


# --- IAM enforced (--enforce-iam) ----------------------------------------------------------

_moto_authenticate_and_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_action


def request_context(response: Any) -> dict[str, str]:
    """The condition keys of the request that ``response`` (moto's handler) serves, as far as
    the platform's policies read them."""
    context = {}
    if getattr(_request, "through_gateway_endpoint", False):
        endpoint_id = s3_gateway_endpoint_id(response.current_account, response.region)
        if endpoint_id:
            context["aws:SourceVpce"] = endpoint_id
    if getattr(response, "data", {}).get("Action") == "ListBucket":
        prefix = response.querystring.get("prefix")
        if prefix:
            context["s3:prefix"] = prefix[0]
    return context


def authenticate_and_authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
    """moto's check of the caller's signature and policies, with the request's context; an
    anonymous S3 request is decided by the bucket policy alone, as in AWS (moto would fail on
    its missing Authorization header)."""
    _request.context = request_context(self)
    enforced = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
    if enforced and iam_request_cls is S3IAMRequest and "Authorization" not in self.headers:
        bucket_name = resource.split(":::", 1)[-1].split("/", 1)[0]
        bucket = s3_backends[self.current_account][self.partition].buckets.get(bucket_name)
        action = f"s3:{self._get_action()}"
        if bucket is None or bucket.get_permission(action, resource) != PermissionResult.PERMITTED:
            raise BucketAccessDeniedError(bucket=bucket_name) if bucket else S3AccessDeniedError()
        return
    _moto_authenticate_and_authorize(self, iam_request_cls, resource)


_moto_signed_request = IAMRequestBase._create_aws_request


def signed_request(self: IAMRequestBase) -> Any:
    """The request as the caller signed it. moto rebuilds a body-less request's payload from its
    parsed parameters, which is right for a form (query protocol) but not for a REST call
    without a body (Lambda's or API Gateway's GETs): their signatures never matched."""
    request = _moto_signed_request(self)
    if not self._body and "x-www-form-urlencoded" not in self._headers.get("Content-Type", ""):
        request.data = b""
    return request


# The SSM actions on named parameters, and where each names them.
SSM_PARAMETER_ACTIONS = {
    "GetParameter": "Name",
    "GetParameters": "Names",
    "PutParameter": "Name",
    "DeleteParameter": "Name",
    "DeleteParameters": "Names",
    "GetParameterHistory": "Name",
    "LabelParameterVersion": "Name",
    "UnlabelParameterVersion": "Name",
    "GetParametersByPath": "Path",
}


def ssm_resource(self: SimpleSystemManagerResponse) -> str:
    """The ARN of the parameter an SSM request names (moto checks every SSM action against "*",
    which a statement scoped to a parameter's ARN never matches). A request naming several
    parameters must be allowed on each: all but the first are checked here."""
    field = SSM_PARAMETER_ACTIONS.get(self._get_action())
    names = self._get_param(field) if field else None
    if not names:
        return "*"
    arns = [parameter_arn(self, name) for name in ([names] if isinstance(names, str) else names)]
    for arn in arns[1:]:
        self._authenticate_and_authorize_normal_action(arn)
    return arns[0]


def parameter_arn(response: SimpleSystemManagerResponse, name: str) -> str:
    if name.startswith("arn:"):
        return name
    name = name.split(":", 1)[0].lstrip("/")  # without a :version or :label selector
    account, region = response.current_account, response.region
    return f"arn:{response.partition}:ssm:{region}:{account}:parameter/{name}"


def create_identities(keys: dict[str, dict[str, str]]) -> None:
    """The operator and the services' stand-ins, with the access keys in ``keys``, in the
    account every request without a known key falls into (moto's default account)."""
    backend = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    grants = {
        OPERATOR_USER: (credentials.OPERATOR, "*"),
        **{user: (service, "sts:AssumeRole") for user, service in SERVICE_STAND_INS.items()},
    }
    for user_name, (identity, action) in grants.items():
        backend.create_user(region_name="us-east-1", user_name=user_name)
        statement = {"Effect": "Allow", "Action": action, "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        backend.put_user_policy(user_name, "local-platform", json.dumps(policy))
        key = backend.create_access_key(user_name)
        del backend.access_keys[key.physical_resource_id]
        key.access_key_id = keys[identity]["AccessKeyId"]
        key.secret_access_key = keys[identity]["SecretAccessKey"]
        backend.access_keys[key.physical_resource_id] = key


def enforce_iam(keys_path: Path) -> None:
    create_identities(credentials.access_keys(keys_path))
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_and_authorize
    SimpleSystemManagerResponse._determine_resource = ssm_resource
    IAMPolicyStatement._check_principal = principal_matches
    IAMRequestBase._create_aws_request = signed_request
    # moto evaluates StringEquals only and counts any other operator as met.
    CONDITION_OPERATIONS["StringLike"] = string_like


def main(argv: list[str] | None = None) -> None:
    IAMPolicyStatement.is_action_permitted = is_action_permitted
    FakeBucket.get_permission = bucket_permission
    arguments = [argument for argument in argv or [] if not argument.startswith("--state-dir=")]
    enforce_options = [a for a in arguments if a.startswith(ENFORCE_IAM_OPTION)]
    arguments = [a for a in arguments if a not in enforce_options]
    if enforce_options:
        enforce_iam(Path(enforce_options[-1].removeprefix(ENFORCE_IAM_OPTION)))
    endpoint_ports = [a for a in arguments if a.startswith(GATEWAY_ENDPOINT_PORT_OPTION)]
    arguments = [a for a in arguments if a not in endpoint_ports]
    if endpoint_ports:
        host = arguments[arguments.index("-H") + 1] if "-H" in arguments else "127.0.0.1"
        endpoint_port = int(endpoint_ports[-1].removeprefix(GATEWAY_ENDPOINT_PORT_OPTION))
        serve_gateway_endpoint(host, endpoint_port)
    server.main(arguments)


if __name__ == "__main__":
    main(sys.argv[1:])

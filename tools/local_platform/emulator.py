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

    python -m tools.local_platform.emulator -H 127.0.0.1 -p 4566 [--state-dir=DIR]

moto_server's arguments; ``--state-dir`` only marks the process as the local platform's.
Not production code: it exists only for the local inventory.
"""

from __future__ import annotations

import sys
from typing import Any

from moto import server
from moto.iam.access_control import IAMPolicyStatement, PermissionResult
from moto.iam.policy_conditions import TrustRelationShipConditions

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


def main(argv: list[str] | None = None) -> None:
    IAMPolicyStatement.is_action_permitted = is_action_permitted
    server.main([argument for argument in argv or [] if not argument.startswith("--state-dir=")])


if __name__ == "__main__":
    main(sys.argv[1:])

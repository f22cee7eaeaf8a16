"""Every bucket refuses plain HTTP, and the package mirror lets anyone read its snapshots only
through the VPC's S3 gateway endpoint: the storage stage's deployed policies, evaluated.

moto stores a bucket policy but does not enforce it, and it serves only plain HTTP anyway. So
these tests read back the policy each bucket holds after playbooks/network.yml and
playbooks/storage.yml and evaluate it for requests with and without TLS, and through the
endpoint or not, the way S3 does for the statements it holds: an explicit Deny whose action,
resource, principal and condition match wins over any Allow. That AWS enforces the policy is
AWS's part (docs/security.md says so).
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from tests.fixtures.ansible import run_playbook
from tests.fixtures.aws import MotoServer, aws_environment, stack_bucket_name

MIRROR_BUCKET = stack_bucket_name("mirror")
BUCKETS = (
    stack_bucket_name("raw"),
    stack_bucket_name("media"),
    stack_bucket_name("transfer"),
    MIRROR_BUCKET,
)
# What a reader or a writer of each kind of resource asks S3 for.
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectVersion")
BUCKET_ACTIONS = ("s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketPolicy")
# Anyone: another account, a role of this account, an anonymous caller.
PRINCIPALS = ("*", "arn:aws:iam::123456789012:role/clickstream-local-etl-lambda")
# (caller, action, resource)
Request = tuple[str, str, str]


class UnsupportedPolicy(ValueError):
    """The policy uses something this evaluator does not model: judge it by hand."""


def matches(patterns: str | list[str], value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcard match (* and ?) of a value against one pattern or a list of them."""
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not case_sensitive:
        return any(fnmatchcase(value.lower(), pattern.lower()) for pattern in patterns)
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def principal_matches(principal: Any, caller: str) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict) and set(principal) == {"AWS"}:
        return matches(principal["AWS"], caller)
    raise UnsupportedPolicy(f"principal {principal!r}")


def condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    """Every test of the condition holds; a key the request does not carry holds none."""
    for operator, tests in condition.items():
        if operator not in ("Bool", "StringEquals"):
            raise UnsupportedPolicy(f"condition operator {operator}")
        for key, wanted in tests.items():
            values = [wanted] if isinstance(wanted, str) else wanted
            if operator == "Bool":
                values = [value.lower() for value in values]
            if key not in context or context[key] not in values:
                return False
    return True


def statement_matches(
    statement: dict[str, Any], caller: str, action: str, resource: str, context: dict[str, str]
) -> bool:
    if {"NotAction", "NotResource", "NotPrincipal"} & set(statement):
        raise UnsupportedPolicy(f"statement {statement.get('Sid')}")
    return (
        principal_matches(statement["Principal"], caller)
        and matches(statement["Action"], action, case_sensitive=False)
        and matches(statement["Resource"], resource)
        and condition_holds(statement.get("Condition", {}), context)
    )


def request_context(*, tls: bool, vpc_endpoint: str | None = None) -> dict[str, str]:
    context = {"aws:SecureTransport": str(tls).lower()}
    if vpc_endpoint:
        context["aws:SourceVpce"] = vpc_endpoint
    return context


def any_statement_matches(
    policy: dict[str, Any],
    effect: str,
    caller: str,
    action: str,
    resource: str,
    context: dict[str, str],
) -> bool:
    """Whether a statement of ``policy`` with ``effect`` matches the request."""
    return any(
        statement["Effect"] == effect
        and statement_matches(statement, caller, action, resource, context)
        for statement in policy["Statement"]
    )


def denies(
    policy: dict[str, Any],
    caller: str,
    action: str,
    resource: str,
    *,
    tls: bool,
    vpc_endpoint: str | None = None,
) -> bool:
    """Whether an explicit Deny of ``policy`` matches the request."""
    context = request_context(tls=tls, vpc_endpoint=vpc_endpoint)
    return any_statement_matches(policy, "Deny", caller, action, resource, context)


def allows(
    policy: dict[str, Any],
    caller: str,
    action: str,
    resource: str,
    *,
    tls: bool,
    vpc_endpoint: str | None = None,
) -> bool:
    """Whether ``policy`` alone grants the request: an Allow matches and no Deny does. (An
    anonymous caller has nothing else; the account's own principals have their IAM policies.)"""
    context = request_context(tls=tls, vpc_endpoint=vpc_endpoint)
    return not any_statement_matches(
        policy, "Deny", caller, action, resource, context
    ) and any_statement_matches(policy, "Allow", caller, action, resource, context)


def requests_to(bucket: str) -> list[Request]:
    objects = [(a, f"arn:aws:s3:::{bucket}/events/2025/12/01/10/e.json") for a in OBJECT_ACTIONS]
    buckets = [(a, f"arn:aws:s3:::{bucket}") for a in BUCKET_ACTIONS]
    return [(caller, *request) for caller in PRINCIPALS for request in objects + buckets]


@pytest.fixture(scope="module")
def deployed_policies(moto_server: MotoServer, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The policy of each bucket, as S3 holds it after the storage stage."""
    moto_server.reset()
    environment = aws_environment(moto_server.endpoint_url)
    temp_dir = tmp_path_factory.mktemp("storage")
    # The network first: the package mirror's policy names the VPC's S3 gateway endpoint.
    for playbook in ("playbooks/network.yml", "playbooks/storage.yml"):
        run = run_playbook(
            playbook, "-i", "inventories/local", environment=environment, temp_dir=temp_dir
        )
        assert run.returncode == 0, run.explain()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        s3 = moto_server.client("s3")
        return {b: json.loads(s3.get_bucket_policy(Bucket=b)["Policy"]) for b in BUCKETS}


@pytest.mark.parametrize("bucket", BUCKETS)
def test_every_request_without_tls_is_denied(deployed_policies, bucket):
    allowed = [
        request
        for request in requests_to(bucket)
        if not denies(deployed_policies[bucket], *request, tls=False)
    ]
    assert allowed == []


@pytest.mark.parametrize("bucket", BUCKETS)
def test_the_policy_denies_nothing_over_tls(deployed_policies, bucket):
    # The Deny is conditioned on the transport: over TLS, IAM decides as usual.
    denied = [
        request
        for request in requests_to(bucket)
        if denies(deployed_policies[bucket], *request, tls=True)
    ]
    assert denied == []


def test_a_policy_that_forgets_the_objects_lets_plain_http_reach_them(deployed_policies):
    # The evaluator can fail: the same Deny over the bucket alone leaves its objects open.
    policy = json.loads(json.dumps(deployed_policies[BUCKETS[0]]))
    for statement in policy["Statement"]:
        statement["Resource"] = [r for r in statement["Resource"] if not r.endswith("/*")]
    allowed = [r for r in requests_to(BUCKETS[0]) if not denies(policy, *r, tls=False)]
    assert {action for _, action, _ in allowed} == set(OBJECT_ACTIONS)


# --- The package mirror: anonymous reads through the VPC's S3 gateway endpoint only ------------


@pytest.fixture(scope="module")
def gateway_endpoint(deployed_policies, moto_server: MotoServer) -> str:
    """The id of the S3 gateway endpoint the network stage made."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in aws_environment(moto_server.endpoint_url).items():
            patch.setenv(name, value)
        endpoints = moto_server.client("ec2").describe_vpc_endpoints(
            Filters=[{"Name": "vpc-endpoint-type", "Values": ["Gateway"]}]
        )["VpcEndpoints"]
    (endpoint,) = [e for e in endpoints if e["ServiceName"].endswith(".s3")]
    return endpoint["VpcEndpointId"]


SNAPSHOT_OBJECT = f"arn:aws:s3:::{MIRROR_BUCKET}/snapshots/20260101T000000Z/InRelease"


def test_anyone_may_read_the_snapshots_through_the_vpc_endpoint(
    deployed_policies, gateway_endpoint
):
    policy = deployed_policies[MIRROR_BUCKET]
    assert allows(
        policy, "*", "s3:GetObject", SNAPSHOT_OBJECT, tls=True, vpc_endpoint=gateway_endpoint
    )


@pytest.mark.parametrize("vpc_endpoint", [None, "vpce-0123456789abcdef0"])
def test_nobody_may_read_the_snapshots_from_anywhere_else(
    deployed_policies, gateway_endpoint, vpc_endpoint
):
    # From the internet (no endpoint) or through another VPC's endpoint.
    policy = deployed_policies[MIRROR_BUCKET]
    assert not allows(
        policy, "*", "s3:GetObject", SNAPSHOT_OBJECT, tls=True, vpc_endpoint=vpc_endpoint
    )


def test_the_endpoint_grants_reads_of_snapshots_and_nothing_else(
    deployed_policies, gateway_endpoint
):
    policy = deployed_policies[MIRROR_BUCKET]
    other_object = ("*", "s3:GetObject", f"arn:aws:s3:::{MIRROR_BUCKET}/other/key")
    granted = [
        (action, resource)
        for _, action, resource in [*requests_to(MIRROR_BUCKET), other_object]
        if allows(policy, "*", action, resource, tls=True, vpc_endpoint=gateway_endpoint)
    ]
    assert granted == []
    # Nor a snapshot over plain HTTP: the TLS-only Deny wins.
    assert not allows(
        policy, "*", "s3:GetObject", SNAPSHOT_OBJECT, tls=False, vpc_endpoint=gateway_endpoint
    )

"""Every bucket refuses plain HTTP: the storage stage's deployed policies, evaluated.

moto stores a bucket policy but does not enforce it, and it serves only plain HTTP anyway. So
these tests read back the policy each bucket holds after playbooks/storage.yml and evaluate it
for requests with and without TLS, the way S3 does for the statements it holds: an explicit Deny
whose action, resource, principal and condition match wins over any Allow. That AWS enforces a
matching Deny is AWS's part (docs/security.md says so).
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from tests.fixtures.ansible import run_playbook
from tests.fixtures.aws import MotoServer, aws_environment

BUCKETS = ("clickstream-s3-ingest", "clickstream-s3-sbw", "clickstream-ssm-transfer-local")
# What a reader or a writer of each kind of resource asks S3 for.
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectVersion")
BUCKET_ACTIONS = ("s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketPolicy")
# Anyone: another account, a role of this account, an anonymous caller.
PRINCIPALS = ("*", "arn:aws:iam::123456789012:role/clickstream-etl-lambda")
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
    for operator, tests in condition.items():
        if operator != "Bool":
            raise UnsupportedPolicy(f"condition operator {operator}")
        for key, wanted in tests.items():
            values = [wanted] if isinstance(wanted, str) else wanted
            if context.get(key) not in [value.lower() for value in values]:
                return False
    return True


def denies(policy: dict[str, Any], caller: str, action: str, resource: str, *, tls: bool) -> bool:
    """Whether an explicit Deny of ``policy`` matches the request."""
    context = {"aws:SecureTransport": str(tls).lower()}
    for statement in policy["Statement"]:
        if {"NotAction", "NotResource", "NotPrincipal"} & set(statement):
            raise UnsupportedPolicy(f"statement {statement.get('Sid')}")
        if (
            statement["Effect"] == "Deny"
            and principal_matches(statement["Principal"], caller)
            and matches(statement["Action"], action, case_sensitive=False)
            and matches(statement["Resource"], resource)
            and condition_holds(statement.get("Condition", {}), context)
        ):
            return True
    return False


def requests_to(bucket: str) -> list[Request]:
    objects = [(a, f"arn:aws:s3:::{bucket}/events/2025/12/01/10/e.json") for a in OBJECT_ACTIONS]
    buckets = [(a, f"arn:aws:s3:::{bucket}") for a in BUCKET_ACTIONS]
    return [(caller, *request) for caller in PRINCIPALS for request in objects + buckets]


@pytest.fixture(scope="module")
def deployed_policies(moto_server: MotoServer, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The policy of each bucket, as S3 holds it after the storage stage."""
    moto_server.reset()
    environment = aws_environment(moto_server.endpoint_url)
    run = run_playbook(
        "playbooks/storage.yml",
        "-i",
        "inventories/local",
        environment=environment,
        temp_dir=tmp_path_factory.mktemp("storage"),
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

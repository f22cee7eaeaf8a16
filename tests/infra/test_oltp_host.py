"""The optional public OLTP host (compute_oltp_enabled), switched on against an emulated account:
public by design, so only the trusted networks reach its ports, and the host itself gets the same
hardening as the DWH host (docs/security.md, "The OLTP host"). The default stack, without it, is
tests/infra/test_site.py's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.ansible import PlaybookRun, extra_vars
from tests.fixtures.aws import MotoServer

pytestmark = pytest.mark.slow

# The stages the host needs: its network, its security group, the DWH host's instance profile.
STAGES = "network,security_groups,iam,compute"
TRUSTED = {
    "security_groups_oltp_postgres_trusted_cidrs": ["203.0.113.10/32"],
    "security_groups_oltp_ssh_trusted_cidrs": ["198.51.100.0/28", "203.0.113.10/32"],
}


@pytest.fixture(scope="module")
def runs(run_on_moto) -> tuple[PlaybookRun, PlaybookRun]:
    oltp_on = extra_vars({"compute_oltp_enabled": True, **TRUSTED})
    arguments = ("site.yml", "--tags", STAGES, *oltp_on)
    first = run_on_moto(*arguments)
    assert first.returncode == 0, first.explain()
    return first, run_on_moto(*arguments)


@pytest.fixture(scope="module")
def aws(runs, infra_moto: MotoServer) -> MotoServer:
    return infra_moto


def oltp_host(aws: MotoServer) -> dict[str, Any]:
    reservations = aws.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:Name", "Values": ["clickstream-local-oltp"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (instance,) = [i for r in reservations for i in r["Instances"]]
    return instance


def test_a_second_run_changes_nothing(runs):
    _, second = runs
    assert second.returncode == 0, second.explain()
    assert [f"{r.play} / {r.task}" for r in second.task_results if r.changed] == []


def test_the_oltp_group_admits_exactly_the_trusted_networks_on_their_ports(aws):
    (group,) = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["clickstream-local-oltp"]}]
    )["SecurityGroups"]
    admitted = {
        (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]): sorted(
            ip_range["CidrIp"] for ip_range in rule["IpRanges"]
        )
        for rule in group["IpPermissions"]
    }
    assert admitted == {
        ("tcp", 5432, 5432): TRUSTED["security_groups_oltp_postgres_trusted_cidrs"],
        ("tcp", 22, 22): sorted(TRUSTED["security_groups_oltp_ssh_trusted_cidrs"]),
    }
    for rule in group["IpPermissions"]:
        assert (rule["Ipv6Ranges"], rule["UserIdGroupPairs"]) == ([], [])


def test_the_oltp_host_requires_imdsv2(aws):
    assert oltp_host(aws)["MetadataOptions"]["HttpTokens"] == "required"


def test_the_oltp_host_volume_is_encrypted(aws):
    attached = {"Name": "attachment.instance-id", "Values": [oltp_host(aws)["InstanceId"]]}
    volumes = aws.client("ec2").describe_volumes(Filters=[attached])["Volumes"]
    assert [volume["Encrypted"] for volume in volumes] == [True]


def test_the_oltp_host_carries_no_instance_profile(aws):
    # Nothing on the host needs AWS credentials; a compromised shop host gets none.
    assert "IamInstanceProfile" not in oltp_host(aws)

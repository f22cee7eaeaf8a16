"""An emulated AWS account of its own for each infra test module, and the playbook runs on it.

Provisioning the platform takes about a minute, so each module provisions once (module scope)
on a moto server that no other test resets, and its tests read the result back with boto3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.ansible import PlaybookRun, extra_vars, run_playbook
from tests.fixtures.aws import MotoServer, account_of_its_own, aws_environment

LOCAL_INVENTORY = "inventories/local"

RunPlaybook = Callable[..., PlaybookRun]


@pytest.fixture(scope="module")
def infra_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server for this module alone, with AWS's managed IAM policies loaded (the roles
    attach AWSLambdaVPCAccessExecutionRole)."""
    with account_of_its_own(tmp_path_factory.mktemp("infra-moto") / "moto.log") as server:
        yield server


@pytest.fixture(scope="module")
def run_on_moto(infra_moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> RunPlaybook:
    """Run a playbook of the repository with the local inventory against this module's moto.

    The Lambda zips are built into a temporary folder, not the checkout's build/.
    """
    temp_dir = tmp_path_factory.mktemp("ansible")
    build_dir = temp_dir / "lambda-build"

    def run(playbook: str, *arguments: str) -> PlaybookRun:
        return run_playbook(
            playbook,
            "-i",
            LOCAL_INVENTORY,
            # lambdas_etl_dwh_host "": the AWS way, DWH_HOST is the DWH instance's private IP
            # (the local platform points it at its systemd-nspawn instance instead).
            *extra_vars({"lambdas_build_dir": str(build_dir), "lambdas_etl_dwh_host": ""}),
            *arguments,
            environment=aws_environment(infra_moto.endpoint_url),
            temp_dir=temp_dir,
        )

    return run

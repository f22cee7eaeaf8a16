"""The access keys of the local emulator when it enforces IAM, and the roles assumed with them.

With ``emulator.py --enforce-iam=FILE`` every request to the emulator must be signed with a key
the emulated account knows, as in AWS. FILE holds the emulator's own three keys:

- ``operator``: the administrator who runs site.yml (`make up`), `make env` and `make psql`;
  allowed everything, as the operator's own credentials are in a real account;
- ``lambda.amazonaws.com`` and ``ec2.amazonaws.com``: stand-ins for the AWS services that assume
  the platform's roles (Lambda a function's execution role, EC2 the instance profile's role).
  They may do nothing but sts:AssumeRole, and a role's trust policy admits each only where it
  names that service as its Principal.

The keys are made at random the first time FILE is asked for (mode 0600, in the local platform's
state directory, which `make down` removes), never written to the repository.

Not production code: it exists only for the local inventory.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import tempfile
from pathlib import Path
from typing import Any

OPERATOR = "operator"
LAMBDA_SERVICE = "lambda.amazonaws.com"
EC2_SERVICE = "ec2.amazonaws.com"
SERVICES = (LAMBDA_SERVICE, EC2_SERVICE)
# An IAM user's key id: 20 upper-case letters and digits, the form moto reads an account from.
_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits


def _new_key() -> dict[str, str]:
    return {
        "AccessKeyId": "AKIA" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16)),
        "SecretAccessKey": secrets.token_urlsafe(30),
    }


def access_keys(path: Path) -> dict[str, dict[str, str]]:
    """The keys in ``path``; made there first (0600, atomically) when it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = {identity: _new_key() for identity in (OPERATOR, *SERVICES)}
        descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "w") as partial_file:
                json.dump(keys, partial_file)
            # A hard link fails if another process made the file meanwhile: its keys win.
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(partial)
    return json.loads(path.read_text())


def key_environment(key: dict[str, str]) -> dict[str, str]:
    """AWS_* variables for a key of access_keys() or assume_role()."""
    environment = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
    if key.get("SessionToken"):
        environment["AWS_SESSION_TOKEN"] = key["SessionToken"]
    return environment


def assume_role(
    endpoint_url: str, region: str, service_key: dict[str, str], role_arn: str, session: str
) -> dict[str, Any]:
    """The role's temporary credentials, as ``service_key``'s service obtains them
    (AccessKeyId, SecretAccessKey, SessionToken, Expiration)."""
    import boto3

    sts = boto3.client(
        "sts",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=service_key["AccessKeyId"],
        aws_secret_access_key=service_key["SecretAccessKey"],
        aws_session_token=service_key.get("SessionToken"),
    )
    return sts.assume_role(RoleArn=role_arn, RoleSessionName=session)["Credentials"]

# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: whether S3 bucket names are ours, free, or taken by another account."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: s3_bucket_name_info
short_description: Tell whether S3 bucket names are this account's, free, or taken
description:
  - S3 bucket names are global across all AWS accounts. For each name, this reports V(ours)
    when the account's ListBuckets holds it, otherwise asks HeadBucket - V(free) on 404,
    V(taken) on any other answer (403 or 200 - another account owns it; 301 - it exists in
    another region).
  - Read-only; check mode is supported.
notes:
  - The caller needs C(s3:ListAllMyBuckets); HeadBucket on another account's bucket needs no grant
    to tell that it exists.
author:
  - Clickstream platform maintainers
options:
  names:
    description: The bucket names to look up.
    type: list
    elements: str
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Find which of the inventory's bucket names another account holds
  s3_bucket_name_info:
    names: [clickstream-prod-raw-123456789012-ap-southeast-1]
  register: bucket_names
"""

RETURN = r"""
buckets:
  description: Per name, in the order given, its state.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "clickstream-prod-raw-123456789012-ap-southeast-1", "state": "free"}]
taken:
  description: The names another account holds.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry


class S3ErrorHandler(AWSErrorHandler):
    pass


@S3ErrorHandler.common_error_handler("list the account's buckets")
def own_bucket_names(client) -> set[str]:
    return {bucket["Name"] for bucket in client.list_buckets(aws_retry=True).get("Buckets", [])}


@S3ErrorHandler.common_error_handler("look the bucket name up")
def name_state(client, name: str) -> str:
    try:
        client.head_bucket(Bucket=name)
    except is_boto3_error_code(["404", "NoSuchBucket", "NotFound"]):
        return "free"
    except is_boto3_error_code(["403", "AccessDenied", "301", "PermanentRedirect", "400"]):
        return "taken"
    return "taken"


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"names": {"type": "list", "elements": "str", "required": True}},
        supports_check_mode=True,
    )
    client = module.client("s3", retry_decorator=AWSRetry.jittered_backoff())
    try:
        ours = own_bucket_names(client)
        buckets = [
            {"name": name, "state": "ours" if name in ours else name_state(client, name)}
            for name in module.params["names"]
        ]
    except AnsibleAWSError as error:
        module.fail_json_aws_error(error)
    module.exit_json(
        changed=False,
        buckets=buckets,
        taken=[bucket["name"] for bucket in buckets if bucket["state"] == "taken"],
    )


if __name__ == "__main__":
    main()

# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: the reserved concurrency of a Lambda function (amazon.aws.lambda lacks it)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lambda_reserved_concurrency
short_description: Set or remove the reserved concurrency of a Lambda function
description:
  - Sets the reserved concurrency of an existing AWS Lambda function, the number of instances of
    it that may run at once, or removes the reservation.
  - Reads the current value first and changes it only when it differs, so a second run reports
    no change. Check mode and diff mode are supported.
  - M(amazon.aws.lambda) manages the function itself but not this setting.
notes:
  - For the API see
    U(https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionConcurrency.html).
author:
  - Clickstream platform maintainers
options:
  function_name:
    description: The name or ARN of the function.
    type: str
    required: true
  reserved_concurrent_executions:
    description:
      - How many instances of the function may run at once. V(0) stops every invocation.
      - Required when O(state=present).
    type: int
  state:
    description:
      - V(present) sets the reservation, V(absent) removes it (the function then shares the
        account's unreserved concurrency).
    type: str
    choices: ["present", "absent"]
    default: present
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Let only one ETL run at a time
  lambda_reserved_concurrency:
    function_name: SBW_Lamda_ETL
    reserved_concurrent_executions: 1

- name: Remove the reservation
  lambda_reserved_concurrency:
    function_name: SBW_Lamda_ETL
    state: absent
"""

RETURN = r"""
reserved_concurrent_executions:
  description:
    - The reservation after the run (in check mode, the one that would be set); null when none.
  returned: always
  type: int
  sample: 1
"""

try:
    import botocore
except ImportError:
    botocore = None  # AnsibleAWSModule reports a missing boto3/botocore itself

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "function_name": {"type": "str", "required": True},
            "reserved_concurrent_executions": {"type": "int"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ["reserved_concurrent_executions"])],
        supports_check_mode=True,
    )
    client = module.client("lambda", retry_decorator=AWSRetry.jittered_backoff())
    name = module.params["function_name"]
    wanted = (
        module.params["reserved_concurrent_executions"]
        if module.params["state"] == "present"
        else None
    )
    try:
        current = client.get_function_concurrency(FunctionName=name, aws_retry=True).get(
            "ReservedConcurrentExecutions"
        )
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Failed to read the reserved concurrency of {name}")

    changed = current != wanted
    if changed and not module.check_mode:
        try:
            if wanted is None:
                client.delete_function_concurrency(FunctionName=name, aws_retry=True)
            else:
                client.put_function_concurrency(
                    FunctionName=name, ReservedConcurrentExecutions=wanted, aws_retry=True
                )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            module.fail_json_aws(e, msg=f"Failed to set the reserved concurrency of {name}")
    module.exit_json(
        changed=changed,
        reserved_concurrent_executions=wanted,
        diff={
            "before": {"reserved_concurrent_executions": current},
            "after": {"reserved_concurrent_executions": wanted},
        },
    )


if __name__ == "__main__":
    main()

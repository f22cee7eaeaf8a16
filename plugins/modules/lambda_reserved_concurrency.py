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
  - Before reserving, reads the account's Lambda settings (GetAccountSettings). AWS keeps at
    least 100 concurrent executions of the account unreserved, so on an account whose
    concurrency limit is low (new accounts start at 10 or 50) no reservation is possible. The
    module then sets nothing, warns, and returns C(skipped_reason) instead of failing.
  - When the settings cannot be read (no C(lambda:GetAccountSettings), or an emulator without
    the API), it tries the reservation and treats AWS's refusal ("below its minimum value") the
    same way.
  - M(amazon.aws.lambda) manages the function itself but not this setting.
notes:
  - For the API see
    U(https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionConcurrency.html) and
    U(https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html).
  - The caller needs C(lambda:GetFunctionConcurrency), C(lambda:PutFunctionConcurrency),
    C(lambda:DeleteFunctionConcurrency) and, for the account check, C(lambda:GetAccountSettings).
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
- name: Let only one ETL run at a time (skipped with a warning on a low-quota account)
  lambda_reserved_concurrency:
    function_name: clickstream-prod-etl
    reserved_concurrent_executions: 1
  register: etl_concurrency

- name: Say when the account was too small to reserve
  ansible.builtin.debug:
    msg: "{{ etl_concurrency.skipped_reason }}"
  when: etl_concurrency.skipped_reason

- name: Remove the reservation
  lambda_reserved_concurrency:
    function_name: clickstream-prod-etl
    state: absent
"""

RETURN = r"""
reserved_concurrent_executions:
  description:
    - The reservation after the run (in check mode, the one that would be set); null when none.
      When the reservation was skipped, the function's reservation as it was.
  returned: always
  type: int
  sample: 1
skipped_reason:
  description:
    - Why the reservation was not set (the account's concurrency limit leaves no room for it);
      null when it was not skipped. The same text is given as a warning.
  returned: always
  type: str
  sample: >-
    Reserved concurrency 1 for clickstream-prod-etl not set: the account's concurrency limit is
    10, so only 9 unreserved executions would remain, and AWS keeps at least 100 unreserved. ...
account_concurrency:
  description:
    - The account's Lambda concurrency as read before the change (GetAccountSettings'
      AccountLimit); null when not read (O(state=absent), no change needed, or not readable).
  returned: always
  type: dict
  contains:
    concurrent_executions:
      description: The account's concurrency limit in the region.
      type: int
    unreserved_concurrent_executions:
      description: What is left of it after every function's reservation.
      type: int
  sample: {"concurrent_executions": 1000, "unreserved_concurrent_executions": 999}
account_settings_error:
  description: Why the account's settings could not be read, when they could not.
  returned: when the settings were needed and not readable
  type: str
  sample: "Failed to read the account's Lambda settings: An error occurred (404) ..."
"""

from dataclasses import asdict

from ansible.module_utils.lambda_concurrency import (
    BELOW_MINIMUM_REFUSAL,
    AccountConcurrency,
    plan_reservation,
    skipped_reason,
)
from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_message
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry


class LambdaErrorHandler(AWSErrorHandler):
    pass


@LambdaErrorHandler.common_error_handler("read the function's reserved concurrency")
def read_reservation(client, name: str) -> int | None:
    response = client.get_function_concurrency(FunctionName=name, aws_retry=True)
    return response.get("ReservedConcurrentExecutions")


@LambdaErrorHandler.common_error_handler("read the account's Lambda settings")
def read_account_concurrency(client) -> AccountConcurrency:
    return AccountConcurrency.from_account_settings(client.get_account_settings(aws_retry=True))


@LambdaErrorHandler.common_error_handler("reserve concurrency for the function")
def put_reservation(client, name: str, wanted: int) -> bool:
    """True when set; False when AWS refused it for the account's unreserved minimum."""
    try:
        client.put_function_concurrency(
            FunctionName=name, ReservedConcurrentExecutions=wanted, aws_retry=True
        )
    except is_boto3_error_message(BELOW_MINIMUM_REFUSAL):
        return False
    return True


@LambdaErrorHandler.common_error_handler("remove the function's reserved concurrency")
def delete_reservation(client, name: str) -> None:
    client.delete_function_concurrency(FunctionName=name, aws_retry=True)


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
    extra = {}
    account = None
    try:
        current = read_reservation(client, name)
        if wanted is not None and current != wanted:
            try:
                account = read_account_concurrency(client)
            except AnsibleAWSError as error:
                # Decided by PutFunctionConcurrency's answer instead (see DOCUMENTATION).
                extra["account_settings_error"] = f"{error.message}: {error.exception}"
        plan = plan_reservation(name, current, wanted, account)
        reason = plan.skipped_reason
        if not module.check_mode:
            if plan.action == "delete":
                delete_reservation(client, name)
            elif plan.action == "put" and not put_reservation(client, name, wanted):
                reason = skipped_reason(
                    name, wanted, "AWS refused it: the account's concurrency limit is too low"
                )
    except AnsibleAWSError as error:
        module.fail_json_aws_error(error)

    if reason:
        module.warn(reason)
    after = current if reason else wanted
    module.exit_json(
        changed=after != current,
        reserved_concurrent_executions=after,
        skipped_reason=reason,
        account_concurrency=asdict(account) if account else None,
        diff={
            "before": {"reserved_concurrent_executions": current},
            "after": {"reserved_concurrent_executions": after},
        },
        **extra,
    )


if __name__ == "__main__":
    main()

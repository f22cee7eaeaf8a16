# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: one AWS Service Quotas value (no maintained module reads them)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: service_quota_info
short_description: Read one AWS service quota of the account
description:
  - Reads the value of one quota from AWS Service Quotas, the one applied to the account
    (GetServiceQuota), and where the account has none recorded, AWS's default
    (GetAWSDefaultServiceQuota).
  - Never fails on a quota it cannot read; it returns O(quota) null and C(unavailable_reason), so
    that a preflight can report what it could not check. Read-only, check mode is supported.
notes:
  - Quota codes are listed by C(aws service-quotas list-aws-default-service-quotas
    --service-code vpc); for example C(vpc)/C(L-F678F1CE) VPCs per Region,
    C(vpc)/C(L-29B6F2EB) interface VPC endpoints per VPC, C(lambda)/C(L-B99A9384) concurrent
    executions.
  - The caller needs C(servicequotas:GetServiceQuota) and
    C(servicequotas:GetAWSDefaultServiceQuota).
author:
  - Clickstream platform maintainers
options:
  service_code:
    description: The service's code in Service Quotas, such as V(vpc) or V(lambda).
    type: str
    required: true
  quota_code:
    description: The quota's code, such as V(L-F678F1CE).
    type: str
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read how many VPCs the region allows
  service_quota_info:
    service_code: vpc
    quota_code: L-F678F1CE
  register: vpc_quota
"""

RETURN = r"""
quota:
  description: The quota, or null when neither the applied nor the default value was readable.
  returned: always
  type: dict
  contains:
    name:
      description: The quota's name.
      type: str
    value:
      description: Its value.
      type: float
    adjustable:
      description: Whether an increase can be requested.
      type: bool
    source:
      description: V(applied) (the account's) or V(default) (AWS's default).
      type: str
  sample: {"name": "VPCs per Region", "value": 5.0, "adjustable": true, "source": "applied"}
unavailable_reason:
  description: Why the quota could not be read.
  returned: when O(quota) is null
  type: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry


class ServiceQuotasErrorHandler(AWSErrorHandler):
    pass


def quota_result(quota: dict, source: str) -> dict:
    return {
        "name": quota.get("QuotaName"),
        "value": quota.get("Value"),
        "adjustable": quota.get("Adjustable"),
        "source": source,
    }


@ServiceQuotasErrorHandler.common_error_handler("read the account's applied quota")
def applied_quota(client, service_code: str, quota_code: str) -> dict:
    return client.get_service_quota(ServiceCode=service_code, QuotaCode=quota_code, aws_retry=True)


@ServiceQuotasErrorHandler.common_error_handler("read AWS's default quota")
def default_quota(client, service_code: str, quota_code: str) -> dict:
    return client.get_aws_default_service_quota(
        ServiceCode=service_code, QuotaCode=quota_code, aws_retry=True
    )


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "service_code": {"type": "str", "required": True},
            "quota_code": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    client = module.client("service-quotas", retry_decorator=AWSRetry.jittered_backoff())
    service_code, quota_code = module.params["service_code"], module.params["quota_code"]
    reasons = []
    for reader, source in ((applied_quota, "applied"), (default_quota, "default")):
        try:
            quota = reader(client, service_code, quota_code)["Quota"]
        except AnsibleAWSError as error:
            reasons.append(f"{error.message}: {error.exception}")
            continue
        module.exit_json(changed=False, quota=quota_result(quota, source))
    module.exit_json(
        changed=False,
        quota=None,
        unavailable_reason=f"{service_code}/{quota_code}: " + "; ".join(reasons),
    )


if __name__ == "__main__":
    main()

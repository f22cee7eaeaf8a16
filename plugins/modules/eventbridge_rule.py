# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: an EventBridge rule with targets that carry a retry policy and a dead-letter
queue, which amazon.aws.cloudwatchevent_rule cannot set (and would undo: it re-puts any target
whose settings it does not know)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: eventbridge_rule
short_description: Manage an EventBridge rule and its targets, with retry policies and DLQs
description:
  - Create, update, disable or delete an Amazon EventBridge rule on the default event bus, and
    its targets, each with an optional retry policy and dead-letter queue.
  - Reads the rule and its targets first and changes only what differs, so a second run reports
    no change. Check mode and diff mode are supported.
notes:
  - M(amazon.aws.cloudwatchevent_rule) has no retry policy or dead-letter queue for targets.
  - A target's O(targets.retry_policy), O(targets.dead_letter_arn) and O(targets.input) are
    compared only when set; unset, they are left as they are.
  - The target also needs a resource policy that lets EventBridge invoke it, for a Lambda function
    for example with M(amazon.aws.lambda_policy); a dead-letter queue needs a queue policy that
    lets C(events.amazonaws.com) send to it.
  - For the API see U(https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutTargets.html).
author:
  - Clickstream platform maintainers
options:
  name:
    description: The name of the rule.
    type: str
    required: true
  state:
    description:
      - V(present) makes the rule exist and enabled, V(disabled) exist and disabled, V(absent)
        deletes it with its targets.
    type: str
    choices: ["present", "disabled", "absent"]
    default: present
  description:
    description: The description of the rule.
    type: str
  schedule_expression:
    description: A C(rate(...)) or C(cron(...)) expression, for example C(rate(1 hour)).
    type: str
  event_pattern:
    description: An event pattern, as a JSON document.
    type: json
  targets:
    description:
      - The targets of the rule. Leave unset to leave the targets alone.
    type: list
    elements: dict
    suboptions:
      id:
        description: The target's id, unique within the rule.
        type: str
        required: true
      arn:
        description: The ARN of the target, for example a Lambda function's.
        type: str
        required: true
      input:
        description: A constant JSON text passed to the target instead of the event.
        type: str
      retry_policy:
        description: How often and for how long EventBridge retries a failed delivery.
        type: dict
        suboptions:
          maximum_retry_attempts:
            description: Retries before giving up, 0 to 185.
            type: int
          maximum_event_age_in_seconds:
            description: How long an event may wait for delivery, 60 to 86400 seconds.
            type: int
      dead_letter_arn:
        description: The ARN of the SQS queue that receives events that could not be delivered.
        type: str
  purge_targets:
    description: Whether targets of the rule that O(targets) does not list are removed.
    type: bool
    default: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.tags
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Run the ETL every hour, retrying and dead-lettering failed deliveries
  eventbridge_rule:
    name: clickstream-prod-etl-hourly
    schedule_expression: rate(1 hour)
    description: Hourly run of Lambda ETL
    targets:
      - id: etl
        arn: "{{ etl_function_arn }}"
        retry_policy:
          maximum_retry_attempts: 4
          maximum_event_age_in_seconds: 3600
        dead_letter_arn: "{{ etl_dead_letter_queue_arn }}"
    tags:
      Project: clickstream

- name: Delete the rule and its targets
  eventbridge_rule:
    name: clickstream-prod-etl-hourly
    state: absent
"""

RETURN = r"""
rule:
  description: The rule after the run (in check mode, as it is); empty when absent.
  returned: always
  type: dict
  sample:
    name: clickstream-prod-etl-hourly
    schedule_expression: rate(1 hour)
    state: ENABLED
targets:
  description: The rule's targets after the run (in check mode, as they are).
  returned: always
  type: list
  elements: dict
  sample:
    - id: etl
      arn: arn:aws:lambda:ap-southeast-1:123456789012:function:clickstream-prod-etl
      retry_policy: {"maximum_retry_attempts": 4, "maximum_event_age_in_seconds": 3600}
      dead_letter_config:
        arn: arn:aws:sqs:ap-southeast-1:123456789012:clickstream-prod-etl-dlq
"""

import json
from typing import Any

try:
    import botocore
except ImportError:
    botocore = None  # AnsibleAWSModule reports a missing boto3/botocore itself

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict
from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import (
    ansible_dict_to_boto3_tag_list,
    boto3_tag_list_to_ansible_dict,
    compare_aws_tags,
)

AWS_ERRORS = (
    (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) if botocore else ()
)
RULE_FIELDS = ("ScheduleExpression", "EventPattern", "Description", "State")


def target_request(option: dict[str, Any]) -> dict[str, Any]:
    """One target as PutTargets takes it, from the module's suboptions."""
    request: dict[str, Any] = {"Id": option["id"], "Arn": option["arn"]}
    if option.get("input") is not None:
        request["Input"] = option["input"]
    retry = option.get("retry_policy") or {}
    policy = {
        key: retry[name]
        for name, key in (
            ("maximum_retry_attempts", "MaximumRetryAttempts"),
            ("maximum_event_age_in_seconds", "MaximumEventAgeInSeconds"),
        )
        if retry.get(name) is not None
    }
    if policy:
        request["RetryPolicy"] = policy
    if option.get("dead_letter_arn"):
        request["DeadLetterConfig"] = {"Arn": option["dead_letter_arn"]}
    return request


def target_matches(current: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether the service's target already has every setting the request sets."""
    if current is None:
        return False
    if "Input" in wanted and _json_or_text(current.get("Input")) != _json_or_text(wanted["Input"]):
        return False
    return all(current.get(key) == value for key, value in wanted.items() if key != "Input")


def _json_or_text(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


def rule_request(params: dict[str, Any]) -> dict[str, Any]:
    request = {
        "Name": params["name"],
        "State": "DISABLED" if params["state"] == "disabled" else "ENABLED",
    }
    if params.get("schedule_expression"):
        request["ScheduleExpression"] = params["schedule_expression"]
    if params.get("event_pattern"):
        request["EventPattern"] = params["event_pattern"]
    if params.get("description") is not None:
        request["Description"] = params["description"]
    return request


def rule_differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for field in RULE_FIELDS:
        if field not in wanted:
            continue
        if field == "EventPattern":
            if _json_or_text(current.get(field)) != _json_or_text(wanted[field]):
                return True
        elif current.get(field) != wanted[field]:
            return True
    return False


class EventBridgeRule:
    def __init__(self, module: AnsibleAWSModule):
        self.module = module
        self.client = module.client("events", retry_decorator=AWSRetry.jittered_backoff())
        self.name = module.params["name"]

    def call(self, what: str, method, **kwargs):
        try:
            return method(aws_retry=True, **kwargs)
        except AWS_ERRORS as e:
            self.module.fail_json_aws(e, msg=f"Failed to {what} of rule {self.name}")

    def describe(self) -> dict[str, Any] | None:
        try:
            rule = self.client.describe_rule(Name=self.name, aws_retry=True)
        except is_boto3_error_code("ResourceNotFoundException"):
            return None
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            self.module.fail_json_aws(e, msg=f"Failed to describe rule {self.name}")
        rule.pop("ResponseMetadata", None)
        return rule

    def targets(self) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_targets_by_rule")
        try:
            return pages.paginate(Rule=self.name).build_full_result()["Targets"]
        except AWS_ERRORS as e:
            self.module.fail_json_aws(e, msg=f"Failed to list the targets of rule {self.name}")

    def tags(self, arn: str) -> dict[str, str]:
        response = self.call("list the tags", self.client.list_tags_for_resource, ResourceARN=arn)
        return boto3_tag_list_to_ansible_dict(response.get("Tags", []))


def view(rule: dict[str, Any] | None, targets: list[dict[str, Any]], tags: dict | None) -> dict:
    if not rule:
        return {"rule": {}, "targets": []}
    shown = camel_dict_to_snake_dict(rule)
    if tags is not None:
        shown["tags"] = tags
    return {"rule": shown, "targets": [camel_dict_to_snake_dict(t) for t in targets]}


def ensure_absent(module: AnsibleAWSModule, rule: EventBridgeRule) -> None:
    current = rule.describe()
    if current is None:
        module.exit_json(changed=False, rule={}, targets=[])
    targets = rule.targets()
    if not module.check_mode:
        if targets:
            rule.call(
                "remove the targets",
                rule.client.remove_targets,
                Rule=rule.name,
                Ids=[t["Id"] for t in targets],
            )
        rule.call("delete", rule.client.delete_rule, Name=rule.name)
    module.exit_json(
        changed=True,
        rule={},
        targets=[],
        diff={"before": view(current, targets, None), "after": {"rule": {}, "targets": []}},
    )


def ensure_present(module: AnsibleAWSModule, rule: EventBridgeRule) -> None:
    params = module.params
    current = rule.describe()
    current_targets = rule.targets() if current else []
    current_tags = rule.tags(current["Arn"]) if current else {}
    wanted_rule = rule_request(params)
    wanted_tags = params.get("tags")

    put_rule = current is None or rule_differs(current, wanted_rule)
    by_id = {t["Id"]: t for t in current_targets}
    wanted_targets = [target_request(t) for t in params["targets"] or []]
    to_put = [t for t in wanted_targets if not target_matches(by_id.get(t["Id"]), t)]
    to_remove = []
    if params["targets"] is not None and params["purge_targets"]:
        wanted_ids = {t["Id"] for t in wanted_targets}
        to_remove = [t["Id"] for t in current_targets if t["Id"] not in wanted_ids]
    tags_to_set, tags_to_unset = {}, []
    if current is not None and wanted_tags is not None:
        tags_to_set, tags_to_unset = compare_aws_tags(
            current_tags, wanted_tags, purge_tags=params["purge_tags"]
        )
    changed = bool(put_rule or to_put or to_remove or tags_to_set or tags_to_unset)

    if changed and not module.check_mode:
        if put_rule:
            request = dict(wanted_rule)
            if current is None and wanted_tags:
                request["Tags"] = ansible_dict_to_boto3_tag_list(wanted_tags)
            rule.call("create or update", rule.client.put_rule, **request)
        if to_remove:
            rule.call("remove targets", rule.client.remove_targets, Rule=rule.name, Ids=to_remove)
        if to_put:
            response = rule.call(
                "put targets", rule.client.put_targets, Rule=rule.name, Targets=to_put
            )
            if response.get("FailedEntryCount"):
                module.fail_json(
                    msg=f"Failed to put targets of rule {rule.name}",
                    failed_entries=response.get("FailedEntries"),
                )
        arn = (current or rule.describe())["Arn"]
        if tags_to_set:
            rule.call(
                "tag",
                rule.client.tag_resource,
                ResourceARN=arn,
                Tags=ansible_dict_to_boto3_tag_list(tags_to_set),
            )
        if tags_to_unset:
            rule.call("untag", rule.client.untag_resource, ResourceARN=arn, TagKeys=tags_to_unset)

    before = view(current, current_targets, current_tags if current else None)
    if module.check_mode:
        after_rule, after_targets, after_tags = current, current_targets, current_tags
    else:
        after_rule = rule.describe()
        after_targets = rule.targets()
        after_tags = rule.tags(after_rule["Arn"])
    result = view(after_rule, after_targets, after_tags)
    expected_targets = {t["Id"]: t for t in current_targets if t["Id"] not in to_remove}
    for target in to_put:
        expected_targets[target["Id"]] = {**expected_targets.get(target["Id"], {}), **target}
    expected_tags = {k: v for k, v in current_tags.items() if k not in tags_to_unset}
    expected = view(
        {**(current or {}), **wanted_rule},
        list(expected_targets.values()),
        {**expected_tags, **tags_to_set} if current else (wanted_tags or {}),
    )
    module.exit_json(changed=changed, **result, diff={"before": before, "after": expected})


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {
                "type": "str",
                "choices": ["present", "disabled", "absent"],
                "default": "present",
            },
            "description": {"type": "str"},
            "schedule_expression": {"type": "str"},
            "event_pattern": {"type": "json"},
            "targets": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "id": {"type": "str", "required": True},
                    "arn": {"type": "str", "required": True},
                    "input": {"type": "str"},
                    "retry_policy": {
                        "type": "dict",
                        "options": {
                            "maximum_retry_attempts": {"type": "int"},
                            "maximum_event_age_in_seconds": {"type": "int"},
                        },
                    },
                    "dead_letter_arn": {"type": "str"},
                },
            },
            "purge_targets": {"type": "bool", "default": True},
            "tags": {"type": "dict", "aliases": ["resource_tags"]},
            "purge_tags": {"type": "bool", "default": True},
        },
        required_if=[
            ("state", "present", ["schedule_expression", "event_pattern"], True),
            ("state", "disabled", ["schedule_expression", "event_pattern"], True),
        ],
        supports_check_mode=True,
    )
    rule = EventBridgeRule(module)
    if module.params["state"] == "absent":
        ensure_absent(module, rule)
    else:
        ensure_present(module, rule)


if __name__ == "__main__":
    main()

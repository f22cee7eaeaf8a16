# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: remove one person's events from the raw clickstream objects in S3."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: clickstream_erase_raw
short_description: Remove one person's events from the raw clickstream objects in S3
description:
  - The raw half of an erasure ("right to be forgotten"); C(playbooks/erase_user.yml) runs it on
    the hours the warehouse names, then erases the person from the warehouse.
  - Reads every raw object under C(events/YYYY/MM/DD/HH/) of the given O(hours) (and of the
    O(start)..O(end) window), and rewrites each object that holds a line of the person, under the
    same key and content type, with that line emptied; the other lines keep their bytes and line
    numbers. An object left with no line is deleted.
  - A line is the person's when its event's identity field (C(userId)/C(clientId) in the
    tracker's shape, C(user_id)/C(client_id) in the warehouse's) is the identifier, or, for a line
    that is no raw record, when it holds the identifier as a JSON string; the warehouse's
    C(erase_person) applies the same rule to rejected lines.
  - In a versioned bucket every older version of a rewritten object is deleted, and so is any
    older version (an expired object's, an interrupted run's) that still holds the person.
  - A second run finds nothing and reports C(changed=false). In check mode it reads everything,
    writes nothing, and reports what a run would do.
author:
  - Clickstream platform maintainers
options:
  bucket:
    description:
      - The raw bucket.
    type: str
    required: true
  user_id:
    description:
      - Erase the events of this user id. Exactly one of O(user_id) and O(client_id).
    type: str
  client_id:
    description:
      - Erase the events of this client (browser) id.
    type: str
  hours:
    description:
      - The hour partitions to rewrite, ISO-8601 hours (V(2025-12-01T10)); UTC unless they carry
        an offset. The warehouse's C(person_raw_hours) names them.
    type: list
    elements: str
    default: []
  start:
    description:
      - With O(end), a window of hours to scan as well, in the same form as O(hours), for copies
        of the person's events the warehouse does not know of (a retried request received in
        another hour).
    type: str
  end:
    description:
      - The last hour of the window, inclusive.
    type: str
  max_window_hours:
    description:
      - A larger window is refused; a guard against a typo scanning a year.
    type: int
    default: 744
  library_path:
    description:
      - A folder to import the platform's C(clickstream) Python package from (C(lambda_src) of
        the repository), when the Python that runs the module does not have it already.
    type: path
notes:
  - The identifier is a module option with C(no_log), so Ansible masks it in every result and log.
  - Needs C(s3:ListBucketVersions), C(s3:GetObject), C(s3:GetObjectVersion), C(s3:PutObject),
    C(s3:DeleteObject) and C(s3:DeleteObjectVersion) on the raw bucket.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Remove a user's events from the raw objects of the hours the warehouse found
  clickstream_erase_raw:
    bucket: clickstream-prod-raw-123456789012-ap-southeast-1
    user_id: "{{ user_id }}"
    hours: ["2025-12-01T09", "2025-12-03T20"]
    library_path: "{{ playbook_dir }}/../lambda_src"

- name: Also scan a week for copies the warehouse does not know of
  clickstream_erase_raw:
    bucket: clickstream-prod-raw-123456789012-ap-southeast-1
    client_id: "{{ client_id }}"
    start: "2025-12-01T00"
    end: "2025-12-07T23"
    library_path: "{{ playbook_dir }}/../lambda_src"
"""

RETURN = r"""
hours:
  description: The hour partitions scanned, in order.
  returned: always
  type: list
  elements: str
  sample: ["2025-12-01T09:00:00+00:00"]
objects_scanned:
  description: The objects found in those hours.
  returned: always
  type: int
  sample: 120
objects_rewritten:
  description: Objects written again without the person's lines.
  returned: always
  type: int
  sample: 3
objects_deleted:
  description: Objects that held only the person's lines, deleted with all their versions.
  returned: always
  type: int
  sample: 1
versions_deleted:
  description: Versions other than the current one (older versions, delete markers) deleted.
  returned: always
  type: int
  sample: 4
lines_removed:
  description: The person's lines removed from the current versions.
  returned: always
  type: int
  sample: 17
objects:
  description: Each object changed, with what was done to it.
  returned: always
  type: list
  elements: dict
  sample:
    - {"key": "events/2025/12/01/09/events-4f1c.json", "action": "rewritten", "lines_removed": 5,
       "versions_deleted": 1}
"""

import sys
from typing import Any

try:
    import botocore
    from botocore.config import Config
except ImportError:
    pass  # AnsibleAWSModule reports the missing botocore

from ansible.module_utils.clickstream_backfill import BackfillError, parse_hour, window_hours
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

READ_CONCURRENCY = 16


def build_argument_spec() -> dict[str, Any]:
    return {
        "bucket": {"type": "str", "required": True},
        # The point of an erasure is to forget the identifier: masked wherever it would show.
        "user_id": {"type": "str", "no_log": True},
        "client_id": {"type": "str", "no_log": True},
        "hours": {"type": "list", "elements": "str", "default": []},
        "start": {"type": "str"},
        "end": {"type": "str"},
        "max_window_hours": {"type": "int", "default": 744},
        "library_path": {"type": "path"},
    }


def import_erasure(library_path: str | None):
    if library_path:
        sys.path.insert(0, library_path)
    try:
        from clickstream import erasure
    except ImportError as error:
        raise BackfillError(
            f"cannot import the platform's clickstream package "
            f"{'from ' + library_path if library_path else '(give library_path)'}: {error}"
        ) from error
    return erasure


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=build_argument_spec(),
        mutually_exclusive=[("user_id", "client_id")],
        required_one_of=[("user_id", "client_id")],
        required_together=[("start", "end")],
        supports_check_mode=True,
    )
    params = module.params
    key_kind = "user_id" if params["user_id"] is not None else "client_id"
    try:
        erasure = import_erasure(params["library_path"])
        person = erasure.Person(key_kind, params[key_kind])
        hours = [parse_hour(hour, "hours") for hour in params["hours"]]
        if params["start"] is not None:
            start, end = parse_hour(params["start"], "start"), parse_hour(params["end"], "end")
            hours += window_hours(start, end, params["max_window_hours"])
    except (BackfillError, ValueError) as error:
        module.fail_json(msg=str(error))

    s3 = module.client("s3", config=Config(max_pool_connections=READ_CONCURRENCY))
    try:
        report = erasure.erase_raw_objects(
            s3,
            params["bucket"],
            erasure.hours_to_scan(hours),
            person,
            dry_run=module.check_mode,
            concurrency=READ_CONCURRENCY,
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        module.fail_json_aws(
            error,
            msg=(
                f"removing the person's lines from the raw objects of {params['bucket']} failed; "
                "objects done so far stay done, run again to finish"
            ),
        )
    module.exit_json(**report.as_dict())


if __name__ == "__main__":
    main()

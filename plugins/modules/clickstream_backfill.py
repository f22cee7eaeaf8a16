# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: load a window of raw clickstream hour partitions into the warehouse."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: clickstream_backfill
short_description: Backfill a window of raw clickstream hours from S3 into the warehouse
description:
  - Loads the raw objects under C(events/YYYY/MM/DD/HH/) of the raw bucket, for every hour from
    O(start) to O(end), into the clickstream warehouse, in order, O(chunk_hours) at a time.
  - Runs on the controller and invokes the ETL Lambda's window run for each chunk,
    synchronously. The load is the platform's one load implementation, running in the function
    with the function's own access to the raw bucket and the warehouse. A chunk must load within
    the function's 15-minute limit; lower O(chunk_hours) for large hours.
  - Objects already in the warehouse's load ledger are skipped, so a second run of a window
    changes nothing, unless O(force=true), which reloads them without duplicating any event (rows
    whose mapping changed are rewritten).
  - In check mode it reports, per hour, the objects found and how many are loaded already, and
    changes nothing.
  - Stops at the first chunk that fails and returns C(resume_from), the hour to start again from.
  - A module returns when it is done, so it cannot show each chunk as it loads; with
    O(split_only=true) it returns the window's chunks instead, for a playbook to loop over them,
    a chunk per item, showing each one's figures (RV(msg)) as it loads; C(playbooks/backfill.yml)
    does.
  - An invocation that Lambda throttles with C(TooManyRequestsException), because the function's
    reserved concurrency is taken (by the hourly run, usually), is tried again after an
    exponential backoff with full jitter, at most O(throttle_retries) times; the retries are
    counted per chunk and in
    the totals. A run the function itself skips because another run holds the warehouse's lock
    is tried again after O(lock_retry_delay), at most O(lock_retries) times.
author:
  - Clickstream platform maintainers
options:
  start:
    description:
      - The first hour of the window, ISO-8601 (V(2025-12-01T00) names an hour); UTC unless it
        carries an offset. Minutes and seconds are dropped.
    type: str
    required: true
  end:
    description:
      - The last hour of the window, inclusive, in the same form as O(start).
    type: str
    required: true
  force:
    description:
      - Reload objects that the load ledger already holds.
    type: bool
    default: false
  chunk_hours:
    description:
      - How many hours each invocation of the function loads.
    type: int
    default: 1
  max_window_hours:
    description:
      - A larger window is refused; a guard against a typo loading a year.
    type: int
    default: 744
  split_only:
    description:
      - Check the window and return its chunks (RV(chunks)), without invoking the function.
    type: bool
    default: false
  function_name:
    description:
      - The ETL function, by name or ARN.
    type: str
    default: clickstream-prod-etl
  lock_retries:
    description:
      - How many times to wait and try a chunk again when another ETL run holds the warehouse's
        run lock (the hourly run, usually).
    type: int
    default: 5
  lock_retry_delay:
    description:
      - Seconds to wait before trying a locked chunk again.
    type: int
    default: 30
  throttle_retries:
    description:
      - How many times to invoke again when Lambda throttles an invocation. V(0) fails at the
        first throttle.
    type: int
    default: 10
  throttle_base_delay:
    description:
      - Seconds of the first backoff; each retry doubles it, and each wait is a random time up
        to that (full jitter).
    type: float
    default: 1.0
  throttle_max_delay:
    description:
      - The most seconds any one backoff waits. With the defaults, a backfill waits at most about
        five minutes for a throttled invocation before it fails.
    type: float
    default: 60.0
notes:
  - The hourly ETL keeps running during a backfill; the two take turns on the warehouse's run lock,
    and, where the function has a reserved concurrency of 1, on the function itself (the backfill
    retries the throttled invocations).
  - The caller needs C(lambda:InvokeFunction) on the function.
  - Rollups and sessions of the loaded hours are refreshed by each load. To rebuild them for a
    range without loading, see C(playbooks/refresh_rollups.yml).
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Backfill the first week of December through the ETL function
  clickstream_backfill:
    start: "2025-12-01T00"
    end: "2025-12-07T23"

- name: Reload a day after a fix of the field mapping
  clickstream_backfill:
    start: "2025-12-03T00"
    end: "2025-12-03T23"
    force: true

- name: Backfill a month, a day per invocation
  clickstream_backfill:
    function_name: clickstream-prod-etl
    start: "2025-11-01T00"
    end: "2025-11-30T23"
    chunk_hours: 24

- name: Split a week into days
  clickstream_backfill:
    start: "2025-12-01T00"
    end: "2025-12-07T23"
    chunk_hours: 24
    split_only: true
  register: week

- name: Backfill the week a day at a time, each day's figures shown as it loads
  clickstream_backfill:
    start: "{{ item.start }}"
    end: "{{ item.end }}"
    chunk_hours: 24
  loop: "{{ week.chunks }}"
  register: day
  loop_control:
    label: "{{ day.msg }}"
"""

RETURN = r"""
msg:
  description:
    - What the run did, as one line. Loading, the counts and the seconds it took; in check mode,
      the objects found, loaded already and to load; with O(split_only), the chunks.
  returned: always
  type: str
  sample: "2025-12-01T00: 2 objects, 740 events loaded, 0 updated, 0 duplicates, 1 rejected, 0.4 s"
window:
  description: The window as understood.
  returned: always
  type: dict
  sample: {"start": "2025-12-01T00", "end": "2025-12-07T23", "hours": 168}
chunks:
  description: The window's chunks, in order, each the first and last hour it loads.
  returned: when O(split_only=true)
  type: list
  elements: dict
  sample: [{"start": "2025-12-01T00", "end": "2025-12-01T23"}]
hours:
  description: In check mode, per hour, the objects found, already loaded, and to load.
  returned: check mode
  type: list
  elements: dict
  sample: [{"hour": "2025-12-01T00:00:00+00:00", "objects": 12, "loaded": 10, "to_load": 2}]
results:
  description: Per chunk, in order, what the load did.
  returned: when not in check mode and not O(split_only)
  type: list
  elements: dict
  sample:
    - {"start": "2025-12-01T00", "end": "2025-12-01T00", "status": "succeeded", "objects": 2,
       "events_loaded": 740, "events_updated": 0, "duplicates_skipped": 0, "rejected_lines": 1,
       "missing_objects": 0, "duration_seconds": 0.4, "throttle_retries": 2,
       "lock_retries": 0}
totals:
  description: The sums over all chunks (or over all hours in check mode).
  returned: when not O(split_only)
  type: dict
  sample: {"chunks": 168, "objects": 2016, "events_loaded": 1000000, "events_updated": 0,
           "duplicates_skipped": 12, "rejected_lines": 3, "missing_objects": 0,
           "throttle_retries": 2, "lock_retries": 0}
throttle_retries:
  description: Every throttle retry of the run, the failed chunk's and the planning's included.
  returned: when not O(split_only)
  type: int
  sample: 2
resume_from:
  description: When a chunk failed, the hour to give as O(start) to resume.
  returned: failure
  type: str
  sample: "2025-12-04T13"
"""

import json
import time
from typing import Any

try:
    import botocore
    from botocore.config import Config
except ImportError:
    pass  # AnsibleAWSModule reports the missing botocore

from ansible.module_utils.clickstream_backfill import (
    MAX_WINDOW_HOURS,
    BackfillError,
    chunk_result,
    chunks,
    hour_text,
    invocation_result,
    loaded_line,
    parse_hour,
    plan_totals,
    planned_line,
    require_succeeded,
    span_text,
    throttle_delay,
    throttled_through,
    totals,
    window_hours,
    window_request,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

# A synchronous invocation may take the function's whole 15 minutes; never retry one blindly:
# one attempt per call (botocore's own retries would retry throttles unseen), throttles retried
# and counted here.
LAMBDA_INVOKE_CONFIG = {
    "read_timeout": 960,
    "connect_timeout": 10,
    "retries": {"mode": "standard", "total_max_attempts": 1},
}
THROTTLED = "TooManyRequestsException"


def build_argument_spec() -> dict[str, Any]:
    return {
        "start": {"type": "str", "required": True},
        "end": {"type": "str", "required": True},
        "force": {"type": "bool", "default": False},
        "chunk_hours": {"type": "int", "default": 1},
        "max_window_hours": {"type": "int", "default": MAX_WINDOW_HOURS},
        "split_only": {"type": "bool", "default": False},
        "function_name": {"type": "str", "default": "clickstream-prod-etl"},
        "lock_retries": {"type": "int", "default": 5},
        "lock_retry_delay": {"type": "int", "default": 30},
        "throttle_retries": {"type": "int", "default": 10},
        "throttle_base_delay": {"type": "float", "default": 1.0},
        "throttle_max_delay": {"type": "float", "default": 60.0},
    }


class LambdaLoader:
    """Each chunk is one synchronous window invocation of the ETL function."""

    def __init__(self, module: AnsibleAWSModule) -> None:
        self.function_name = module.params["function_name"]
        self.client = module.client("lambda", config=Config(**LAMBDA_INVOKE_CONFIG))
        self.throttle_retries = module.params["throttle_retries"]
        self.throttle_base_delay = module.params["throttle_base_delay"]
        self.throttle_max_delay = module.params["throttle_max_delay"]
        # Every throttle retry so far, for the chunks' counts and the result's total.
        self.throttled = 0

    def _invoke(self, request: dict[str, Any]) -> dict[str, Any]:
        waited = 0.0
        for retry in range(self.throttle_retries + 1):
            try:
                response = self.client.invoke(
                    FunctionName=self.function_name,
                    InvocationType="RequestResponse",
                    Payload=json.dumps(request).encode("utf-8"),
                )
                break
            except botocore.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") != THROTTLED:
                    raise BackfillError(f"invoking {self.function_name} failed: {error}") from error
                if retry == self.throttle_retries:
                    raise BackfillError(
                        throttled_through(self.function_name, retry, waited)
                    ) from error
            except botocore.exceptions.BotoCoreError as error:
                raise BackfillError(f"invoking {self.function_name} failed: {error}") from error
            delay = throttle_delay(retry, self.throttle_base_delay, self.throttle_max_delay)
            time.sleep(delay)
            waited += delay
            self.throttled += 1
        return invocation_result(response.get("FunctionError"), response["Payload"].read())

    def plan(self, first, last, force: bool) -> list[dict[str, Any]]:
        return self._invoke(window_request(first, last, force, dry_run=True))["hours"]

    def load(self, first, last, force: bool) -> dict[str, Any]:
        return self._invoke(window_request(first, last, force))


def load_chunk(module, loader, first, last) -> dict[str, Any]:
    """Load one chunk, waiting while another run holds the lock; BackfillError when it fails."""
    params = module.params
    throttled_before = loader.throttled
    for attempt in range(params["lock_retries"] + 1):
        report = loader.load(first, last, params["force"])
        if report.get("status") != "skipped":
            break
        if attempt < params["lock_retries"]:
            time.sleep(params["lock_retry_delay"])
    else:
        raise BackfillError(
            f"another ETL run held the warehouse lock through {params['lock_retries']} retries"
        )
    throttle_retries = loader.throttled - throttled_before
    return chunk_result(
        first,
        last,
        require_succeeded(report),
        throttle_retries=throttle_retries,
        lock_retries=attempt,
    )


def main() -> None:
    module = AnsibleAWSModule(argument_spec=build_argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        first = parse_hour(params["start"], "start")
        last = parse_hour(params["end"], "end")
        hours = window_hours(first, last, params["max_window_hours"])
        windows = chunks(hours, params["chunk_hours"])
    except BackfillError as error:
        module.fail_json(msg=str(error))
    window = {"start": hour_text(first), "end": hour_text(last), "hours": len(hours)}
    span = span_text(first, last)

    if params["split_only"]:
        module.exit_json(
            changed=False,
            msg=f"{span}: {len(hours)} hours in {len(windows)} chunks",
            window=window,
            chunks=[{"start": hour_text(a), "end": hour_text(b)} for a, b in windows],
        )
    loader = LambdaLoader(module)

    if module.check_mode:
        try:
            planned = [hour for a, b in windows for hour in loader.plan(a, b, params["force"])]
        except BackfillError as error:
            module.fail_json(
                msg=f"planning the backfill failed: {error}",
                window=window,
                throttle_retries=loader.throttled,
            )
        summary = plan_totals(planned)
        module.exit_json(
            changed=summary["to_load"] > 0,
            msg=planned_line(span, summary),
            window=window,
            hours=planned,
            totals=summary,
            throttle_retries=loader.throttled,
        )

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    for chunk_first, chunk_last in windows:
        try:
            results.append(load_chunk(module, loader, chunk_first, chunk_last))
        except BackfillError as error:
            module.fail_json(
                msg=(
                    f"the backfill stopped at {hour_text(chunk_first)}: {error}. The hours before "
                    f"it are loaded; run again with start={hour_text(chunk_first)} to resume."
                ),
                window=window,
                results=results,
                totals=totals(results),
                resume_from=hour_text(chunk_first),
                changed=any(result["objects"] for result in results),
                throttle_retries=loader.throttled,
            )
    summary = totals(results)
    module.exit_json(
        changed=summary["objects"] > 0,
        msg=loaded_line(span, summary, time.monotonic() - started),
        window=window,
        results=results,
        totals=summary,
        throttle_retries=loader.throttled,
    )


if __name__ == "__main__":
    main()

"""One function's sandbox in the local Lambda runtime: runs the deployed zip's handler.

The runtime (tools/local_platform/runtime.py) starts one worker process per function, as Lambda
starts an execution environment: the unpacked zip is the working directory and the only code on
``sys.path`` besides the standard library, and the environment is the function's own variables
plus the emulator's endpoint and credentials. Invocations arrive as JSON lines on stdin; each
answer is one JSON line on the file descriptor given by ``--reply-fd``. Everything the handler
prints or logs goes to stderr, which the runtime keeps as the function's log (CloudWatch Logs in
AWS).

    python lambda_worker.py --code DIR --handler handler.handler --reply-fd 3

Not production code: it exists only for the local inventory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any


class LambdaContext:
    """The parts of Lambda's context object that handlers read."""

    def __init__(self, request_id: str, deadline_epoch_ms: int) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self._deadline_epoch_ms = deadline_epoch_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_epoch_ms - int(time.time() * 1000))


def error_payload(error: BaseException) -> dict[str, Any]:
    """What Lambda returns for an unhandled exception (X-Amz-Function-Error: Unhandled)."""
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


def load_handler(code_directory: str, handler: str):
    module_name, _, function_name = handler.rpartition(".")
    # The zip first, then the interpreter's own packages (Lambda's runtime provides boto3 the
    # same way); never this script's folder or the repository's sources.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [code_directory, *[path for path in sys.path if path and path != here]]
    os.chdir(code_directory)
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", required=True, help="the unpacked deployment zip")
    parser.add_argument("--handler", required=True, help="module.function, as the function's")
    parser.add_argument("--reply-fd", type=int, required=True)
    arguments = parser.parse_args(argv)

    replies = os.fdopen(arguments.reply_fd, "w", encoding="utf-8")
    # Handlers log to stdout (CloudWatch Logs in Lambda); here that is the function's log.
    sys.stdout = sys.stderr
    try:
        handler = load_handler(arguments.code, arguments.handler)
    except Exception as error:
        replies.write(json.dumps({"init_error": error_payload(error)}) + "\n")
        replies.flush()
        return 1
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()

    for line in sys.stdin:
        invocation = json.loads(line)
        request_id = invocation.get("request_id") or str(uuid.uuid4())
        context = LambdaContext(request_id, invocation["deadline_epoch_ms"])
        print(f"START RequestId: {request_id}", flush=True)
        started = time.monotonic()
        try:
            reply = {"result": handler(invocation["event"], context)}
        except Exception as error:
            traceback.print_exc()
            reply = {"error": error_payload(error)}
        elapsed_ms = (time.monotonic() - started) * 1000
        print(f"END RequestId: {request_id} Duration: {elapsed_ms:.2f} ms", flush=True)
        replies.write(json.dumps(reply, default=str) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

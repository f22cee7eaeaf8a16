"""Structured logs: one JSON object per line, optionally carrying CloudWatch embedded metrics."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

METRICS_NAMESPACE = "Clickstream"


class _JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            **getattr(record, "fields", {}),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a record is emitted, not when it was set up."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def get_logger(name: str) -> logging.Logger:
    """A logger that writes JSON lines to stdout (CloudWatch Logs in Lambda), set up once."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(_JsonLineFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # Lambda's root handler would print it a second time
    return logger


def log(logger: logging.Logger, level: int, message: str, /, **fields: Any) -> None:
    """Log ``message`` with ``fields`` as top-level keys of the JSON line."""
    logger.log(level, message, extra={"fields": fields})


def embedded_metrics(
    metrics: dict[str, tuple[float, str]], dimensions: dict[str, str]
) -> dict[str, Any]:
    """Fields that make a JSON log line a CloudWatch embedded-metric-format record.

    ``metrics`` maps a metric name to (value, unit); merge the result into a log line's fields.
    """
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [
                        {"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()
                    ],
                }
            ],
        },
        **dimensions,
        **{name: value for name, (value, _) in metrics.items()},
    }

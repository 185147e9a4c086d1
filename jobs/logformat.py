"""Log formats: one JSON object per line in production, a readable line in development.

settings.LOG_FORMAT picks one ("json" or "console"). Both fill in the
standard fields of every record they format: from the record's `extra`,
else from what jobs.tracing has bound (the request's trace id, the running
job), else null. A JSON line therefore always has the same keys:

    ts, level, event, job_id, type, queue, attempt, trace_id, user_id,
    worker_id, duration_ms, logger, message

followed by any other `extra` the caller gave (error, status, ...).

Django configures logging before it loads the apps, so this module must
not import models.
"""

import logging
import logging.config
from datetime import datetime, timezone

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from jobs.tracing import log_context

STANDARD_FIELDS = ("event", "job_id", "type", "queue", "attempt", "trace_id", "user_id", "worker_id", "duration_ms")


def add_standard_fields(record: logging.LogRecord) -> None:
    """Give `record` a `ts` and every standard field, taking missing ones from the bound log context."""
    if not hasattr(record, "ts"):
        record.ts = (
            datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    context = log_context()
    for name in STANDARD_FIELDS:
        if getattr(record, name, None) is None:
            setattr(record, name, context.get(name))


class JsonFormatter(BaseJsonFormatter):
    """Format a record as one JSON object on one line."""

    def __init__(self, **kwargs):
        kwargs.setdefault("fmt", ["ts", "levelname", *STANDARD_FIELDS, "name", "message"])
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        # uvicorn adds an ANSI-coloured copy of its message.
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "color_message"])
        super().__init__(**kwargs)

    def format(self, record: logging.LogRecord) -> str:
        add_standard_fields(record)
        return super().format(record)


class ConsoleFormatter(logging.Formatter):
    """Format a record as `time level logger message [key=value ...]` for a terminal."""

    # Shown after the message when set, in this order.
    SHOWN = ("trace_id", "job_id", "worker_id", "duration_ms")

    def __init__(self, fmt="%(asctime)s %(levelname)-7s %(name)s %(message)s", **kwargs):
        super().__init__(fmt, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        add_standard_fields(record)
        line = super().format(record)
        details = [f"{name.removesuffix('_id')}={getattr(record, name)}" for name in self.SHOWN
                   if getattr(record, name) is not None]
        if not details:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the details
        return f"{head} [{' '.join(details)}]{newline}{rest}"


def configure(config: dict) -> None:
    """Apply settings.LOGGING, and send Python warnings through it, so they are lines like any other.

    Django calls this at startup: it is settings.LOGGING_CONFIG.
    """
    logging.config.dictConfig(config)
    logging.captureWarnings(True)

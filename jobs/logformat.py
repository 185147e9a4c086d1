"""Log formats: one JSON object per line in production, a readable line in development.

settings.LOG_FORMAT picks one ("json" or "console"). Both fill in the
standard fields of every record they format: from the record's `extra`,
else from what jobs.tracing has bound (the request's trace id, the running
job), else null. A JSON line therefore always has the same keys:

    ts, level, event, job_id, type, queue, attempt, trace_id, user_id,
    worker_id, duration_ms, logger, message

followed by any other `extra` the caller gave (error, status, ...).

What a line says can come from anyone: a request's path, a job's error, a
peer's message. So neither format lets it forge a line: JSON escapes every
control character anyway, and the console format writes a record's first
line with control characters escaped (a newline as \n), and indents every
line below it (a traceback), so that only a record's own first line starts
at the left margin. Both hide the credentials of URLs (jobs.redaction).

Django configures logging before it loads the apps, so this module must
not import models.
"""

import logging
import logging.config
import re
from datetime import UTC, datetime

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from jobs.redaction import redact_url_credentials
from jobs.tracing import log_context

STANDARD_FIELDS = ("event", "job_id", "type", "queue", "attempt", "trace_id", "user_id", "worker_id", "duration_ms")

# C0 and C1 controls but the tab, DEL, and the Unicode line and paragraph separators.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escaped(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """Return `text` on one line: newlines, carriage returns and other control characters written as escapes."""
    return _CONTROLS.sub(_escaped, text)


def _redacted(value):
    """Return `value` with the credentials of URLs hidden in every string in it."""
    if isinstance(value, str):
        return redact_url_credentials(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(item) for item in value]
    return value


def add_standard_fields(record: logging.LogRecord) -> None:
    """Give `record` a `ts` and every standard field, taking missing ones from the bound log context."""
    if not hasattr(record, "ts"):
        record.ts = (
            datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
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

    def process_log_record(self, log_data: dict) -> dict:
        return _redacted(super().process_log_record(log_data))


class ConsoleFormatter(logging.Formatter):
    """Format a record as `time level logger message [key=value ...]` for a terminal."""

    # Shown after the message when set, in this order.
    SHOWN = ("trace_id", "job_id", "worker_id", "duration_ms")

    def __init__(self, fmt="%(asctime)s %(levelname)-7s %(name)s %(message)s", **kwargs):
        super().__init__(fmt, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        add_standard_fields(record)
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        head = self.formatMessage(record)
        details = [f"{name.removesuffix('_id')}={getattr(record, name)}" for name in self.SHOWN
                   if getattr(record, name) is not None]
        if details:
            head = f"{head} [{' '.join(details)}]"
        below = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            below.append(record.exc_text)
        if record.stack_info:
            below.append(self.formatStack(record.stack_info))
        lines = [escape_controls(head), *(f"  {escape_controls(line)}" for text in below for line in text.splitlines())]
        return redact_url_credentials("\n".join(lines))


def configure(config: dict) -> None:
    """Apply settings.LOGGING, and send Python warnings through it, so they are lines like any other.

    Django calls this at startup: it is settings.LOGGING_CONFIG.
    """
    logging.config.dictConfig(config)
    logging.captureWarnings(True)

"""Structured logs and trace ids: JSON lines, and one trace id from the request to the worker's lines."""

import io
import json
import logging
import re

import pytest

from jobs import tracing
from jobs.logformat import STANDARD_FIELDS, ConsoleFormatter, JsonFormatter

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


EVERY_FIELD = {"ts", "level", *STANDARD_FIELDS, "logger", "message"}


@pytest.fixture
def log_lines():
    """Log through a handler with the JSON formatter; return a function giving the parsed lines so far."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logformat")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


# --- The formats --------------------------------------------------------------------------


def test_every_json_line_has_the_standard_fields(log_lines):
    """Give each line ts, level and every standard field, null when unknown, plus the caller's extras."""
    logger = logging.getLogger("tests.logformat")
    logger.info("plain")
    logger.warning("job line", extra={"event": "fail", "job_id": 7, "type": "t", "queue": "q", "attempt": 2,
                                      "trace_id": "abc", "user_id": 3, "worker_id": "w", "duration_ms": 1.5,
                                      "error": "boom"})

    plain, job = log_lines()
    assert set(plain) == EVERY_FIELD
    assert plain["level"] == "INFO" and plain["message"] == "plain" and plain["logger"] == "tests.logformat"
    assert all(plain[name] is None for name in STANDARD_FIELDS)
    assert ISO_UTC.fullmatch(plain["ts"])
    assert {k: job[k] for k in STANDARD_FIELDS} == {
        "event": "fail", "job_id": 7, "type": "t", "queue": "q", "attempt": 2, "trace_id": "abc", "user_id": 3,
        "worker_id": "w", "duration_ms": 1.5,
    }
    assert job["error"] == "boom"


def test_fields_not_given_come_from_the_bound_context(log_lines):
    """Fill in the trace id (and job fields) bound by a request or a running job."""
    with tracing.bound(trace_id="req-1", job_id=9):
        logging.getLogger("tests.logformat").info("inside")
    logging.getLogger("tests.logformat").info("outside")

    inside, outside = log_lines()
    assert (inside["trace_id"], inside["job_id"]) == ("req-1", 9)
    assert (outside["trace_id"], outside["job_id"]) == (None, None)


def test_an_exception_stays_inside_its_json_line(log_lines):
    """Keep a traceback in the line's exc_info, so the line is still one JSON object."""
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("tests.logformat").exception("failed")

    (line,) = log_lines()
    assert "ValueError: bad value" in line["exc_info"]


def test_console_format_is_readable_with_the_context_appended():
    """Print time, level, logger and message, then the trace and job it concerns."""
    record = logging.LogRecord("jobs.worker", logging.INFO, __file__, 1, "finish reverse_string#5", None, None)
    record.trace_id, record.job_id, record.duration_ms = "t-1", 5, 2.5

    line = ConsoleFormatter().format(record)

    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    jobs.worker finish reverse_string#5 \[trace=t-1 job=5 duration_ms=2.5\]",
        line,
    )


FORGED = "2030-01-01 00:00:00,000 ERROR   jobs.worker forged"


RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d ", re.MULTILINE)


def test_console_format_gives_each_record_one_line_at_the_margin_whatever_it_says():
    """Escape newlines and control characters in a record's line, and indent its traceback, so no line is forged."""
    try:
        raise ValueError(f"bad\n{FORGED} in a traceback")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("jobs.requests", logging.INFO, __file__, 1, "GET %s 404", (f"/x\r\n{FORGED}\x1b[2J\u2028",),
                               exc_info)

    text = ConsoleFormatter().format(record)

    first, *below = text.split("\n")
    assert first.endswith("GET /x\\r\\n" + FORGED + "\\x1b[2J\\u2028 404")
    assert below and all(line.startswith("  ") for line in below), below
    assert len(RECORD_START.findall(text)) == 1
    assert "\x1b" not in text and "\r" not in text


def test_both_formats_hide_the_credentials_of_urls(log_lines):
    """Write user:***@ for a URL's password, and ***@ for a bare token, in the message, extras and traceback."""
    message = "connecting to postgres://app:s3cret-pw@db:5432/jobs"
    try:
        raise ConnectionError("redis://:hunter2@cache:6379/0 refused")
    except ConnectionError:
        logging.getLogger("tests.logformat").exception(message, extra={"error": "https://ghp_token123@github.com/x"})

    (line,) = log_lines()
    assert line["message"] == "connecting to postgres://app:***@db:5432/jobs"
    assert line["error"] == "https://***@github.com/x"
    assert "redis://:***@cache:6379/0 refused" in line["exc_info"]
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, message, None, None)
    record.exc_text = "ConnectionError: redis://:hunter2@cache:6379/0 refused"
    console = ConsoleFormatter().format(record)
    assert "postgres://app:***@db" in console and "redis://:***@cache" in console
    for secret in ("s3cret-pw", "hunter2", "ghp_token123"):
        assert secret not in json.dumps(line) + console
    assert ConsoleFormatter().format(logging.LogRecord("t", 20, __file__, 1, "mail ada@example.com at http://example.com/a@b", None, None)).endswith(
        "mail ada@example.com at http://example.com/a@b"
    ), "an @ that is no URL's userinfo is left alone"

"""Structured logs and trace ids: JSON lines, and one trace id from the request to the worker's lines."""

import io
import json
import logging
import re

import pytest
import requests
from django.http import HttpResponse
from django.test import Client, RequestFactory

from jobs import queue, tracing
from jobs.logformat import STANDARD_FIELDS, ConsoleFormatter, JsonFormatter
from jobs.models import Job
from tests.conftest import wait_for
from tests.factories import JobFactory, UserFactory

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


def worker_lines(worker) -> list[dict]:
    """Return the worker's output, each line parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in worker.output().splitlines() if line.strip()]


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


@pytest.mark.process
def test_a_forged_line_in_a_request_path_stays_inside_its_record(start_server):
    """Log a request whose path holds a newline and a fake record as one line of a real server's console log."""
    server = start_server({"LOG_FORMAT": "console", "LOG_LEVEL": "INFO"}).wait_until_up()
    forged = requests.utils.quote(f"\n{FORGED} via the path")
    requests.get(f"{server.url}/api/{forged}/", timeout=10)
    wait_for(lambda: "via the path" in server.output(), message="the request's line")
    assert not [line for line in server.output().splitlines() if line.startswith("2030-01-01")], server.output()
    assert "\\n" + FORGED in server.output()


@pytest.mark.process
def test_a_jobs_error_and_the_workers_lines_hide_url_credentials(start_worker):
    """Store and log a failing job's error with the password of the URL it quotes hidden."""
    job = queue.enqueue("fail", {"message": "cannot reach postgres://app:s3cret-pw@db/jobs", "permanent": True})
    worker = start_worker(*FAST, env=JSON_WORKER)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "dead", message="the job to fail")
    job.refresh_from_db()
    assert "postgres://app:***@db/jobs" in job.error
    assert "s3cret-pw" not in job.error + json.dumps(job.history)
    wait_for(lambda: any(line["event"] == "dead" for line in worker_lines(worker)), message="the dead line")
    assert "s3cret-pw" not in worker.output()


# --- Trace ids in requests ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_valid_trace_id_is_accepted_and_echoed():
    response = Client().get("/admin/login/", HTTP_X_TRACE_ID="checkout-42.a_b")
    assert response["X-Trace-Id"] == "checkout-42.a_b"


@pytest.mark.django_db
@pytest.mark.parametrize("given", [None, "", "has space", "x" * 65, "semi;colon", "ünïcode"])
def test_a_missing_or_unsafe_trace_id_is_replaced_by_a_new_one(given):
    headers = {} if given is None else {"HTTP_X_TRACE_ID": given}
    response = Client().get("/admin/login/", **headers)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Trace-Id"])


def enqueue_view(request):
    job = queue.enqueue("reverse_string", {"text": "traced"})
    return HttpResponse(str(job.pk))


@pytest.mark.django_db
def test_a_job_enqueued_during_a_request_stores_its_trace_id():
    """Store the request's trace id on the job, with no trace_id passed to enqueue."""
    middleware = tracing.TraceIdMiddleware(enqueue_view)
    response = middleware(RequestFactory().post("/jobs", HTTP_X_TRACE_ID="req-77"))

    assert response["X-Trace-Id"] == "req-77"
    assert Job.objects.get(pk=int(response.content)).trace_id == "req-77"


@pytest.mark.django_db
def test_an_explicit_trace_id_wins_and_outside_a_request_one_is_generated():
    with tracing.bound(trace_id="from-request"):
        explicit = queue.enqueue("reverse_string", {"text": "a"}, trace_id="given")
    generated = queue.enqueue("reverse_string", {"text": "b"})
    ids = queue.enqueue_many("reverse_string", [{"text": "c"}, {"text": "d"}])

    assert explicit.trace_id == "given"
    assert re.fullmatch(r"[0-9a-f]{32}", generated.trace_id)
    assert len(set(Job.objects.filter(pk__in=ids).values_list("trace_id", flat=True))) == 1


@pytest.mark.django_db
def test_submit_is_logged_once_the_insert_commits(caplog, django_capture_on_commit_callbacks):
    """Log one submit line per enqueue, and one for a whole bulk insert, only after commit."""
    owner = UserFactory()
    caplog.set_level(logging.INFO, logger="jobs.queue")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = queue.enqueue("reverse_string", {"text": "a"}, owner=owner, queue="text", trace_id="sub-1")
        ids = queue.enqueue_many("reverse_string", [{"text": "b"}] * 50, trace_id="bulk-1")
        assert not [r for r in caplog.records if getattr(r, "event", None) == "submit"]
    assert callbacks

    single, bulk = [r for r in caplog.records if getattr(r, "event", None) == "submit"]
    assert (single.job_id, single.type, single.queue, single.attempt, single.trace_id, single.user_id) == (
        job.pk, "reverse_string", "text", 0, "sub-1", owner.pk,
    )
    assert (bulk.count, bulk.first_job_id, bulk.trace_id) == (50, ids[0], "bulk-1")


# --- The round trip, with real worker processes ----------------------------------------------------

JSON_WORKER = {"LOG_FORMAT": "json"}
FAST = ["--poll-interval", "0.2"]


def lines_for(worker, trace_id: str) -> list[dict]:
    return [line for line in worker_lines(worker) if line["trace_id"] == trace_id]


@pytest.mark.process
def test_trace_id_goes_from_request_to_job_to_every_worker_line(start_worker):
    """Carry a request's X-Trace-Id onto its job and into the worker's start, handler and finish lines."""
    def view(request):
        return HttpResponse(str(queue.enqueue("log_line", {"text": "hello"}).pk))

    response = tracing.TraceIdMiddleware(view)(RequestFactory().post("/jobs", HTTP_X_TRACE_ID="round-trip-1"))
    job_id = int(response.content)
    worker = start_worker(*FAST, env=JSON_WORKER)

    wait_for(lambda: any(line["event"] == "finish" for line in lines_for(worker, "round-trip-1")),
             message="the worker's finish line")
    lines = lines_for(worker, "round-trip-1")
    assert [line["event"] for line in lines] == ["start", None, "finish"]
    handler_line = lines[1]
    assert handler_line["message"] == "handler says hello" and handler_line["logger"] == "tests.handlers"
    for line in lines:
        assert set(line) >= EVERY_FIELD
        assert (line["job_id"], line["type"], line["queue"], line["attempt"]) == (job_id, "log_line", "default", 1)
        assert line["worker_id"] == lines[0]["worker_id"] is not None
    assert lines[-1]["duration_ms"] > 0
    assert all(ISO_UTC.fullmatch(line["ts"]) for line in worker_lines(worker))


@pytest.mark.process
def test_trace_id_round_trip_over_http(start_server, start_worker):
    """POST /api/jobs/ with X-Trace-Id: the response echoes it, the job stores it, the worker logs it."""
    user = UserFactory(username="tracer")
    server = start_server({"LOG_FORMAT": "json"}).wait_until_up()
    token = requests.post(f"{server.url}/api/auth/token/",
                          json={"username": "tracer", "password": "correct-horse-battery"}, timeout=10)
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access']}", "X-Trace-Id": "http-trip-1"}

    created = requests.post(f"{server.url}/api/jobs/", json={"type": "reverse_string", "payload": {"text": "abc"}},
                            headers=headers, timeout=10)

    assert created.status_code == 201, created.text
    assert created.headers["X-Trace-Id"] == "http-trip-1"
    job = Job.objects.get(pk=created.json()["id"])
    assert job.trace_id == "http-trip-1" and job.owner_id == user.pk
    worker = start_worker(*FAST, env=JSON_WORKER)
    finish = wait_for(lambda: [line for line in lines_for(worker, "http-trip-1") if line["event"] == "finish"],
                      message="the worker's finish line")
    assert finish[0]["job_id"] == job.pk and finish[0]["user_id"] == user.pk


@pytest.mark.process
def test_a_rescued_jobs_line_carries_its_trace_id(start_worker):
    """Log the rescue of a job whose worker died with that job's trace id, type, queue and attempt."""
    stale = JobFactory(stale=True, type="reverse_string", queue="default", trace_id="lost-1")
    worker = start_worker(*FAST, env=JSON_WORKER)

    rescued = wait_for(lambda: [line for line in lines_for(worker, "lost-1") if line["event"] == "rescued"],
                       message="the rescued line")
    assert (rescued[0]["job_id"], rescued[0]["type"], rescued[0]["queue"], rescued[0]["attempt"]) == (
        stale.pk, "reverse_string", "default", 1,
    )
    wait_for(lambda: [line for line in lines_for(worker, "lost-1") if line["event"] == "finish"],
             message="the rescued job to run again")

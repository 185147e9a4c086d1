"""Structured logs and trace ids: JSON lines, and one trace id from the request to the worker's lines."""

import json

import pytest
import requests
from django.http import HttpResponse
from django.test import RequestFactory

from jobs import queue, tracing
from jobs.models import Job
from tests.conftest import wait_for
from tests.factories import JobFactory, UserFactory
from tests.unit.test_logging import EVERY_FIELD, FORGED, ISO_UTC


def worker_lines(worker) -> list[dict]:
    """Return the worker's output, each line parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in worker.output().splitlines() if line.strip()]


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

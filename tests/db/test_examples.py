"""The README's examples of the built-in job types, submitted every way there is and run by a real worker.

Each example goes in through enqueue(), POST /api/jobs/ and the dashboard's
Submit page (each as a different user, so unique keys do not meet), must be
stored the same way by all three, and must run, in an in-process worker on
the test database, to the result the README promises.
"""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.core.cache import cache
from django.db import connection, connections
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from jobs import queue
from jobs.handlers.video import FRAMES_PER_SECOND
from jobs.models import Job, JobStatus
from jobs.worker import Worker
from tests.examples import NO_RESULT, examples
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

# The field a bare payload stands for, as the Submit page names its input.
BARE_FIELD = {"reverse_string": "text", "uppercase_text": "text", "fibonacci_calc": "n", "sleep": "seconds",
              "scrape_website": "url"}
# What the Submit page's options offer of enqueue()'s.
FORM_OPTIONS = ("priority", "delay", "max_retries")
# Validated and stored only: scrape_website needs the network, run_command is off by default.
NOT_RUN = ("scrape_website", "run_command")


@pytest.fixture(autouse=True)
def room_to_submit(settings):
    settings.JOBS_USER_MAX_ACTIVE = 1000
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 1000
    settings.JOBS_ENABLE_SHELL_COMMANDS = True  # run_command is staff only: its users are staff
    settings.JOBS_SHELL_ALLOWED_COMMANDS = ("/bin/echo",)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def user_for(example, route: str):
    # run_command and high priority are for staff, and so is send_email by default.
    staff = example.type in ("run_command", "send_email") or example.options.get("priority") == "high"
    return UserFactory(username=f"{route}-{uuid.uuid4().hex[:8]}", is_staff=staff)


def through_enqueue(example) -> Job:
    return queue.enqueue(example.type, example.payload, owner=user_for(example, "enqueue"), **example.options)


def through_the_api(example) -> Job:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user_for(example, 'api')).access_token}")
    body = {"type": example.type, "payload": example.payload, **example.options}
    response = client.post("/api/jobs/", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    return Job.objects.get(pk=response.json()["id"])


def form_inputs(type_name: str, payload) -> dict[str, str]:
    """Return the Submit page's payload inputs, filled in as a person would to send `payload`."""
    if not isinstance(payload, dict):
        payload = {BARE_FIELD[type_name]: payload}
    inputs = {}
    for name, value in payload.items():
        if isinstance(value, bool):
            if value:
                inputs[f"p_{name}"] = "on"
        else:
            inputs[f"p_{name}"] = "\n".join(value) if isinstance(value, list) else str(value)
    return inputs


def through_the_submit_page(example) -> Job:
    client = Client()
    client.force_login(user_for(example, "form"))
    data = {"type": example.type, "priority": "normal", "idempotency_key": uuid.uuid4().hex,
            **{name: str(value) for name, value in example.options.items() if name in FORM_OPTIONS},
            **form_inputs(example.type, example.payload)}
    response = client.post(reverse("dashboard:submit"), data)
    assert response.status_code == 302, response.content.decode()
    return Job.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))


ROUTES = (through_enqueue, through_the_api, through_the_submit_page)


def run_a_worker() -> None:
    """Make every scheduled job due, and run what is ready in this process until nothing is left."""
    queue.retry_jobs_now(Job.objects.filter(status=JobStatus.SCHEDULED))
    worker = Worker(burst=True, install_signal_handlers=False, poll_interval=0.1)
    try:
        assert worker.run() == 0
    finally:
        # A burst run returns with its LISTEN thread still connected, and the
        # handler threads' connections stay open in the pool: the test
        # database could not be dropped at the end of the session.
        worker.stop()
        for thread in threading.enumerate():
            if thread.name == "skipjack-listen":
                thread.join(timeout=5)
        connections.close_all()
        connection.close_pool()


def check_outcome(example, job: Job) -> None:
    """Check `job` ended as the README says its example does."""
    if example.type == "fail":
        message = example.payload.get("message", "Failed on purpose.")
        assert job.status in (JobStatus.RETRYING, JobStatus.DEAD) and message in job.error, job.error
        if example.payload.get("permanent") or example.options.get("max_retries") == 0:
            assert job.status == JobStatus.DEAD
        return
    assert job.status == JobStatus.COMPLETED, job.error
    if example.type == "process_video":
        assert job.progress == 100
        assert job.result["frames"] == round(example.payload.get("duration", 2) * FRAMES_PER_SECOND)
    elif example.result is not NO_RESULT:
        assert job.result == example.result


@pytest.mark.parametrize("type_name", sorted({example.type for example in examples()}))
def test_each_documented_example_is_stored_alike_every_way_and_runs_to_its_result(type_name):
    """Store the README's examples of a type the same through enqueue, the API and the Submit page; run them."""
    mail.outbox = []
    submitted = []
    for example in examples(type_name):
        jobs = [route(example) for route in ROUTES]
        assert all(job.payload == jobs[0].payload for job in jobs), [job.payload for job in jobs]
        submitted.append((example, jobs))
    if type_name in NOT_RUN:
        return
    run_a_worker()
    for example, jobs in submitted:
        for job in jobs:
            job.refresh_from_db()
            check_outcome(example, job)
    if type_name == "send_email":
        assert len(mail.outbox) == len(submitted) * len(ROUTES)


PAGE = b"<html><head><title>Example Domain</title></head></html>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


def test_scrape_website_runs_to_its_documented_result(settings):
    """Fetch a page (from a local server, so private addresses are allowed) and return the documented fields."""
    settings.JOBS_SCRAPE_ALLOW_PRIVATE = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        job = queue.enqueue("scrape_website", {"url": url}, timeout=20, ttl=3600)
        bare = queue.enqueue("scrape_website", url)
        run_a_worker()
    finally:
        server.shutdown()
        server.server_close()
    for ran in (job, bare):
        ran.refresh_from_db()
        assert ran.status == JobStatus.COMPLETED, ran.error
        assert ran.result == {"url": url, "status": 200, "bytes": len(PAGE), "content_type": "text/html; charset=utf-8",
                              "title": "Example Domain"}

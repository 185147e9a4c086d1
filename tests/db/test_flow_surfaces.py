"""Flow control as operators reach it: the REST API, `manage.py queues`, the admin and the dashboard."""

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import queue
from jobs.models import Job, JobStatus, KeyLimit, QueueControl, StartLog
from tests.db.test_api import client_for
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


@pytest.fixture
def staff():
    return client_for(UserFactory(is_staff=True))


@pytest.fixture
def emails_queue():
    JobFactory(queue="emails", status=JobStatus.COMPLETED)
    queue.enqueue("reverse_string", {"text": "a"}, queue="emails")  # counted: the queue is known
    return "emails"


def patch(client, url, body):
    return client.patch(url, json.dumps(body), content_type="application/json")


# --- REST ------------------------------------------------------------------


def test_the_queue_api_is_staff_only(emails_queue):
    user = client_for(UserFactory())
    for method, url in (("get", "/api/queues/"), ("get", "/api/queues/emails/"), ("patch", "/api/queues/emails/"),
                        ("post", "/api/queues/emails/pause/"), ("put", "/api/queues/emails/keys/t:1/")):
        assert getattr(user, method)(url).status_code == 403, url
        assert getattr(APIClient(), method)(url).status_code == 401, url
    assert not QueueControl.objects.exists()


def test_staff_pause_resume_and_set_limits_over_rest(staff, emails_queue):
    listed = {q["name"]: q for q in staff.get("/api/queues/").json()}
    assert listed["emails"]["paused"] is False and listed["emails"]["counts"]["queued"] == 1
    paused = staff.post("/api/queues/emails/pause/").json()
    assert paused["paused"] is True and paused["paused_at"]
    assert queue.flow_state().paused == {"emails"}
    assert staff.post("/api/queues/emails/resume/").json()["paused"] is False
    changed = patch(staff, "/api/queues/emails/", {"concurrency": 4, "rate_limit": 100, "rate_period": 60})
    assert changed.status_code == 200
    assert (changed.json()["concurrency"], changed.json()["rate_limit"]) == (4, 100)
    cleared = patch(staff, "/api/queues/emails/", {"concurrency": None}).json()
    assert cleared["concurrency"] is None and cleared["rate_limit"] == 100


@pytest.mark.parametrize("body, field", [
    ({"concurrency": -1}, "concurrency"),
    ({"concurrency": 1.5}, "concurrency"),
    ({"concurrency": "many"}, "concurrency"),
    ({"rate_period": 0}, "rate_period"),
    ({"paused": "yes"}, "paused"),
    ({"speed": 3}, "speed"),
])
def test_a_bad_limit_is_a_field_level_400_and_changes_nothing(staff, emails_queue, body, field):
    patch(staff, "/api/queues/emails/", {"rate_limit": 7})
    response = patch(staff, "/api/queues/emails/", {"rate_limit": 9, **body})
    assert response.status_code == 400
    assert field in response.json()
    assert QueueControl.objects.get(name="emails").rate_limit == 7


def test_an_unknown_queue_is_404_and_made_no_row(staff):
    assert staff.post("/api/queues/nosuch/pause/").status_code == 404
    assert patch(staff, "/api/queues/nosuch/", {"concurrency": 1}).status_code == 404
    assert not QueueControl.objects.exists()


def test_key_limits_over_rest(staff, emails_queue):
    created = staff.put("/api/queues/emails/keys/customer:acme.com/", {"concurrency": 3}, format="json")
    assert created.status_code == 200 and created.json()["concurrency"] == 3
    assert [k["key"] for k in staff.get("/api/queues/emails/keys/").json()] == ["customer:acme.com"]
    bad = staff.put("/api/queues/emails/keys/has space/", {"concurrency": 0}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"key", "concurrency"}
    assert staff.delete("/api/queues/emails/keys/customer:acme.com/").status_code == 204
    assert not KeyLimit.objects.exists()
    assert staff.delete("/api/queues/emails/keys/customer:acme.com/").status_code == 404


def test_only_staff_may_choose_a_concurrency_key_at_submission():
    user = client_for(UserFactory())
    refused = user.post("/api/jobs/", {"type": "reverse_string", "payload": {"text": "a"},
                                       "concurrency_key": "tenant:1"}, format="json")
    assert refused.status_code == 400 and "concurrency_key" in refused.json()
    staff = client_for(UserFactory(is_staff=True))
    made = staff.post("/api/jobs/", {"type": "reverse_string", "payload": {"text": "a"},
                                     "concurrency_key": "tenant:1"}, format="json")
    assert made.status_code == 201 and made.json()["concurrency_key"] == "tenant:1"
    malformed = staff.post("/api/jobs/", {"type": "reverse_string", "payload": {"text": "a"},
                                          "concurrency_key": "no spaces"}, format="json")
    assert malformed.status_code == 400 and "concurrency_key" in malformed.json()


def test_a_job_of_a_user_shows_why_it_waits_in_the_api():
    owner = UserFactory()
    queue.pause_queue("default")
    job = queue.enqueue("reverse_string", {"text": "a"}, owner=owner)
    detail = client_for(owner).get(f"/api/jobs/{job.pk}/").json()
    assert detail["waiting"]["code"] == "paused" and "paused" in detail["waiting"]["message"]
    queue.resume_queue("default")
    queue.register_worker(hostname="h", pid=1, queues=[], concurrency=1)
    assert client_for(owner).get(f"/api/jobs/{job.pk}/").json()["waiting"]["code"] == "next_in_line"


# --- manage.py queues --------------------------------------------------------


def run(*args) -> str:
    out = StringIO()
    call_command("queues", *args, stdout=out)
    return out.getvalue()


def test_the_command_pauses_resumes_and_lists(emails_queue):
    assert "Paused emails" in run("pause", "emails")
    assert QueueControl.objects.get(name="emails").paused
    listing = run("list")
    assert any(line.split()[:2] == ["emails", "paused"] for line in listing.splitlines())
    run("resume", "emails")
    assert not QueueControl.objects.get(name="emails").paused


def test_the_command_sets_limits_and_key_limits(emails_queue):
    assert "concurrency 3, rate 100/m" in run("set", "emails", "--concurrency", "3", "--rate", "100/m")
    run("set", "emails", "--key-concurrency", "2", "--key-rate", "5/s")
    control = QueueControl.objects.get(name="emails")
    assert (control.key_concurrency, control.key_rate_limit, control.key_rate_period) == (2, 5, 1.0)
    run("set", "emails", "--rate", "none")
    assert QueueControl.objects.get(name="emails").rate_limit is None
    run("key", "emails", "tenant:1", "--concurrency", "4")
    assert KeyLimit.objects.get(queue="emails", key="tenant:1").concurrency == 4
    run("key", "emails", "tenant:1", "--remove")
    assert not KeyLimit.objects.exists()


@pytest.mark.parametrize("args, message", [
    (("pause", "nosuch"), "No queue 'nosuch'"),
    (("pause", "bad name"), "Invalid queue name"),
    (("set", "emails", "--concurrency", "-2"), "must be a whole number"),
    (("set", "emails", "--concurrency", "2.5"), "must be a whole number"),
    (("set", "emails", "--rate", "lots"), "Invalid rate"),
    (("set", "emails"), "Give at least one"),
    (("key", "emails", "a b", "--concurrency", "1"), "Invalid concurrency key"),
    (("key", "emails", "k", "--remove"), "has no limits of its own"),
    (("reset",), "Name the queues"),
    (("reset", "emails"), "JOBS_QUEUES configures no queue 'emails'"),
    (("why", "999999"), "No job 999999"),
])
def test_bad_input_is_a_one_line_error_and_changes_nothing(emails_queue, args, message):
    with pytest.raises(CommandError, match=message) as excinfo:
        run(*args)
    assert "\n" not in str(excinfo.value)
    assert not QueueControl.objects.exists() and not KeyLimit.objects.exists()


def test_reset_applies_the_settings_over_a_run_time_change(settings, emails_queue):
    settings.JOBS_QUEUES = {"emails": {"rate": "100/m"}}
    queue.apply_queue_settings()
    run("set", "emails", "--rate", "5/m")
    assert "Applied JOBS_QUEUES to emails" in run("reset", "emails")
    assert QueueControl.objects.get(name="emails").rate_limit == 100


def test_the_command_says_why_a_job_waits(emails_queue):
    job = Job.objects.get(queue="emails", status=JobStatus.QUEUED)
    run("pause", "emails")
    assert "Queue emails is paused" in run("why", str(job.pk))


# --- admin and dashboard -------------------------------------------------------


@pytest.fixture
def staff_browser():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_the_admin_edits_queue_controls_through_the_queue_and_refuses_bad_limits(staff_browser):
    response = staff_browser.post("/admin/jobs/queuecontrol/add/", {
        "name": "video", "concurrency": "0", "rate_period": "60", "key_rate_period": "60"})
    assert response.status_code == 200 and "must be a whole number" in response.content.decode()
    assert not QueueControl.objects.exists()
    staff_browser.post("/admin/jobs/queuecontrol/add/", {
        "name": "video", "concurrency": "4", "rate_period": "60", "key_rate_period": "60", "paused": "on"})
    control = QueueControl.objects.get(name="video")
    assert control.concurrency == 4 and control.paused and control.paused_at is not None
    assert queue.flow_state().paused == {"video"}


def test_the_admin_shows_why_a_job_waits(staff_browser):
    queue.pause_queue("default")
    job = queue.enqueue("reverse_string", {"text": "a"})
    page = staff_browser.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert "Queue default is paused" in page


def test_the_dashboard_queues_page_is_staff_only_and_pauses_and_sets_limits(staff_browser, emails_queue):
    user = Client()
    user.force_login(UserFactory())
    assert user.get("/dashboard/queues/").status_code == 403
    assert user.post("/dashboard/queues/emails/pause/", {"paused": "true"}).status_code == 403
    assert "emails" in staff_browser.get("/dashboard/queues/").content.decode()
    staff_browser.post("/dashboard/queues/emails/pause/", {"paused": "true"})
    assert QueueControl.objects.get(name="emails").paused
    bad = staff_browser.post("/dashboard/queues/emails/limits/", {"concurrency": "-1", "rate": "9/m"})
    assert bad.status_code == 400 and "must be a whole number" in bad.content.decode()
    assert QueueControl.objects.get(name="emails").rate_limit is None
    staff_browser.post("/dashboard/queues/emails/limits/", {"concurrency": "3", "rate": "9/m", "key_concurrency": "",
                                                  "key_rate": ""})
    control = QueueControl.objects.get(name="emails")
    assert (control.concurrency, control.rate_limit, control.rate_period) == (3, 9, 60.0)


def test_the_dashboard_shows_why_a_job_waits_and_counts_reasons(staff_browser):
    owner = UserFactory()
    browser = Client()
    browser.force_login(owner)
    queue.pause_queue("default")
    job = queue.enqueue("reverse_string", {"text": "a"}, owner=owner)
    page = browser.get(f"/dashboard/jobs/{job.pk}/").content.decode()
    assert 'data-reason="paused"' in page and "Queue default is paused" in page
    overview = browser.get("/dashboard/").content.decode()
    assert 'data-waiting-count="paused"' in overview


def test_the_dashboard_sets_and_removes_a_keys_own_limits_and_refuses_bad_ones(staff_browser, emails_queue):
    bad = staff_browser.post("/dashboard/queues/emails/keys/", {"key": "a b", "concurrency": "0", "rate": "x"})
    page = bad.content.decode()
    assert bad.status_code == 400 and "Invalid concurrency key" in page and "must be a whole number" in page
    assert not KeyLimit.objects.exists()
    staff_browser.post("/dashboard/queues/emails/keys/", {"key": "tenant:7", "concurrency": "3", "rate": "5/s"})
    limit = KeyLimit.objects.get(queue="emails", key="tenant:7")
    assert (limit.concurrency, limit.rate_limit, limit.rate_period) == (3, 5, 1.0)
    assert 'data-key-limit="tenant:7"' in staff_browser.get("/dashboard/queues/").content.decode()
    staff_browser.post("/dashboard/queues/emails/keys/", {"key": "tenant:7", "remove": "1"})
    assert not KeyLimit.objects.exists()
    user = Client()
    user.force_login(UserFactory())
    assert user.post("/dashboard/queues/emails/keys/", {"key": "t", "concurrency": "1"}).status_code == 403


def situation(reason: str, owner):
    """Make a job of `owner` wait for `reason`; return it."""
    if reason != "no_worker":
        queue.register_worker(hostname="h", pid=1, queues=[], concurrency=4)
    if reason == "scheduled":
        return queue.enqueue("reverse_string", {"text": "a"}, owner=owner, delay=3600)
    if reason == "backoff":
        job = queue.enqueue("reverse_string", {"text": "a"}, owner=owner)
        (claimed,) = queue.claim_jobs(worker_id=uuid.uuid4(), limit=1)
        queue.fail_job(claimed, error="boom")
        return job
    if reason == "paused":
        queue.pause_queue("default")
    if reason == "key_limit":
        queue.set_queue_controls("default", key_concurrency=1)
        JobFactory(concurrency_key="tenant:1", status=JobStatus.RUNNING)
        return queue.enqueue("reverse_string", {"text": "a"}, owner=owner, concurrency_key="tenant:1")
    if reason == "queue_limit":
        queue.set_queue_controls("default", concurrency=1)
        JobFactory(status=JobStatus.RUNNING)
    if reason == "rate_limit":
        queue.set_queue_controls("default", rate_limit=1, rate_period=60)
        StartLog.objects.create(scope="q:default", started_at=timezone.now() - timedelta(seconds=5))
    return queue.enqueue("reverse_string", {"text": "a"}, owner=owner)


@pytest.mark.parametrize("reason", ["scheduled", "backoff", "paused", "no_worker", "key_limit", "queue_limit",
                                    "rate_limit", "next_in_line"])
def test_each_waiting_reason_shows_in_the_api_and_on_the_dashboard(settings, reason):
    settings.JOBS_USER_MAX_RUNNING = 0  # the owner's own key would be the reason otherwise
    owner = UserFactory(is_staff=True)
    job = situation(reason, owner)
    api = client_for(owner).get(f"/api/jobs/{job.pk}/").json()
    assert api["waiting"]["code"] == reason, api["waiting"]
    browser = Client()
    browser.force_login(owner)
    page = browser.get(f"/dashboard/jobs/{job.pk}/").content.decode()
    assert f'data-reason="{reason}"' in page
    assert api["waiting"]["message"].split(":")[0][:20] in page

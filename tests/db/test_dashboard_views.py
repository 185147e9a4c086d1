"""The dashboard's pages through Django's test client: access, isolation, escaping, actions."""

import re
import uuid
from datetime import UTC, timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard import selectors
from jobs import queue
from jobs.models import Job, JobStatus, Priority, Worker
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db

PAGES = ["overview", "jobs", "dlq", "submit"]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The factories set a password on every user; the real hasher's work factor is not under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_overviews():
    # Overviews are cached in Redis for a few seconds, and staff share one.
    cache.clear()


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def bob():
    return UserFactory(username="bob")


@pytest.fixture
def staff():
    return UserFactory(username="operator", is_staff=True)


def client_for(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_post(client: Client, url: str, data=None, **extra):
    """POST the way a browser does: with the CSRF cookie and the form's token."""
    client.get(reverse("dashboard:submit"))  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": token}, **extra)


def dead_job(owner, error="RuntimeError: boom", **kwargs):
    return JobFactory(owner=owner, status=JobStatus.DEAD, attempts=1, max_retries=0, error=error, **kwargs)


# --- Access -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [*PAGES, "workers"])
def test_pages_redirect_anonymous_visitors_to_the_login(client, name):
    """Send a visitor who is not logged in to /accounts/login/ with ?next=."""
    response = client.get(reverse(f"dashboard:{name}"))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_login_page_logs_in_with_the_admin_accounts(client, alice):
    """Log in through the dashboard's own form and land on the overview."""
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    response = client.post("/accounts/login/", {"username": "alice", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200


def test_admin_login_still_works(client, staff):
    """Keep /admin/login/ working next to the dashboard's login."""
    assert client.get("/admin/login/").status_code == 200
    response = client.post("/admin/login/?next=/admin/", {"username": "operator", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_root_redirects_to_the_dashboard(client):
    """Send / to /dashboard/."""
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"


@pytest.mark.parametrize("name", PAGES)
def test_pages_render_for_a_user(alice, name):
    """Render each page for a signed-in user, with the WebSocket hooked up and nothing cached."""
    JobFactory(owner=alice)
    dead_job(alice)
    response = client_for(alice).get(reverse(f"dashboard:{name}"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'ws-connect="/ws/events/"' in html
    assert "htmx-2.0.11.min.js" in html and "htmx-ext-ws-2.0.4.min.js" in html
    assert "no-store" in response["Cache-Control"]


def test_workers_page_is_for_staff_only(alice, staff):
    """Show the workers to staff, and refuse everyone else with 403."""
    queue.register_worker(hostname="box-1", pid=4242, queues=[], concurrency=8)
    assert client_for(alice).get(reverse("dashboard:workers")).status_code == 403
    response = client_for(staff).get(reverse("dashboard:workers"))
    assert response.status_code == 200
    assert "box-1:4242" in response.content.decode()
    assert "0 / 8 slots busy" in response.content.decode()


def test_live_refresh_returns_only_the_fragment(alice):
    """Answer an htmx refresh of #live with the fragment alone, not the whole page."""
    response = client_for(alice).get(reverse("dashboard:overview"), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="live")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="live"')
    assert "<html" not in html
    assert "HX-Target" in response["Vary"]


# --- Isolation ----------------------------------------------------------------------


def test_a_user_sees_only_their_own_jobs(alice, bob):
    """List only the user's jobs, and answer 404 for someone else's job."""
    mine = JobFactory(owner=alice, type="uppercase_text")
    theirs = JobFactory(owner=bob, type="fibonacci_calc", payload={"n": 7})
    client = client_for(alice)
    html = client.get(reverse("dashboard:jobs")).content.decode()
    assert f"#{mine.pk}" in html
    assert f"#{theirs.pk}" not in html and "fibonacci_calc" not in html.split("<datalist")[0]
    assert client.get(reverse("dashboard:job-detail", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("dashboard:job-detail", args=[mine.pk])).status_code == 200


def test_staff_see_every_job(alice, bob, staff):
    """List every user's jobs for staff, with their owners."""
    a, b = JobFactory(owner=alice), JobFactory(owner=bob)
    html = client_for(staff).get(reverse("dashboard:jobs")).content.decode()
    assert f"#{a.pk}" in html and f"#{b.pk}" in html
    assert "alice" in html and "bob" in html


def test_actions_on_someone_elses_job_are_404(alice, bob):
    """Refuse cancel and retry of another user's job as if it did not exist."""
    theirs = JobFactory(owner=bob)
    dead = dead_job(bob)
    client = client_for(alice)
    assert csrf_post(client, reverse("dashboard:job-cancel", args=[theirs.pk])).status_code == 404
    assert csrf_post(client, reverse("dashboard:job-retry", args=[dead.pk])).status_code == 404
    theirs.refresh_from_db()
    dead.refresh_from_db()
    assert (theirs.status, dead.status) == (JobStatus.QUEUED, JobStatus.DEAD)


def test_overview_counts_only_the_users_jobs(alice, bob):
    """Count a user's own jobs on their overview, and everyone's for staff."""
    JobFactory.create_batch(2, owner=alice)
    JobFactory.create_batch(3, owner=bob)
    dead_job(bob)
    assert selectors.overview(alice)["counts"][JobStatus.QUEUED] == 2
    assert selectors.overview(alice)["counts"][JobStatus.DEAD] == 0
    assert selectors.overview(UserFactory(is_staff=True))["counts"][JobStatus.QUEUED] == 5


def test_status_counts_stop_at_the_cap(alice, monkeypatch):
    """Stop each status's count just past COUNT_CAP, completed jobs included, and show it as "N+"."""
    monkeypatch.setattr(selectors, "COUNT_CAP", 3)
    JobFactory.create_batch(5, owner=alice)
    JobFactory.create_batch(2, owner=alice, status=JobStatus.COMPLETED, finished_at=timezone.now())
    JobFactory.create_batch(6, status=JobStatus.COMPLETED, finished_at=timezone.now())
    counts = selectors.overview(alice)["counts"]
    assert (counts[JobStatus.QUEUED], counts[JobStatus.COMPLETED], counts[JobStatus.DEAD]) == (4, 2, 0)
    staff_counts = selectors.overview(UserFactory(is_staff=True))["counts"]
    assert (staff_counts[JobStatus.QUEUED], staff_counts[JobStatus.COMPLETED]) == (4, 4)
    assert set(counts) == set(JobStatus.values)


def test_dlq_shows_only_the_users_dead_jobs(alice, bob):
    """Group only the user's own dead jobs."""
    dead_job(alice, error="ValueError: mine")
    dead_job(bob, error="KeyError: theirs")
    html = client_for(alice).get(reverse("dashboard:dlq")).content.decode()
    assert "ValueError: mine" in html
    assert "KeyError: theirs" not in html


# --- Escaping -------------------------------------------------------------------------


def test_values_from_jobs_are_escaped(alice):
    """Escape payload, result, error and traceback: a <script> in them stays text."""
    script = "<script>alert('x')</script>"
    job = JobFactory(
        owner=alice, status=JobStatus.DEAD, attempts=1, payload={"text": script}, error=f"RuntimeError: {script}",
        history=[{"attempt": 1, "outcome": "failed", "error": script, "traceback": script,
                  "started_at": timezone.now().isoformat(), "finished_at": timezone.now().isoformat()}],
    )
    client = client_for(alice)
    pages = [
        client.get(reverse("dashboard:job-detail", args=[job.pk])),
        client.get(reverse("dashboard:dlq")),
        client.get(reverse("dashboard:jobs")),
    ]
    group = selectors.dlq_groups(alice)[0]["group"]
    pages.append(client.get(reverse("dashboard:dlq-group", args=[group])))
    pages.append(client.get(reverse("dashboard:dlq-requeue"), {"id": job.pk}))
    for response in pages:
        html = response.content.decode()
        assert "<script>alert" not in html
    assert "&lt;script&gt;alert(" in pages[0].content.decode()


def test_completed_result_is_shown_escaped(alice):
    """Show a completed job's result as escaped JSON."""
    job = JobFactory(owner=alice, status=JobStatus.COMPLETED, result={"html": "<b>bold</b>"}, progress=100)
    html = client_for(alice).get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<b>bold</b>" not in html


# --- Job list ---------------------------------------------------------------------------


def test_job_list_pages_by_keyset(alice):
    """Page through 120 jobs 50 at a time by id cursor, with no job missing or repeated."""
    ids = sorted((job.pk for job in JobFactory.create_batch(120, owner=alice)), reverse=True)
    jobs = Job.objects.for_user(alice)
    first = selectors.job_page(jobs)
    second = selectors.job_page(jobs, before=first.older)
    third = selectors.job_page(jobs, before=second.older)
    seen = [job.pk for page in (first, second, third) for job in page.jobs]
    assert seen == ids
    assert (first.newer, third.older) == (None, None)
    back = selectors.job_page(jobs, after=second.newer)
    assert [job.pk for job in back.jobs] == [job.pk for job in first.jobs]
    assert back.newer is None


def test_job_list_page_links_follow_the_cursor(alice):
    """Link to the older page with ?before=<last id>, keeping the filters."""
    JobFactory.create_batch(55, owner=alice)
    client = client_for(alice)
    html = client.get(reverse("dashboard:jobs"), {"status": "queued"}).content.decode()
    oldest_on_page = Job.objects.order_by("-id")[49].pk
    assert f"?status=queued&amp;before={oldest_on_page}" in html
    older = client.get(reverse("dashboard:jobs"), {"status": "queued", "before": oldest_on_page}).content.decode()
    assert older.count("data-job-id=") == 5


def test_job_list_filters(alice):
    """Filter by status, type, queue, priority and creation time."""
    match = JobFactory(owner=alice, status=JobStatus.RUNNING, type="uppercase_text", queue="emails", priority=Priority.HIGH)
    JobFactory(owner=alice, status=JobStatus.QUEUED, type="uppercase_text", queue="emails", priority=Priority.HIGH)
    JobFactory(owner=alice, status=JobStatus.RUNNING, type="reverse_string", queue="emails", priority=Priority.HIGH)
    JobFactory(owner=alice, status=JobStatus.RUNNING, type="uppercase_text", queue="other", priority=Priority.HIGH)
    JobFactory(owner=alice, status=JobStatus.RUNNING, type="uppercase_text", queue="emails", priority=Priority.LOW)
    old = JobFactory(owner=alice, status=JobStatus.RUNNING, type="uppercase_text", queue="emails", priority=Priority.HIGH)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    query = {"status": "running", "type": "uppercase_text", "queue": "emails", "priority": "high", "since": "24h"}
    html = client_for(alice).get(reverse("dashboard:jobs"), query).content.decode()
    assert html.count("data-job-id=") == 1
    assert f'data-job-id="{match.pk}"' in html


def test_job_list_rejects_bad_filters(alice):
    """Answer 400 for a filter value that is not allowed."""
    assert client_for(alice).get(reverse("dashboard:jobs"), {"status": "exploded"}).status_code == 400


# --- Job actions -------------------------------------------------------------------------


def test_cancel_needs_csrf(alice):
    """Refuse a POST without the CSRF token."""
    job = JobFactory(owner=alice)
    response = client_for(alice).post(reverse("dashboard:job-cancel", args=[job.pk]))
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_cancel_and_retry_buttons(alice):
    """Cancel an unfinished job, then retry it, through the detail page's forms."""
    job = JobFactory(owner=alice)
    client = client_for(alice)
    html = client.get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert "Cancel job" in html and ">Retry<" not in html
    response = csrf_post(client, reverse("dashboard:job-cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    html = client.get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert "Cancelled job" in html and ">Retry<" in html
    csrf_post(client, reverse("dashboard:job-retry", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_cancel_of_a_finished_job_shows_why_not(alice):
    """Show the refused transition as a message instead of failing."""
    job = JobFactory(owner=alice, status=JobStatus.COMPLETED)
    client = client_for(alice)
    response = csrf_post(client, reverse("dashboard:job-cancel", args=[job.pk]), follow=True)
    assert "Cannot cancel job" in response.content.decode()


def test_retry_respects_the_active_job_limit(alice, settings):
    """Refuse a retry that would pass the user's cap on unfinished jobs, with the reason."""
    settings.JOBS_USER_MAX_ACTIVE = 1
    JobFactory(owner=alice)
    dead = dead_job(alice)
    response = csrf_post(client_for(alice), reverse("dashboard:job-retry", args=[dead.pk]), follow=True)
    assert "unfinished jobs" in response.content.decode()
    dead.refresh_from_db()
    assert dead.status == JobStatus.DEAD


def test_retry_and_requeue_spend_the_per_minute_allowance(alice, settings):
    """Refuse a retry once the allowance is spent, and requeue from the DLQ only what is left of it."""
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 2
    client = client_for(alice)
    first = dead_job(alice)
    csrf_post(client, reverse("dashboard:job-retry", args=[first.pk]))
    jobs = [dead_job(alice) for _ in range(3)]
    confirm = client.get(reverse("dashboard:dlq-requeue"), {"id": [j.pk for j in jobs]}).content.decode()
    assert "only 1 of these will be requeued" in confirm
    response = csrf_post(client, reverse("dashboard:dlq-requeue"), {"id": [j.pk for j in jobs]}, follow=True)
    assert "Requeued 1 job. 2 stay in the DLQ" in response.content.decode()
    response = csrf_post(client, reverse("dashboard:job-retry", args=[jobs[2].pk]), follow=True)
    assert "requeue 2 jobs a minute" in response.content.decode()
    assert Job.objects.filter(owner=alice, status=JobStatus.DEAD).count() == 2


def test_job_detail_shows_attempts_and_timeline(alice):
    """Show every attempt with its error and traceback, and a timeline."""
    now = timezone.now()
    job = JobFactory(
        owner=alice, status=JobStatus.RETRYING, attempts=1, error="RuntimeError: first",
        history=[{"attempt": 1, "outcome": "failed", "error": "RuntimeError: first", "traceback": "Traceback (most recent call last): ...",
                  "worker": "w-1", "started_at": (now - timedelta(seconds=3)).isoformat(), "finished_at": now.isoformat()}],
    )
    html = client_for(alice).get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert "Attempt 1 failed" in html
    assert "Traceback (most recent call last)" in html
    assert "Next attempt due" in html
    assert "Run now" in html


def test_a_claimed_job_shows_its_worker_and_waits_for_a_slot(alice):
    """Show a claimed job as claimed by its worker, waiting for a free slot, on its page and in the list: never running."""
    worker = Worker.objects.create(hostname="box", pid=4242, queues=[], concurrency=1, busy=1)
    job = JobFactory(owner=alice, status=JobStatus.CLAIMED, leased_by=worker.id)
    client = client_for(alice)
    detail = client.get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert re.search(r'id="job-status"[^>]*>claimed<', detail)
    assert "claimed by worker <span class=\"mono\">box:4242</span>, waiting for a free slot" in detail
    assert "Running for" not in detail and "is running" not in detail
    listing = client.get(reverse("dashboard:jobs")).content.decode()
    assert re.search(rf'data-status-for="{job.pk}">claimed<', listing)
    assert "claimed by worker <span class=\"mono\">box:4242</span>, waiting for a free slot" in listing
    assert ">running<" not in listing
    assert [j.pk for j in selectors.filtered_jobs(alice, status=JobStatus.CLAIMED)] == [job.pk]


def test_a_running_job_names_its_worker_and_how_long_it_runs(alice):
    worker = Worker.objects.create(hostname="box", pid=4242, queues=[], concurrency=1, busy=1)
    job = JobFactory(owner=alice, status=JobStatus.RUNNING, leased_by=worker.id, attempts=1,
                     started_at=timezone.now() - timedelta(seconds=6))
    detail = client_for(alice).get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert "running on worker <span class=\"mono\">box:4242</span>" in detail
    assert "Running for" in detail


def test_a_retrying_job_does_not_say_it_is_running(alice):
    """Show no "Running for" for a job whose last attempt started but that waits out its backoff."""
    job = JobFactory(owner=alice, status=JobStatus.RETRYING, attempts=1, started_at=timezone.now() - timedelta(seconds=6),
                     run_at=timezone.now() + timedelta(seconds=30))
    detail = client_for(alice).get(reverse("dashboard:job-detail", args=[job.pk])).content.decode()
    assert "Running for" not in detail


def test_the_overview_does_not_call_the_queues_drained_while_a_job_is_claimed(alice):
    """Count claimed jobs next to running ones, and say they wait for a slot instead of "No job is waiting"."""
    client = client_for(alice)
    assert "No job is waiting" in client.get(reverse("dashboard:overview")).content.decode()
    JobFactory(owner=alice, status=JobStatus.CLAIMED)
    cache.clear()
    html = client.get(reverse("dashboard:overview")).content.decode()
    assert "No job is waiting" not in html and "Nothing is waiting" not in html
    assert "1 claimed by workers, waiting for a free slot" in html
    labels = re.findall(r'data-status-count="(\w+)"', html)
    assert labels[labels.index("claimed") + 1] == "running"
    assert re.search(r'data-status-count="claimed">\s*<span class="stat-label">Claimed</span>\s*'
                     r'<span class="stat-value">1</span>', html)


def test_the_overview_does_not_call_the_queues_drained_while_a_job_is_due(alice):
    JobFactory(owner=alice, status=JobStatus.RETRYING, attempts=1, run_at=timezone.now() - timedelta(seconds=1))
    html = client_for(alice).get(reverse("dashboard:overview")).content.decode()
    assert "No job is waiting" not in html


# --- DLQ ------------------------------------------------------------------------------------


def test_dlq_groups_the_same_failure_once_with_a_count(alice):
    """Show dead jobs with the same type and error as one group with its count."""
    for _ in range(3):
        dead_job(alice, error="ConnectionError: smtp down")
    dead_job(alice, error="ValueError: bad address")
    groups = selectors.dlq_groups(alice)
    assert [(g["count"], g["error_head"]) for g in groups] == [(3, "ConnectionError: smtp down"), (1, "ValueError: bad address")]
    html = client_for(alice).get(reverse("dashboard:dlq")).content.decode()
    assert html.count("ConnectionError: smtp down") == 1
    assert "Requeue all 3" in html


def test_dlq_groups_long_errors_by_their_start(alice):
    """Group errors that differ only past the first 500 characters together."""
    prefix = "x" * selectors.DLQ_ERROR_PREFIX
    dead_job(alice, error=prefix + "tail one")
    dead_job(alice, error=prefix + "tail two")
    assert [g["count"] for g in selectors.dlq_groups(alice)] == [2]


def test_requeue_one_asks_for_confirmation_then_requeues(alice):
    """Show a confirmation page first; requeue only on the confirming POST."""
    job = dead_job(alice)
    client = client_for(alice)
    confirm = client.get(reverse("dashboard:dlq-requeue"), {"id": job.pk})
    assert confirm.status_code == 200
    assert "Requeue 1 job?" in confirm.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.DEAD
    response = csrf_post(client, reverse("dashboard:dlq-requeue"), {"id": [job.pk]}, follow=True)
    assert "Requeued 1 job." in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_requeue_a_selection(alice):
    """Requeue exactly the selected dead jobs."""
    a, b, c = (dead_job(alice) for _ in range(3))
    csrf_post(client_for(alice), reverse("dashboard:dlq-requeue"), {"id": [a.pk, c.pk]})
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert (statuses[a.pk], statuses[b.pk], statuses[c.pk]) == ("queued", "dead", "queued")


def test_requeue_a_whole_group(alice):
    """Requeue every dead job of one group and leave the other groups alone."""
    smtp = [dead_job(alice, error="ConnectionError: smtp down") for _ in range(3)]
    other = dead_job(alice, error="ValueError: bad")
    group = next(g["group"] for g in selectors.dlq_groups(alice) if g["count"] == 3)
    client = client_for(alice)
    confirm = client.get(reverse("dashboard:dlq-requeue"), {"group": group}).content.decode()
    assert "Requeue 3 jobs?" in confirm
    csrf_post(client, reverse("dashboard:dlq-requeue"), {"group": group})
    assert set(Job.objects.filter(pk__in=[j.pk for j in smtp]).values_list("status", flat=True)) == {"queued"}
    other.refresh_from_db()
    assert other.status == JobStatus.DEAD


def test_requeue_within_the_users_limit(alice, settings):
    """Requeue only as many as the active-job cap allows, and say how many stayed."""
    settings.JOBS_USER_MAX_ACTIVE = 2
    jobs = [dead_job(alice) for _ in range(3)]
    client = client_for(alice)
    confirm = client.get(reverse("dashboard:dlq-requeue"), {"id": [j.pk for j in jobs]}).content.decode()
    assert "only 2 of these will be requeued" in confirm
    response = csrf_post(client, reverse("dashboard:dlq-requeue"), {"id": [j.pk for j in jobs]}, follow=True)
    assert "Requeued 2 jobs. 1 stay in the DLQ" in response.content.decode()


def test_requeue_cannot_touch_someone_elses_dead_jobs(alice, bob):
    """Ignore ids of another user's dead jobs in a requeue."""
    theirs = dead_job(bob)
    csrf_post(client_for(alice), reverse("dashboard:dlq-requeue"), {"id": [theirs.pk]})
    theirs.refresh_from_db()
    assert theirs.status == JobStatus.DEAD


def test_requeue_needs_csrf(alice):
    """Refuse a requeue POST without the CSRF token."""
    job = dead_job(alice)
    response = client_for(alice).post(reverse("dashboard:dlq-requeue"), {"id": [job.pk]})
    assert response.status_code == 403


# --- Submit -------------------------------------------------------------------------------


def submit(client, **data):
    client.get(reverse("dashboard:submit"))
    form = {"type": "reverse_string", "priority": "normal", "idempotency_key": data.pop("key", "k-1"), **data}
    return csrf_post(client, reverse("dashboard:submit"), form)


def test_submit_creates_a_job_and_shows_it(alice):
    """Create the job from the form's fields and redirect to its page."""
    response = submit(client_for(alice), p_text="hello", priority="low", max_retries="2")
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:job-detail", args=[job.pk])
    assert (job.owner, job.payload, job.priority, job.max_retries) == (alice, {"text": "hello"}, Priority.LOW, 2)


def test_submit_offers_high_priority_and_long_runs_to_staff_only(alice, staff):
    """Offer users no High priority and refuse it, and a sleep past their timeout, next to the field; staff may."""
    page = client_for(alice).get(reverse("dashboard:submit")).content.decode()
    assert 'value="high"' not in page and 'value="low"' in page
    assert 'value="high"' in client_for(staff).get(reverse("dashboard:submit")).content.decode()
    refused = submit(client_for(alice), p_text="hello", priority="high")
    assert refused.status_code == 400 and "high is not one of the available choices" in refused.content.decode()
    too_long = submit(client_for(alice), type="sleep", p_seconds="3600", key="k-2")
    assert too_long.status_code == 400
    assert "Must be less than 300 seconds" in too_long.content.decode()
    assert not Job.objects.exists()
    assert submit(client_for(staff), p_text="hello", priority="high").status_code == 302
    assert submit(client_for(staff), type="sleep", p_seconds="3600", key="k-2").status_code == 302


def test_submit_twice_with_one_form_makes_one_job(alice):
    """Make one job from a form sent twice (a double click)."""
    client = client_for(alice)
    submit(client, p_text="hello", key="same")
    submit(client, p_text="hello", key="same")
    assert Job.objects.count() == 1


def test_submit_shows_payload_errors_next_to_the_field(alice):
    """Show the type's validation errors inline and store nothing."""
    response = submit(client_for(alice), type="fibonacci_calc", p_n="many")
    html = response.content.decode()
    assert response.status_code == 400
    assert "Must be an integer between 0 and 1000." in html
    assert 'class="field invalid"' in html
    assert Job.objects.count() == 0


def test_submit_raw_json_for_types_without_fields(alice, monkeypatch):
    """Take a JSON payload for a type the form has no fields for, and flag bad JSON."""
    from jobs import registry

    monkeypatch.setitem(registry._registry, "dashboard_custom", registry.Handler(name="dashboard_custom", func=lambda job: None))
    client = client_for(alice)
    bad = submit(client, type="dashboard_custom", p_payload="{not json")
    assert bad.status_code == 400 and "Enter valid JSON" in bad.content.decode()
    submit(client, type="dashboard_custom", p_payload='{"a": [1, 2]}', key="k-2")
    assert Job.objects.get().payload == {"a": [1, 2]}


def test_submit_refuses_nul_next_to_the_field(alice, settings):
    """Refuse a NUL typed into a payload input with 400 and the error beside that input; store nothing."""
    settings.JOBS_EMAIL_USER_RECIPIENTS = ("@example.com",)  # send_email is for staff only unless opened
    response = submit(client_for(alice), type="send_email", p_to="ada@example.com", p_subject="Hi\x00", p_body="b")
    html = response.content.decode()
    assert response.status_code == 400
    subject = html[html.index('name="p_subject"'):]
    assert subject[: subject.index("</label>")].count("Must not contain NUL characters.") == 1
    assert Job.objects.count() == 0


@pytest.mark.parametrize("text, message", [
    (r'{"a": "\u0000"}', "a: Must not contain NUL characters."),
    (r'{"a": ["\ud800"]}', "a: Must not contain the lone surrogate U+D800."),
    (r'"\udfff"', "Must not contain the lone surrogate U+DFFF."),
])
def test_submit_refuses_nul_and_lone_surrogates_in_raw_json(alice, monkeypatch, text, message):
    """Refuse JSON whose text PostgreSQL cannot store with 400 and the field named; store nothing."""
    from jobs import registry

    monkeypatch.setitem(registry._registry, "dashboard_custom", registry.Handler(name="dashboard_custom", func=lambda job: None))
    response = submit(client_for(alice), type="dashboard_custom", p_payload=text)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Job.objects.count() == 0


@pytest.mark.parametrize("field", ["queue", "idempotency_key"])
def test_submit_refuses_nul_in_the_options(alice, field):
    """Refuse a NUL in the queue name or the form's key with 400; store nothing."""
    response = submit(client_for(alice), p_text="hello", **{field: "a\x00b"})
    assert response.status_code == 400
    assert Job.objects.count() == 0


def test_submit_shows_the_rate_limit(alice, settings):
    """Show the per-minute limit's message when it is reached."""
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 1
    client = client_for(alice)
    submit(client, p_text="one", key="a")
    response = submit(client, p_text="two", key="b")
    assert response.status_code == 429
    assert "jobs a minute" in response.content.decode()


def test_submit_offers_staff_only_types_to_staff_only(alice, staff, settings):
    """List staff-only job types in the picker for staff, and refuse them to others."""
    settings.JOBS_ENABLE_SHELL_COMMANDS = True
    assert "run_command" not in client_for(alice).get(reverse("dashboard:submit")).content.decode()
    assert "run_command" in client_for(staff).get(reverse("dashboard:submit")).content.decode()
    response = submit(client_for(alice), type="run_command", p_argv="ls")
    assert response.status_code == 400
    assert Job.objects.count() == 0


def test_submit_fields_follow_the_type_picker(alice, settings):
    """Return the payload inputs of the chosen type."""
    settings.JOBS_EMAIL_USER_RECIPIENTS = ("@example.com",)  # send_email is for staff only unless opened
    html = client_for(alice).get(reverse("dashboard:submit-fields"), {"type": "send_email"}).content.decode()
    assert 'name="p_to"' in html and 'name="p_subject"' in html and 'name="p_body"' in html


# Every payload input of each built-in type, filled in with a value its validator accepts.
FILLED = {
    "reverse_string": {"p_text": "hello"},
    "uppercase_text": {"p_text": "hello"},
    "fibonacci_calc": {"p_n": "10"},
    "sleep": {"p_seconds": "1"},
    "fail": {"p_message": "boom"},
    "send_email": {"p_to": "ada@example.com", "p_subject": "Hi", "p_body": "Hello."},
    "process_video": {"p_url": "https://example.com/cat.mp4", "p_duration": "1", "p_steps": "2"},
    "scrape_website": {"p_url": "https://example.com"},
    "run_command": {"p_argv": "/bin/echo\nhello", "p_timeout": "5"},
}


def payload_inputs(html: str) -> dict[str, str]:
    """Return each payload input's label block in `html`, by the input's name."""
    blocks = re.findall(r'<label class="(?:field|check-field)[^"]*">(.*?)</label>', html, re.S)
    return {re.search(r'name="(p_\w+)"', block).group(1): block for block in blocks if 'name="p_' in block}


def marked_required(block: str) -> bool:
    return '<abbr title="required">' in block


@pytest.mark.parametrize("type_name", sorted(FILLED))
def test_an_input_is_marked_required_exactly_when_leaving_it_empty_is_refused(staff, settings, type_name):
    """Mark the inputs that may not be left empty, and only those; refuse each such one left empty, beside it."""
    settings.JOBS_ENABLE_SHELL_COMMANDS = True
    settings.JOBS_SHELL_ALLOWED_COMMANDS = ("/bin/echo",)
    client = client_for(staff)
    inputs = payload_inputs(client.get(reverse("dashboard:submit-fields"), {"type": type_name}).content.decode())
    assert set(inputs) >= set(FILLED[type_name])
    assert submit(client, type=type_name, key="all", **FILLED[type_name]).status_code == 302
    for name in FILLED[type_name]:
        response = submit(client, type=type_name, key=f"without-{name}", **{**FILLED[type_name], name: ""})
        if marked_required(inputs[name]):
            assert response.status_code == 400, f"{name} is marked required but may be left empty"
            assert 'class="field-error"' in payload_inputs(response.content.decode())[name], name
        else:
            assert response.status_code == 302, f"{name} is not marked required but may not be left empty"


@pytest.mark.parametrize("type_name, required", [
    ("reverse_string", set()), ("send_email", {"p_to", "p_subject"}), ("process_video", set()),
    ("fibonacci_calc", {"p_n"}), ("scrape_website", {"p_url"}),
])
def test_required_markers_follow_the_validators(alice, settings, type_name, required):
    """Mark Text and Body as optional (empty text is valid), To, Subject, n and URL as required."""
    settings.JOBS_EMAIL_USER_RECIPIENTS = ("@example.com",)  # send_email is for staff only unless opened
    html = client_for(alice).get(reverse("dashboard:submit-fields"), {"type": type_name}).content.decode()
    assert {name for name, block in payload_inputs(html).items() if marked_required(block)} == required


def test_empty_text_and_body_are_sent_as_empty_strings(alice, settings):
    """Store an empty Text or Body as the empty string the validators accept, as the API would."""
    settings.JOBS_EMAIL_USER_RECIPIENTS = ("@example.com",)  # send_email is for staff only unless opened
    client = client_for(alice)
    assert submit(client, p_text="", key="a").status_code == 302
    assert submit(client, type="send_email", p_to="ada@example.com", p_subject="Hi", p_body="", key="b").status_code == 302
    assert sorted(Job.objects.values_list("payload", flat=True), key=len) == [
        {"text": ""}, {"to": ["ada@example.com"], "subject": "Hi", "body": ""}]


@pytest.mark.parametrize("name", ["a b/c", "x" * 65, "émails", "emails ", "emails\n", "default", "reports.v2-eu_1", "x" * 64])
def test_submit_takes_exactly_the_queue_names_the_api_takes(alice, name):
    """Accept a queue name on the Submit page exactly when the API accepts it, with the API's message beside it."""
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(alice).access_token}")
    by_api = api.post("/api/jobs/", {"type": "reverse_string", "payload": "x", "queue": name}, format="json")
    by_form = submit(client_for(alice), p_text="x", queue=name)
    assert (by_api.status_code == 201) == (by_form.status_code == 302), (by_api.content, by_form.status_code)
    if by_api.status_code == 400:
        assert by_form.status_code == 400
        assert by_api.json()["queue"] == ["Use 1 to 64 letters, digits and . - _ only."]
        assert "Use 1 to 64 letters, digits and . - _ only." in by_form.content.decode()
    else:  # both trim the name
        assert list(Job.objects.order_by("id").values_list("queue", flat=True)) == [name.strip()] * 2


# --- Overview -------------------------------------------------------------------------------


def test_overview_shows_throughput_depth_and_oldest_waiting(staff):
    """Count finished jobs per minute, waiting jobs per queue and priority, and the oldest waiting job."""
    queue.enqueue_many("reverse_string", ["a", "b", "c"])
    queue.enqueue("reverse_string", "d", max_retries=0)
    claimed = queue.claim_jobs(worker_id=uuid.uuid4(), limit=10)
    assert queue.complete_jobs([queue.Completion(job, "ok") for job in claimed[:3]])
    assert queue.fail_job(claimed[3], error="boom") == JobStatus.DEAD
    oldest = JobFactory(queue="emails", priority=Priority.LOW, run_at=timezone.now() - timedelta(minutes=5))
    JobFactory(queue="emails", priority=Priority.HIGH)
    JobFactory(status=JobStatus.SCHEDULED, run_at=timezone.now() + timedelta(hours=1))
    data = selectors._overview(staff)
    chart = selectors.throughput(staff)
    assert len(chart) == selectors.THROUGHPUT_BUCKETS
    assert chart[-1].completed == 3 and chart[-1].failed == 1
    assert {(row["queue"], row["priority_label"], row["count"]) for row in data["depth"]} == {
        ("emails", "low", 1), ("emails", "high", 1)
    }
    assert data["oldest"].pk == oldest.pk
    assert data["dlq_size"] == 1
    html = client_for(staff).get(reverse("dashboard:overview")).content.decode()
    assert 'class="chart"' in html and 'class="bar completed"' in html


def test_overview_counts_and_finds_jobs_of_any_priority(staff):
    """Count waiting jobs of priorities between and beyond the named ones, highest first, and find the oldest of them."""
    oldest = JobFactory(priority=-7, run_at=timezone.now() - timedelta(minutes=5))
    JobFactory.create_batch(2, priority=100)
    JobFactory(priority=Priority.NORMAL)
    data = selectors._overview(staff)
    assert [(row["priority_label"], row["count"]) for row in data["depth"]] == [("100", 2), ("normal", 1), ("-7", 1)]
    assert data["oldest"].pk == oldest.pk
    html = client_for(staff).get(reverse("dashboard:jobs")).content.decode()
    assert 'class="priority priority-100">100<' in html


def test_the_chart_is_laid_out_in_plain_decimals():
    """Scale the bars to a round top, and give the SVG coordinates as plain decimals with their titles."""
    from datetime import datetime

    from dashboard.charts import throughput_chart

    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    buckets = [selectors.Bucket(start=start + timedelta(minutes=n), completed=n * 300, failed=n) for n in range(15)]
    chart = throughput_chart(buckets)
    last_completed = chart.bars[-2]
    assert (last_completed.kind, last_completed.value, last_completed.title) == ("completed", 4200, "12:14: 4,200 completed")
    # 4,200 of a top of 5,000 is 84 % of the plot's 200 units.
    assert (last_completed.height, last_completed.y) == ("168", "32")
    assert [line.label for line in chart.grid] == ["0", "2,500", "5,000"]
    assert all(float(bar.x) >= 0 and float(bar.width) > 0 for bar in chart.bars)
    assert not chart.empty


def test_throughput_shows_each_user_their_own_jobs_and_staff_everyones(alice, bob, staff):
    """Chart a user's finished jobs for them alone, and every finished job, unowned ones included, for staff."""
    queue.enqueue_many("reverse_string", ["a", "b"], owner=alice)
    queue.enqueue("reverse_string", "c", owner=bob, max_retries=0)
    queue.enqueue("reverse_string", "d")
    claimed = {job.payload["text"]: job for job in queue.claim_jobs(worker_id=uuid.uuid4(), limit=10)}
    queue.complete_jobs([queue.Completion(claimed[p], "ok") for p in ("a", "b", "d")])
    queue.fail_job(claimed["c"], error="boom")
    last = lambda user: (selectors.throughput(user)[-1].completed, selectors.throughput(user)[-1].failed)  # noqa: E731
    assert last(alice) == (2, 0)
    assert last(bob) == (0, 1)
    assert last(staff) == (3, 1)
    assert last(UserFactory()) == (0, 0)


def test_queue_depth_stops_at_the_cap_in_claim_order(staff, alice, monkeypatch):
    """Count only each priority's jobs due first, as lower bounds, and keep each listed row's oldest job exact."""
    monkeypatch.setattr(selectors, "COUNT_CAP", 3)
    now = timezone.now()
    oldest_normal = JobFactory(queue="default", priority=Priority.NORMAL, run_at=now - timedelta(minutes=8))
    JobFactory(queue="default", priority=Priority.NORMAL, run_at=now - timedelta(minutes=3))
    JobFactory(queue="emails", priority=Priority.NORMAL, run_at=now - timedelta(minutes=2))
    JobFactory(queue="emails", priority=Priority.NORMAL, run_at=now - timedelta(minutes=1))
    JobFactory(queue="reports", priority=Priority.NORMAL, run_at=now - timedelta(seconds=30))
    oldest_high = JobFactory(queue="emails", priority=Priority.HIGH, run_at=now - timedelta(hours=1))
    JobFactory(queue="later", priority=Priority.HIGH, run_at=now + timedelta(hours=1))
    depth, capped = selectors.queue_depth(staff)
    assert capped
    assert [(row["queue"], row["priority_label"], row["count"], row["lower_bound"], row["oldest"]) for row in depth] == [
        ("default", "normal", 2, True, oldest_normal.run_at),
        ("emails", "high", 1, False, oldest_high.run_at),
        ("emails", "normal", 2, True, now - timedelta(minutes=2)),
    ]
    html = client_for(staff).get(reverse("dashboard:overview")).content.decode()
    assert "a count marked + is at least that" in html
    # Below the cap, every due job is counted, and nothing says otherwise.
    monkeypatch.setattr(selectors, "COUNT_CAP", 100)
    depth, capped = selectors.queue_depth(staff)
    assert not capped
    assert {(row["queue"], row["priority_label"], row["count"], row["lower_bound"]) for row in depth} == {
        ("default", "normal", 2, False), ("emails", "normal", 2, False), ("reports", "normal", 1, False),
        ("emails", "high", 1, False),
    }
    # A user's own waiting jobs are all counted: they have few.
    assert selectors.queue_depth(alice) == ([], False)
    mine = JobFactory(owner=alice, queue="emails", run_at=now - timedelta(minutes=1))
    JobFactory(owner=alice, queue="emails")
    depth, capped = selectors.queue_depth(alice)
    assert not capped and [(row["queue"], row["count"]) for row in depth] == [("emails", 2)]
    assert selectors.oldest_waiting(alice).pk == mine.pk


def test_counts_stop_at_the_cap(alice, monkeypatch):
    """Show a count that reaches the cap as "N+" instead of counting every row."""
    monkeypatch.setattr(selectors, "COUNT_CAP", 3)
    monkeypatch.setattr("dashboard.templatetags.dashboard.COUNT_CAP", 3)
    JobFactory.create_batch(5, owner=alice)
    assert selectors.overview(alice)["counts"][JobStatus.QUEUED] == 4
    html = client_for(alice).get(reverse("dashboard:overview")).content.decode()
    assert "3+" in html

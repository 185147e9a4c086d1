"""One read model of jobs by status: the API, the dashboard, /metrics and queue_status count the same jobs the same way.

The worker's claimed and running jobs are written here directly, as the
queue would leave them: a claimed job holds a lease, no attempt and no
start time; a running one has started its attempt.
"""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from dashboard import selectors as dashboard_selectors
from jobs import selectors
from jobs.models import HELD_STATUSES, JobStatus, Worker
from tests.db.test_metrics import scrape, value
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def nothing_cached(settings):
    # The overview and the job gauges are cached for a few seconds; each test reads its own rows.
    settings.METRICS_CACHE_SECONDS = 0
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def staff():
    return UserFactory(username="operator", is_staff=True)


@pytest.fixture
def worker():
    return Worker.objects.create(hostname="box", pid=4242, queues=[], concurrency=2, busy=2)


@pytest.fixture
def jobs(alice, worker):
    """Jobs in every status, in two queues, some of them alice's; two running and three claimed by `worker`."""
    now = timezone.now()
    bob = UserFactory(username="bob")
    for owner in (alice, bob):
        JobFactory.create_batch(2, owner=owner)
        JobFactory(owner=owner, status=JobStatus.SCHEDULED, run_at=now + timedelta(hours=1))
        JobFactory(owner=owner, status=JobStatus.RETRYING, attempts=1, run_at=now + timedelta(seconds=30))
        JobFactory(owner=owner, status=JobStatus.COMPLETED, queue="mail", attempts=1, started_at=now)
        JobFactory(owner=owner, status=JobStatus.DEAD, queue="mail", attempts=1)
        JobFactory(owner=owner, status=JobStatus.CANCELLED)
        JobFactory(owner=owner, status=JobStatus.EXPIRED, queue="mail")
    JobFactory.create_batch(2, owner=alice, status=JobStatus.CLAIMED, leased_by=worker.id)
    JobFactory(owner=bob, status=JobStatus.CLAIMED, leased_by=worker.id, queue="mail")
    JobFactory(owner=alice, status=JobStatus.RUNNING, leased_by=worker.id, attempts=1, started_at=now)
    JobFactory(owner=bob, status=JobStatus.RUNNING, leased_by=worker.id, attempts=1, started_at=now, queue="mail")


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def browser_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def overview_counts(user) -> dict[str, int]:
    """Return the counts the overview page shows, read from its HTML."""
    html = browser_for(user).get(reverse("dashboard:overview")).content.decode()
    found = re.findall(r'data-status-count="(\w+)">\s*<span class="stat-label">[^<]*</span>\s*'
                       r'<span class="stat-value">([\d,]+)</span>', html)
    return {status: int(n.replace(",", "")) for status, n in found}


def test_every_reader_counts_the_same_jobs_in_each_status(jobs, staff):
    """Agree on every status's count, claimed included: API stats, the overview, /metrics and queue_status."""
    expected = {
        **dict.fromkeys(JobStatus.values, 0), "queued": 4, "scheduled": 2, "claimed": 3, "running": 2,
        "retrying": 2, "completed": 2, "dead": 2, "cancelled": 2, "expired": 2,
    }
    assert selectors.status_counts() == expected

    assert api_for(staff).get("/api/jobs/stats/").json()["by_status"] == expected
    assert dashboard_selectors.overview(staff)["counts"] == expected
    assert overview_counts(staff) == expected
    samples = scrape()
    assert {status: sum(value(samples, "skipjack_jobs", queue=queue, status=status) for queue in ("default", "mail"))
            for status in JobStatus.values} == expected
    out = StringIO()
    call_command("queue_status", "--json", stdout=out)
    assert json.loads(out.getvalue())["statuses"] == expected


def test_a_users_counts_agree_between_the_api_and_the_overview(jobs, alice):
    """Count only the user's own jobs, the same in API stats and on the overview."""
    mine = {
        **dict.fromkeys(JobStatus.values, 0), "queued": 2, "scheduled": 1, "claimed": 2, "running": 1,
        "retrying": 1, "completed": 1, "dead": 1, "cancelled": 1, "expired": 1,
    }
    assert selectors.status_counts(alice) == mine
    assert api_for(alice).get("/api/jobs/stats/").json()["by_status"] == mine
    assert overview_counts(alice) == mine


def test_counts_per_queue_are_the_metrics_gauges(jobs):
    """Report per queue exactly what status_counts(per="queue") counts, claimed as a status of its own."""
    per_queue = selectors.status_counts(per="queue")
    assert list(per_queue) == ["default", "mail"]
    assert (per_queue["default"]["claimed"], per_queue["mail"]["claimed"]) == (2, 1)
    samples = scrape()
    for queue, counts in per_queue.items():
        for status, n in counts.items():
            assert value(samples, "skipjack_jobs", queue=queue, status=status) == n


def test_a_capped_count_stops_past_the_cap(jobs, alice, staff):
    counts = selectors.status_counts(staff, cap=2)
    assert (counts["queued"], counts["claimed"], counts["scheduled"]) == (3, 3, 2)
    assert selectors.status_counts(alice, cap=1)["claimed"] == 2


def test_counts_refuse_an_unknown_grouping_and_a_capped_one():
    with pytest.raises(ValueError):
        selectors.status_counts(per="owner")
    with pytest.raises(ValueError):
        selectors.status_counts(per="queue", cap=10)


def test_held_jobs_are_counted_per_worker(jobs, worker, staff):
    """Count each worker's claimed and running jobs apart, on the workers page and in queue_status."""
    other = Worker.objects.create(hostname="idle", pid=7, queues=[], concurrency=4)
    assert selectors.held_counts_by_worker() == {worker.id: {"claimed": 3, "running": 2}}
    listed = {w.id: (w.running, w.claimed) for w in dashboard_selectors.workers_for_dashboard()}
    assert listed == {worker.id: (2, 3), other.id: (0, 0)}
    html = browser_for(staff).get(reverse("dashboard:workers")).content.decode()
    assert "2 running, 3 claimed (waiting for a free slot)" in html
    out = StringIO()
    call_command("queue_status", stdout=out)
    assert "box:4242  queues all  busy 2/2  running 2  claimed 3" in out.getvalue()
    assert set(HELD_STATUSES) == {"claimed", "running"}

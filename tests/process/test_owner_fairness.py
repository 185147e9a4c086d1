"""Slot hogging, as the audit did it: free accounts fill a worker with long jobs, and another user's job waits.

A real web server takes the jobs and a real worker runs them; the limit is
the claim's, read back from the jobs' own start and end times.
"""

import time

import pytest
import requests
from django.core.cache import cache

from jobs.models import Job, JobStatus
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

SLOTS = 5
HOG_SECONDS = 3.0


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


def register_and_login(base: str, username: str) -> dict:
    password = "a-long-passphrase-9"
    created = requests.post(f"{base}/api/auth/register/", timeout=30,
                            json={"username": username, "email": f"{username}@example.com", "password": password})
    assert created.status_code == 202, created.text
    tokens = requests.post(f"{base}/api/auth/token/", json={"username": username, "password": password}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access']}"}


def most_at_once(jobs) -> int:
    """Return the most of `jobs` that ran at one moment, by their start and end times."""
    events = sorted([(job.started_at, 1) for job in jobs] + [(job.finished_at, -1) for job in jobs],
                    key=lambda event: (event[0], event[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_two_free_accounts_cannot_keep_another_users_job_from_a_slot(start_server, start_worker):
    """With 5 slots, two users' six 3-second jobs hold 2 slots each, and a third user's job finishes at once."""
    env = {"JOBS_USER_MAX_RUNNING": "2", "JOBS_USER_MAX_ACTIVE": "5", "JOBS_USER_SUBMISSIONS_PER_MINUTE": "1000"}
    server = start_server(env).wait_until_up()
    hogs = [register_and_login(server.url, name) for name in ("hog1", "hog2")]
    victim = register_and_login(server.url, "victim")
    start_worker("--concurrency", str(SLOTS), env=env)
    for headers in hogs:
        for _ in range(3):
            response = requests.post(f"{server.url}/api/jobs/", headers=headers, timeout=30,
                                     json={"type": "sleep", "payload": {"seconds": HOG_SECONDS}})
            assert response.status_code == 201, response.text
    wait_for(lambda: Job.objects.filter(status=JobStatus.RUNNING).count() >= 4, timeout=15)

    submitted = time.monotonic()
    response = requests.post(f"{server.url}/api/jobs/", headers=victim, timeout=30,
                             json={"type": "reverse_string", "payload": "waited?"})
    assert response.status_code == 201, response.text
    victims_job = response.json()["id"]
    wait_for(lambda: Job.objects.get(pk=victims_job).status == JobStatus.COMPLETED, timeout=30)
    waited = time.monotonic() - submitted
    assert waited < HOG_SECONDS / 2, f"the job of a user with nothing running waited {waited:.1f} s for a slot"

    wait_for(lambda: not Job.objects.exclude(status=JobStatus.COMPLETED).exists(), timeout=60)
    for name in ("hog1", "hog2"):
        assert most_at_once(list(Job.objects.filter(owner__username=name))) == 2

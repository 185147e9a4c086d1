"""send_email is no open relay: staff only by default, or allowed recipients and a daily quota, to the end.

The handler runs here on the test database; the whole path runs on real
servers: the API on uvicorn, PostgreSQL, Redis and worker processes.
"""

import pytest
import requests
from django.core.cache import cache

from jobs.models import EmailAllowance, Job, JobStatus
from tests.conftest import wait_for
from tests.db.test_send_email import email
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


# The whole path, on real servers.


def log_in(base: str, user) -> dict:
    tokens = requests.post(f"{base}/api/auth/token/", json={"username": user.username, "password": "correct-horse-battery"}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access']}"}


def post_email(base: str, headers: dict, to) -> requests.Response:
    return requests.post(f"{base}/api/jobs/", headers=headers, timeout=30,
                         json={"type": "send_email", "payload": email(to), "max_retries": 0})


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_the_api_and_workers_keep_the_relay_shut_and_the_quota_exact(start_server, start_worker):
    """Refuse users by default; opened to their own address, hold them to the daily quota across two worker processes."""
    cache.clear()
    limits = {"JOBS_USER_SUBMISSIONS_PER_MINUTE": "1000", "JOBS_USER_MAX_ACTIVE": "1000",
              "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend"}
    user = UserFactory(username="sender", email="sender@example.com")

    closed = start_server(limits).wait_until_up().url
    refused = post_email(closed, log_in(closed, user), ["victim@example.com"])
    assert refused.status_code == 400 and list(refused.json()) == ["type"], refused.text

    opened = {**limits, "JOBS_EMAIL_USER_RECIPIENTS": "self", "JOBS_EMAIL_RECIPIENTS_PER_DAY": "5"}
    base = start_server(opened).wait_until_up().url
    headers = log_in(base, user)
    stranger = post_email(base, headers, ["victim@example.com"])
    assert stranger.status_code == 400 and list(stranger.json()["payload"]) == ["to"], stranger.text
    # Accepted while nothing is sent yet: each sending attempt takes its recipient when it runs.
    ids = []
    for _ in range(12):
        response = post_email(base, headers, ["sender@example.com"])
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    for _ in range(2):
        start_worker("--concurrency", "6", "--poll-interval", "0.2", env=opened)
    jobs = Job.objects.filter(pk__in=ids)
    wait_for(lambda: not jobs.exclude(status__in=(JobStatus.COMPLETED, JobStatus.DEAD)).exists(), timeout=60,
             message="every email job to finish")
    assert jobs.filter(status=JobStatus.COMPLETED).count() == 5
    assert all("5 recipients a day" in error for error in jobs.filter(status=JobStatus.DEAD).values_list("error", flat=True))
    assert EmailAllowance.objects.get(user=user).recipients == 5
    over = post_email(base, headers, ["sender@example.com"])
    assert over.status_code == 429 and "have 0 left today" in over.json()["detail"], over.text

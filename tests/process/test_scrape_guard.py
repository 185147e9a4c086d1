"""scrape_website's guard against reaching internal addresses (SSRF), on real servers where it matters.

A canary server on loopback counts every connection made to it: each way
around the guard must leave it at zero. Tests can reach only loopback, so
where a case needs a public address, name resolution is stubbed and
127.0.0.2 stands in for the internet (is_refused_address is made to accept
it, and only it); the queue, the database and the servers stay real.
"""


import pytest
import requests
from django.core.cache import cache

from jobs.models import Job, JobStatus
from tests.conftest import wait_for
from tests.factories import JobFactory, UserFactory
from tests.unit.test_scrape_guard import canary  # noqa: F401 - fixtures

# The whole path: the API on uvicorn, PostgreSQL, a worker process.

BYPASS_FORMS = [
    "http://127.0.0.1:{port}\\@93.184.216.34/",
    "http://127.0.0.1:{port}\\\\@93.184.216.34/",
    "http://127.0.0.1:{port}\\@93.184.216.34:80/",
    "http://93.184.216.34:80@127.0.0.1:{port}/",
    "http://127.0.0.1:{port}\t@93.184.216.34/",
    "http://127.0.0.1:{port}\n@93.184.216.34/",
    "http://127.0.0.1:{port}\u200b@93.184.216.34/",
    "http://localhost:{port}/",
    "http://2130706433:{port}/",
    "http://127.1:{port}/",
    "http://0x7f.0.0.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://127.0.0.%31:{port}/",
]


def log_in(base: str, user) -> dict:
    """Return the Authorization header of `user` (made by UserFactory), logged in through the API."""
    tokens = requests.post(f"{base}/api/auth/token/", json={"username": user.username, "password": "correct-horse-battery"}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access']}"}


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_no_bypass_form_reaches_the_canary_through_the_api_and_a_worker(start_server, start_worker, canary):  # noqa: F811 - the fixture imported above
    """Give the canary no connection for any bypass form, submitted through the API or stored by other means and run by a worker."""
    cache.clear()
    env = {"JOBS_USER_SUBMISSIONS_PER_MINUTE": "1000", "JOBS_USER_MAX_ACTIVE": "1000"}
    base = start_server(env).wait_until_up().url
    start_worker("--poll-interval", "0.2", env=env)
    headers = log_in(base, UserFactory(username="prober"))
    urls = [form.format(port=canary.port) for form in BYPASS_FORMS]
    jobs = []
    for url in urls:
        response = requests.post(f"{base}/api/jobs/", headers=headers, timeout=30,
                                 json={"type": "scrape_website", "payload": {"url": url}, "max_retries": 0})
        assert response.status_code in (201, 400), response.text
        if response.status_code == 400:
            assert list(response.json()) == ["payload"] and list(response.json()["payload"]) == ["url"], response.text
        else:
            jobs.append(response.json()["id"])
        # The same URL in a job stored without the API's validation (before an upgrade, say).
        jobs.append(JobFactory(type="scrape_website", payload={"url": url}, max_retries=0).pk)

    def all_finished_or_canary_reached():
        return canary.connections or not Job.objects.filter(pk__in=jobs).exclude(status=JobStatus.DEAD).exists()

    wait_for(all_finished_or_canary_reached, timeout=60, message="every probe to end in the DLQ")
    assert canary.connections == 0
    errors = set(Job.objects.filter(pk__in=jobs).values_list("error", flat=True))
    assert all(
        ("Invalid payload" in error and "url: " in error) or "is not a public address" in error
        or "its host is not public" in error
        for error in errors
    ), errors

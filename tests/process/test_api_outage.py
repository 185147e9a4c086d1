"""The API through a database outage: a quick 503 in JSON with Retry-After, and no acknowledged job lost."""

import threading
import time

import pytest
import requests
from django.core.cache import cache

from jobs.models import Job
from tests.conftest import database_proxy_target, proxied_database_url, wait_for
from tests.process.test_api_live import register_and_login
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

# A behaviour bound, not a benchmark: failing fast takes milliseconds, waiting
# out the pool's timeout takes 10 s.
QUICKLY = 3.0
# Seconds the server may take to find that a connection cannot be made (libpq's least).
CONNECT_TIMEOUT = 2
# Seconds each outage lasts: long enough for psycopg's pool, left to its
# default backoff, to be seconds away from its next try when the database is back.
OUTAGE_SECONDS = 8
# Seconds after the database is back by which submissions succeed again.
RECOVERED_WITHIN = 3.0


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


@pytest.fixture
def database_proxy(transactional_db):
    """A TcpProxy in front of the test database."""
    with TcpProxy(*database_proxy_target()) as proxy:
        yield proxy


def submit(base: str, headers: dict, text: str) -> requests.Response:
    return requests.post(f"{base}/api/jobs/", json={"type": "reverse_string", "payload": text}, headers=headers, timeout=30)


class Submitter(threading.Thread):
    """Submit jobs one after another until stopped; keep the id of every job acknowledged with a 201."""

    def __init__(self, base: str, headers: dict):
        super().__init__(daemon=True)
        self.base, self.headers = base, headers
        self.acknowledged: list[int] = []
        self.statuses: set[int] = set()
        self.stopping = threading.Event()

    def run(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            response = submit(self.base, self.headers, f"job {n}")
            self.statuses.add(response.status_code)
            if response.status_code == 201:
                self.acknowledged.append(response.json()["id"])

    def stop(self):
        self.stopping.set()
        self.join(30)


def assert_unavailable(method: str, url: str, headers: dict, within: float, **kwargs) -> None:
    started = time.monotonic()
    response = requests.request(method, url, headers=headers, timeout=30, **kwargs)
    elapsed = time.monotonic() - started
    assert response.status_code == 503, f"{method} {url}: {response.status_code} {response.text[:200]}"
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["detail"]
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < within, f"{method} {url} took {elapsed:.1f}s to say the database is unreachable"


@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
def test_a_database_outage_answers_503_json_quickly_and_loses_no_acknowledged_job(start_server, database_proxy, outage):
    """Answer 503 JSON with Retry-After within seconds while PostgreSQL is unreachable, recover once it is back, and keep every job acknowledged with a 201.

    "refuse" is a database that is down (connections are reset, new ones
    refused); "blackhole" a partition (new connections are never answered),
    which the first request notices only after DB_CONNECT_TIMEOUT.
    """
    env = {
        "DATABASE_URL": proxied_database_url(database_proxy),
        "DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "JOBS_USER_SUBMISSIONS_PER_MINUTE": "100000",
        "JOBS_USER_MAX_ACTIVE": "100000",
    }
    base = start_server(env).wait_until_up().url
    headers = register_and_login(base, "outage")
    first = submit(base, headers, "before the outage")
    assert first.status_code == 201, first.text
    job_url = f"{base}/api/jobs/{first.json()['id']}/"
    submitter = Submitter(base, headers)
    submitter.start()
    try:
        wait_for(lambda: len(submitter.acknowledged) >= 20, timeout=30, message="jobs submitted before the outage")

        database_proxy.cut(outage)
        cut = time.monotonic()
        first_within = QUICKLY + (CONNECT_TIMEOUT if outage == "blackhole" else 0)
        assert_unavailable("POST", f"{base}/api/jobs/", headers, first_within, json={"type": "reverse_string", "payload": "x"})
        # Keep asking through the outage, past the pool's reconnect_timeout, when its own retries have stopped.
        while time.monotonic() - cut < OUTAGE_SECONDS:
            assert_unavailable("POST", f"{base}/api/jobs/", headers, QUICKLY, json={"type": "reverse_string", "payload": "x"})
            assert_unavailable("GET", f"{base}/api/jobs/", headers, QUICKLY)
            assert_unavailable("GET", job_url, headers, QUICKLY)
            time.sleep(0.2)
        during = len(submitter.acknowledged)

        database_proxy.heal()
        healed = time.monotonic()
        wait_for(lambda: submit(base, headers, "after the outage").status_code == 201, timeout=10, interval=0.1,
                 message="a submission to succeed after the database came back")
        recovered_in = time.monotonic() - healed
        wait_for(lambda: len(submitter.acknowledged) > during, timeout=10, message="the submitter to get 201s again")
    finally:
        submitter.stop()

    assert submitter.statuses <= {201, 503}, submitter.statuses
    acknowledged = [first.json()["id"], *submitter.acknowledged]
    assert Job.objects.filter(pk__in=acknowledged).count() == len(acknowledged)
    assert recovered_in < RECOVERED_WITHIN, f"submissions succeeded again only {recovered_in:.1f}s after the database came back"

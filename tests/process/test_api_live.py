"""The API over real HTTP: several server processes, concurrent clients, a real worker."""

import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.cache import cache

from jobs.models import Job
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


def register_and_login(base: str, username: str) -> dict:
    password = "a-long-passphrase-9"
    created = requests.post(f"{base}/api/auth/register/", json={"username": username, "email": f"{username}@example.com", "password": password}, timeout=30)
    assert created.status_code == 202, created.text
    tokens = requests.post(f"{base}/api/auth/token/", json={"username": username, "password": password}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access']}"}


def submit_in_parallel(servers, headers, count: int) -> list[int]:
    """POST `count` jobs at once, spread over every server process; return the status codes."""

    def submit(n):
        base = servers[n % len(servers)].url
        return requests.post(f"{base}/api/jobs/", json={"type": "reverse_string", "payload": f"job {n}"}, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(submit, range(count)))


def test_twenty_parallel_creates_leave_exactly_five_active_jobs(start_server):
    """Hold the active-job cap across two server processes under 20 concurrent requests."""
    env = {"JOBS_USER_MAX_ACTIVE": "5", "JOBS_USER_SUBMISSIONS_PER_MINUTE": "1000"}
    servers = [start_server(env).wait_until_up(), start_server(env).wait_until_up()]
    headers = register_and_login(servers[0].url, "racer")
    codes = submit_in_parallel(servers, headers, 20)
    assert sorted(codes) == [201] * 5 + [429] * 15
    assert Job.objects.active().filter(owner__username="racer").count() == 5


def test_parallel_creates_hold_the_per_minute_limit(start_server):
    """Hold the 10-a-minute cap across two server processes under 20 concurrent requests."""
    env = {"JOBS_USER_MAX_ACTIVE": "1000", "JOBS_USER_SUBMISSIONS_PER_MINUTE": "10"}
    servers = [start_server(env).wait_until_up(), start_server(env).wait_until_up()]
    headers = register_and_login(servers[0].url, "burst")
    codes = submit_in_parallel(servers, headers, 20)
    assert sorted(codes) == [201] * 10 + [429] * 10
    assert Job.objects.filter(owner__username="burst").count() == 10


def test_readme_walkthrough(start_server, start_worker):
    """Register, log in, submit reverse_string, poll to completed, watch a failure reach the DLQ, requeue it."""
    base = start_server().wait_until_up().url
    start_worker("--poll-interval", "0.2", env={"JOBS_BACKOFF_BASE": "0.1"})
    headers = register_and_login(base, "walker")

    job = requests.post(f"{base}/api/jobs/", json={"type": "reverse_string", "payload": {"text": "hello world"}}, headers=headers, timeout=30).json()
    done = wait_for(lambda: (r := requests.get(f"{base}/api/jobs/{job['id']}/", headers=headers, timeout=30).json())["status"] == "completed" and r)
    assert done["result"] == "dlrow olleh"

    failing = requests.post(f"{base}/api/jobs/", json={"type": "fail", "payload": {"message": "always fails"}, "max_retries": 1}, headers=headers, timeout=30).json()
    wait_for(lambda: requests.get(f"{base}/api/jobs/{failing['id']}/", headers=headers, timeout=30).json()["status"] == "dead")
    dlq = requests.get(f"{base}/api/dlq/", headers=headers, timeout=30).json()
    assert [j["id"] for j in dlq["results"]] == [failing["id"]]
    assert "always fails" in dlq["results"][0]["error"]

    requeued = requests.post(f"{base}/api/dlq/requeue/", json={"job_ids": [failing["id"]]}, headers=headers, timeout=30).json()
    assert requeued == {"requeued": 1, "job_ids": [failing["id"]]}
    wait_for(lambda: requests.get(f"{base}/api/jobs/{failing['id']}/", headers=headers, timeout=30).json()["status"] == "dead")
    history = requests.get(f"{base}/api/jobs/{failing['id']}/", headers=headers, timeout=30).json()["history"]
    assert len(history) == 4  # two attempts, requeued, two more


def test_retrying_failing_jobs_in_a_loop_reruns_them_only_as_the_allowance_allows(start_server, start_worker):
    """Rerun five always-failing jobs at most as often as the per-minute limit allows, however fast a client retries."""
    env = {"JOBS_USER_MAX_ACTIVE": "100", "JOBS_USER_SUBMISSIONS_PER_MINUTE": "10"}
    base = start_server(env).wait_until_up().url
    start_worker("--poll-interval", "0.1")
    headers = register_and_login(base, "looper")
    started = time.monotonic()
    ids = [
        requests.post(f"{base}/api/jobs/", json={"type": "fail", "payload": {"permanent": True}}, headers=headers, timeout=30).json()["id"]
        for _ in range(5)
    ]
    codes = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        for job_id in ids:
            codes.append(requests.post(f"{base}/api/jobs/{job_id}/retry/", headers=headers, timeout=30).status_code)
        codes.append(requests.post(f"{base}/api/dlq/requeue/", json={}, headers=headers, timeout=30).status_code)
    elapsed = time.monotonic() - started
    wait_for(lambda: not Job.objects.filter(owner__username="looper").active().exists())
    runs = sum(len(job.history) for job in Job.objects.filter(owner__username="looper"))
    # Five submissions, then five retries or requeues: the whole allowance,
    # and one more for every 6 s it had to come back.
    assert 10 <= runs <= 10 + elapsed // 6, (runs, elapsed)
    assert 429 in codes
    refused = requests.post(f"{base}/api/jobs/{ids[0]}/retry/", headers=headers, timeout=30)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


def test_a_users_job_is_stopped_at_the_users_timeout(start_server, start_worker):
    """Stop a user's job at JOBS_USER_MAX_TIMEOUT in a real worker, though its type would let it run longer."""
    base = start_server({"JOBS_USER_MAX_TIMEOUT": "1"}).wait_until_up().url
    start_worker("--poll-interval", "0.1")
    headers = register_and_login(base, "hog")
    job = requests.post(f"{base}/api/jobs/", json={"type": "spin", "payload": {"seconds": 4}, "max_retries": 0},
                        headers=headers, timeout=30).json()
    assert job["timeout"] == 1
    done = wait_for(lambda: (r := requests.get(f"{base}/api/jobs/{job['id']}/", headers=headers, timeout=30).json())["status"]
                    in ("dead", "completed") and r)
    assert done["status"] == "dead" and done["history"][0]["error"] == "Timed out after 1s"


def send_head(server, path: str, headers: str) -> socket.socket:
    """Open a connection to `server` and send a POST's request line and headers, but no body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    return sock


@pytest.mark.parametrize("path", ["/api/jobs/", "/accounts/login/"])
def test_a_body_announced_too_large_is_refused_before_it_is_sent(start_server, path):
    """Answer 413 to a Content-Length over the limit at once, without waiting for (or storing) the body."""
    server = start_server().wait_until_up()
    with send_head(server, path, "Content-Type: application/json\r\nContent-Length: 10000000000\r\n") as sock:
        sock.settimeout(5)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_chunked_body_is_read_only_up_to_its_limit(start_server):
    """Answer 413 to a body without a length as soon as it passes the limit, while the client is still sending."""
    server = start_server().wait_until_up()
    chunk = b"x" * 65536
    sent = 0
    with send_head(server, "/api/jobs/", "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n") as sock:
        try:
            while sent < 256 * 2**20 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection after its answer
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    # The limit is 80 KiB; what the socket buffers held on the way is the rest.
    assert sent < 32 * 2**20, sent

"""The queue's Prometheus metrics: read from the database at scrape time, right with several workers."""

import time

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from jobs import metrics, queue
from tests.conftest import wait_for
from tests.db.test_metrics import (
    job_gauges_read_at_every_scrape,  # noqa: F401 - fixtures
    scrape,
    value,
)
from tests.sample_handlers import EFFECTS_TABLE


def test_scrape_stays_up_without_the_database(start_server):
    """Serve the web process's metrics, with skipjack_queue_metrics_up 0, while PostgreSQL is unreachable."""
    import requests

    server = start_server({"DATABASE_URL": "postgres://postgres@127.0.0.1:1/skipjack", "DB_POOL_TIMEOUT": "1"})
    wait_for(lambda: _answers(server.url + "/healthz/"), timeout=30, message="the server")

    for _ in range(2):  # the second scrape takes the direct-connection path
        response = requests.get(server.url + "/metrics", timeout=15)
        assert response.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        assert families["skipjack_queue_metrics_up"].samples[0].value == 0
        assert "skipjack_jobs" not in families
        assert "django_http_requests_before_middlewares" in families


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


# --- Access on real servers ---------------------------------------------------------------


def _get(url: str, **headers):
    import requests

    return requests.get(url, headers=headers, timeout=15)


@pytest.mark.process
def test_a_server_with_metrics_token_answers_only_its_bearer(start_server):
    """Over uvicorn with METRICS_TOKEN set, refuse a scrape from loopback without the token, and answer its bearer."""
    server = start_server({"METRICS_TOKEN": "s3cret-token"}).wait_until_up()
    assert _get(server.url + "/metrics").status_code == 401
    assert _get(server.url + "/metrics", Authorization="Bearer wrong").status_code == 401
    response = _get(server.url + "/metrics", Authorization="Bearer s3cret-token")
    assert response.status_code == 200 and "skipjack_queue_metrics_up 1.0" in response.text


@pytest.mark.process
def test_a_server_with_an_allowlist_compares_the_client_address_its_proxy_forwarded(start_server):
    """Over uvicorn with METRICS_ALLOW_IPS, refuse loopback, and answer a listed client forwarded by a trusted proxy."""
    server = start_server({"METRICS_ALLOW_IPS": "192.0.2.0/24", "FORWARDED_ALLOW_IPS": "127.0.0.1"}).wait_until_up()
    assert _get(server.url + "/metrics").status_code == 403
    assert _get(server.url + "/metrics", **{"X-Forwarded-For": "198.51.100.4"}).status_code == 403
    assert _get(server.url + "/metrics", **{"X-Forwarded-For": "192.0.2.77"}).status_code == 200


@pytest.mark.process
def test_production_settings_answer_no_scrape_without_a_token_or_an_allowlist(start_server):
    """Refuse every scrape, loopback's too, in production with neither METRICS_TOKEN nor METRICS_ALLOW_IPS set."""
    import secrets

    env = {"DJANGO_SETTINGS_MODULE": "queueproject.settings_production", "SECRET_KEY": secrets.token_urlsafe(60),
           "ALLOWED_HOSTS": "127.0.0.1", "SKIPJACK_HTTPS": "0", "METRICS_TOKEN": "", "METRICS_ALLOW_IPS": ""}
    server = start_server(env).wait_until_up()
    assert _get(server.url + "/metrics").status_code == 403
    assert _get(server.url + "/healthz/").status_code == 200
    assert "/metrics refuses every scrape: set METRICS_TOKEN or METRICS_ALLOW_IPS" in server.output()


# --- The cached job gauges ------------------------------------------------------------------


def _samples(response) -> dict:
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _cached_gauge_servers(start_server, count: int) -> list:
    """Start `count` servers whose job gauges are fresh for a second, with nothing cached yet."""
    from django.core.cache import cache

    cache.delete_many([metrics.JOB_GAUGES_KEY, metrics.JOB_GAUGES_REFRESH_KEY])
    servers = [start_server({"METRICS_CACHE_SECONDS": "1"}) for _ in range(count)]
    for server in servers:
        server.wait_until_up()
    return servers


def _queued(response) -> float:
    return value(_samples(response), "skipjack_jobs", queue="default", status="queued")


@pytest.mark.process
def test_web_processes_share_the_cached_job_gauges_and_count_exactly(start_server):
    """Serve one process the gauges another just read, with counters read at the scrape; read the gauges again once stale."""
    first, second = _cached_gauge_servers(start_server, 2)
    queue.enqueue_many("reverse_string", ["a", "b"])
    assert _queued(_get(first.url + "/metrics")) == 2

    queue.enqueue("reverse_string", "c")
    samples = _samples(_get(second.url + "/metrics"))
    assert value(samples, "skipjack_jobs", queue="default", status="queued") == 2
    assert value(samples, "skipjack_jobs_enqueued_total", type="reverse_string", queue="default") == 3
    assert value(samples, "skipjack_queue_gauges_age_seconds") < 1

    time.sleep(1.2)
    # The first scrape after that starts the refresh; one a moment later has its result.
    wait_for(lambda: _queued(_get(second.url + "/metrics")) == 3, timeout=10, message="the refreshed gauges")
    assert value(_samples(_get(first.url + "/metrics")), "skipjack_queue_gauges_age_seconds") < 5


@pytest.mark.process
def test_while_the_jobs_table_is_slow_every_scrape_and_request_answers_at_once(start_server):
    """Answer 16 parallel scrapes on two servers, and their other requests, while one refresh waits for the jobs table.

    A lock on the jobs table, held by another connection, stands for a slow
    scan. Each server serves its requests on one thread: a scrape that
    waited for the table would hold up every request to its server.
    """
    import threading

    import psycopg

    from tests.conftest import database_url_for_tests

    servers = _cached_gauge_servers(start_server, 2)
    queue.enqueue_many("reverse_string", ["a", "b"])
    assert _queued(_get(servers[0].url + "/metrics")) == 2
    time.sleep(1.2)  # the copy is stale now

    with psycopg.connect(database_url_for_tests(), autocommit=True) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE jobs_job IN ACCESS EXCLUSIVE MODE")
        answers, errors = [], []

        def get(url):
            try:
                started = time.monotonic()
                response = _get(url)
                answers.append((url, response, time.monotonic() - started))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        urls = [server.url + path for server in servers for path in ["/metrics"] * 8 + ["/healthz/"]]
        threads = [threading.Thread(target=get, args=(url,)) for url in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=4)
        waiting = blocker.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()[0]
        blocker.execute("ROLLBACK")
    assert errors == [] and len(answers) == len(urls), f"{len(urls) - len(answers)} requests waited for the jobs table"
    for url, response, seconds in answers:
        assert response.status_code == 200 and seconds < 3, (url, seconds)
        if url.endswith("/metrics"):
            assert _queued(response) == 2
    # One refresh, in one process, waited for the table.
    assert waiting == 1


# --- Several worker processes ----------------------------------------------------------------


@pytest.mark.process
def test_metrics_follow_jobs_through_several_worker_processes(start_worker, effects):
    """Report the same totals the jobs table shows after three worker processes drain a mixed queue."""
    for n in range(6):
        queue.enqueue("fail", {"message": f"flaky {n}"}, max_retries=1)
    for n in range(3):
        queue.enqueue("fail", {"message": f"broken {n}", "permanent": True})

    waiting = scrape()
    assert value(waiting, "skipjack_jobs", queue="default", status="queued") == 9
    assert value(waiting, "skipjack_jobs_enqueued_total", type="fail", queue="default") == 9
    assert value(waiting, "skipjack_queue_oldest_waiting_seconds", queue="default") > 0
    assert value(waiting, "skipjack_workers_alive") == 0

    env = {"JOBS_BACKOFF_BASE": "0.05", "JOBS_BACKOFF_CAP": "0.2"}
    workers = [start_worker("--concurrency", "4", "--poll-interval", "0.2", env=env) for _ in range(3)]
    wait_for(lambda: value(scrape(), "skipjack_workers_alive") == 3, message="three live workers")
    # Enqueued once all three listen, so each of them gets a share.
    queue.enqueue_many("record_effect", [{"seconds": 0.02}] * 90)

    def drained():
        samples = scrape()
        return (value(samples, "skipjack_jobs", queue="default", status="completed") == 90
                and value(samples, "skipjack_dlq_jobs", queue="default") == 9 and samples)

    samples = wait_for(drained, timeout=60, message="the queue to drain")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(DISTINCT pid), count(*) FROM {EFFECTS_TABLE}")  # noqa: S608 - the test table's name
        processes, effects_run = cursor.fetchone()
    assert processes > 1 and effects_run == 90

    counter = lambda name, type: value(samples, f"skipjack_jobs_{name}_total", type=type, queue="default")  # noqa: E731
    assert counter("completed", "record_effect") == 90
    assert counter("failed", "record_effect") == 0
    assert counter("failed", "fail") == 6 * 2 + 3  # two attempts of each flaky job, one of each broken one
    assert counter("retried", "fail") == 6
    assert counter("dead", "fail") == 9
    assert value(samples, "skipjack_job_run_seconds_count", type="record_effect") == 90
    assert value(samples, "skipjack_job_run_seconds_sum", type="record_effect") >= 90 * 0.02
    assert value(samples, "skipjack_job_run_seconds_count", type="fail") == 15
    assert value(samples, "skipjack_job_queue_wait_seconds_count", type="record_effect") == 90
    assert value(samples, "skipjack_job_queue_wait_seconds_bucket", type="record_effect", le="+Inf") == 90
    assert value(samples, "skipjack_queue_oldest_waiting_seconds", queue="default") == 0
    assert value(samples, "skipjack_jobs", queue="default", status="queued") == 0
    assert value(samples, "skipjack_jobs_enqueued_total", type="record_effect", queue="default") == 90

    for worker in workers:
        worker.stop()
    assert value(scrape(), "skipjack_workers_alive") == 0

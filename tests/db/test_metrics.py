"""The queue's Prometheus metrics: read from the database at scrape time, right with several workers."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs import counters, metrics, queue
from jobs.models import FinishedCount, JobCounter, JobStatus, Worker
from tests.factories import JobFactory, UserFactory


def scrape(**headers) -> dict:
    """GET /metrics and return {(sample name, frozenset(labels)): value}."""
    response = Client().get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def claim_all(limit=100):
    return queue.claim_jobs(worker_id=uuid.uuid4(), limit=limit, lease_seconds=30)


@pytest.fixture(autouse=True)
def job_gauges_read_at_every_scrape(settings):
    # Each test here sees the jobs it made at once; the cache has tests of its own.
    settings.METRICS_CACHE_SECONDS = 0


# --- Gauges ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_jobs_gauge_counts_every_status_of_every_queue():
    """Report one series per queue and status, zeros included, and the DLQ per queue."""
    JobFactory.create_batch(3, queue="default")
    JobFactory(queue="default", status=JobStatus.RUNNING)
    JobFactory.create_batch(2, queue="mail", status=JobStatus.DEAD)
    JobFactory(queue="mail", status=JobStatus.COMPLETED)

    samples = scrape()

    assert value(samples, "skipjack_jobs", queue="default", status="queued") == 3
    assert value(samples, "skipjack_jobs", queue="default", status="running") == 1
    assert ("skipjack_jobs", frozenset({"queue": "default", "status": "dead"}.items())) in samples
    assert value(samples, "skipjack_jobs", queue="mail", status="dead") == 2
    assert value(samples, "skipjack_jobs", queue="mail", status="completed") == 1
    assert value(samples, "skipjack_dlq_jobs", queue="mail") == 2
    assert value(samples, "skipjack_dlq_jobs", queue="default") == 0
    assert value(samples, "skipjack_queue_metrics_up") == 1


@pytest.mark.django_db
def test_oldest_waiting_counts_only_due_unclaimed_jobs():
    """Measure from the oldest run_at that has passed; future, running and finished jobs do not count."""
    now = timezone.now()
    JobFactory(queue="default", run_at=now - timedelta(seconds=90))
    JobFactory(queue="default", status=JobStatus.RETRYING, run_at=now - timedelta(seconds=30))
    JobFactory(queue="default", status=JobStatus.RUNNING, run_at=now - timedelta(hours=1))
    JobFactory(queue="later", status=JobStatus.SCHEDULED, run_at=now + timedelta(hours=1))
    JobFactory(queue="done", status=JobStatus.COMPLETED, run_at=now - timedelta(hours=2))

    samples = scrape()

    assert 90 <= value(samples, "skipjack_queue_oldest_waiting_seconds", queue="default") < 120
    assert value(samples, "skipjack_queue_oldest_waiting_seconds", queue="later") == 0
    assert value(samples, "skipjack_queue_oldest_waiting_seconds", queue="done") == 0


@pytest.mark.django_db
def test_worker_gauges_count_only_live_workers():
    """Count workers with a fresh heartbeat; stale and stopped ones are gone."""
    Worker.objects.create(hostname="a", pid=1, concurrency=8, busy=3)
    Worker.objects.create(hostname="b", pid=2, concurrency=4, busy=4)
    Worker.objects.create(hostname="c", pid=3, concurrency=10, busy=0, stopped_at=timezone.now())
    stale = Worker.objects.create(hostname="d", pid=4, concurrency=10, busy=10)
    Worker.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    samples = scrape()

    assert value(samples, "skipjack_workers_alive") == 2
    assert value(samples, "skipjack_worker_slots") == 12
    assert value(samples, "skipjack_worker_slots_busy") == 7


# --- Counters and histograms, one transition at a time ---------------------------------------


@pytest.mark.django_db
def test_counters_follow_each_transition():
    """Count enqueues, completions, failed attempts, retries, dead jobs and rescues, by type and queue."""
    queue.enqueue_many("reverse_string", [{"text": "a"}, {"text": "b"}, {"text": "c"}])
    queue.enqueue("uppercase_text", {"text": "x"}, queue="text", max_retries=0)
    queue.enqueue("uppercase_text", {"text": "y"}, queue="text", max_retries=1)
    by_id = {job.id: job for job in claim_all()}
    reverse = [job for job in by_id.values() if job.type == "reverse_string"]
    dies, retries = sorted((job for job in by_id.values() if job.type == "uppercase_text"), key=lambda j: j.max_retries)

    assert queue.complete_jobs([queue.Completion(job, "ok", 0.02) for job in reverse[:2]]) == {j.id for j in reverse[:2]}
    assert queue.fail_job(dies, error="boom", run_seconds=0.3) == JobStatus.DEAD
    assert queue.fail_job(retries, error="boom", run_seconds=0.3) == JobStatus.RETRYING
    stale = JobFactory(stale=True, type="reverse_string", queue="default")
    assert [job.id for job in queue.rescue_expired_leases()] == [stale.id]

    samples = scrape()
    counter = lambda name, type, queue: value(samples, f"skipjack_jobs_{name}_total", type=type, queue=queue)  # noqa: E731
    assert counter("enqueued", "reverse_string", "default") == 3
    assert counter("enqueued", "uppercase_text", "text") == 2
    assert counter("completed", "reverse_string", "default") == 2
    assert counter("failed", "uppercase_text", "text") == 2
    assert counter("dead", "uppercase_text", "text") == 1
    assert counter("retried", "uppercase_text", "text") == 1
    # The rescued job's lost attempt failed and is retried.
    assert counter("failed", "reverse_string", "default") == 1
    assert counter("retried", "reverse_string", "default") == 1
    assert value(samples, "skipjack_job_run_seconds_count", type="reverse_string") == 2
    assert value(samples, "skipjack_job_run_seconds_sum", type="reverse_string") == pytest.approx(0.04)
    assert value(samples, "skipjack_job_run_seconds_count", type="uppercase_text") == 2
    # Queue wait: every finished attempt, the rescued one included.
    assert value(samples, "skipjack_job_queue_wait_seconds_count", type="reverse_string") == 3
    assert value(samples, "skipjack_job_queue_wait_seconds_count", type="uppercase_text") == 2


@pytest.mark.django_db
def test_a_write_that_lost_its_lease_counts_nothing():
    """Count only the completions and failures that changed the job."""
    queue.enqueue("reverse_string", {"text": "a"})
    queue.enqueue("reverse_string", {"text": "b"})
    # Claimed for a slot that has not started them: a cancel takes their leases at once.
    first, second = queue.claim_jobs(worker_id=uuid.uuid4(), limit=2, lease_seconds=30, starting=0)
    queue.cancel_job(first.id)
    queue.cancel_job(second.id)

    assert queue.complete_jobs([queue.Completion(first, "late", 1.0)]) == set()
    assert queue.fail_job(second, error="late", run_seconds=1.0) is None

    samples = scrape()
    assert value(samples, "skipjack_jobs_completed_total", type="reverse_string", queue="default") == 0
    assert value(samples, "skipjack_jobs_failed_total", type="reverse_string", queue="default") == 0
    assert value(samples, "skipjack_job_run_seconds_count", type="reverse_string") == 0


@pytest.mark.django_db
def test_run_time_lands_in_the_first_bucket_it_does_not_exceed():
    """Put a value equal to a bound in that bound's bucket, and anything past the last bound in +Inf."""
    for text in "abc":
        queue.enqueue("reverse_string", {"text": text})
    jobs = claim_all()
    queue.complete_jobs([queue.Completion(job, "ok", seconds)
                         for job, seconds in zip(jobs, (0.005, 0.006, 5000.0), strict=True)])

    samples = scrape()
    bucket = lambda le: value(samples, "skipjack_job_run_seconds_bucket", type="reverse_string", le=le)  # noqa: E731
    assert bucket("0.005") == 1
    assert bucket("0.01") == 2
    assert bucket("3600.0") == 2
    assert bucket("+Inf") == 3
    assert value(samples, "skipjack_job_run_seconds_sum", type="reverse_string") == pytest.approx(5000.011)


@pytest.mark.django_db
def test_a_rolled_back_enqueue_is_not_counted():
    """Count an enqueue only if its transaction commits."""
    with pytest.raises(RuntimeError), transaction.atomic():
        queue.enqueue("reverse_string", {"text": "never"})
        raise RuntimeError("roll back")

    assert value(scrape(), "skipjack_jobs_enqueued_total", type="reverse_string", queue="default") == 0


@pytest.mark.django_db
def test_counters_survive_pruning_and_roll_up():
    """Keep every total when finished jobs are deleted and when the counter rows are folded together."""
    for text in "abcd":
        queue.enqueue("reverse_string", {"text": text})
    for job in claim_all():
        queue.complete_jobs([queue.Completion(job, "ok", 0.1)])
    before = {k: v for k, v in scrape().items() if k[0].startswith(("skipjack_jobs_", "skipjack_job_"))}
    rows_before = JobCounter.objects.count()

    with connection.cursor() as cursor:
        cursor.execute("UPDATE jobs_job SET finished_at = now() - interval '30 days'")
    assert queue.prune_finished(older_than_seconds=60) == 4
    assert counters.roll_up()

    after = {k: v for k, v in scrape().items() if k[0].startswith(("skipjack_jobs_", "skipjack_job_"))}
    assert after == before
    assert value(after, "skipjack_jobs_completed_total", type="reverse_string", queue="default") == 4
    assert JobCounter.objects.count() < rows_before
    per_label_set = JobCounter.objects.values("name", "type", "queue", "le").annotate(rows=Count("pk"))
    assert {row["rows"] for row in per_label_set} == {1}


@pytest.mark.django_db
def test_finished_counts_follow_completions_deaths_and_rescues_per_owner_and_minute():
    """Count each completion and each move to the DLQ once, in its owner's minute; a retry counts nothing."""
    owner = UserFactory()
    queue.enqueue_many("reverse_string", [{"text": "a"}, {"text": "b"}], owner=owner)
    queue.enqueue("uppercase_text", {"text": "x"}, max_retries=0, owner=owner)
    queue.enqueue("uppercase_text", {"text": "y"}, max_retries=1)
    jobs = claim_all()
    by_type = {}
    for job in jobs:
        by_type.setdefault(job.type, []).append(job)
    dies, retries = sorted(by_type["uppercase_text"], key=lambda j: j.max_retries)
    queue.complete_jobs([queue.Completion(job, "ok") for job in by_type["reverse_string"]])
    assert queue.fail_job(dies, error="boom") == JobStatus.DEAD
    assert queue.fail_job(retries, error="boom") == JobStatus.RETRYING
    # A lost write finishes nothing.
    assert queue.complete_jobs([queue.Completion(dies, "late")]) == set()
    stale = JobFactory(stale=True, attempts=1, max_retries=0)
    assert [job.status for job in queue.rescue_expired_leases()] == [JobStatus.DEAD]

    totals = lambda: {  # noqa: E731
        row["owner_id"]: (row["completed"], row["dead"])
        for row in FinishedCount.objects.values("owner_id").annotate(completed=Sum("completed"), dead=Sum("dead"))
    }
    assert totals() == {owner.pk: (2, 1), stale.owner_id: (0, 1)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT minute = date_bin('1 minute', now(), TIMESTAMPTZ '2000-01-01') FROM jobs_finishedcount")
        assert cursor.fetchall() == [(True,)]

    # Folded into one row per minute and owner, the same totals.
    assert FinishedCount.objects.filter(owner_id=owner.pk).count() == 2
    assert counters.roll_up()
    assert FinishedCount.objects.filter(owner_id=owner.pk).count() == 1
    assert totals() == {owner.pk: (2, 1), stale.owner_id: (0, 1)}


@pytest.mark.django_db
def test_roll_up_drops_finished_counts_past_their_retention():
    """Keep an hour of per-minute counts, and leave the jobs' other counters alone."""
    now = timezone.now()
    FinishedCount.objects.create(minute=now - timedelta(hours=2), owner_id=None, completed=5)
    kept = FinishedCount.objects.create(minute=now - timedelta(minutes=50), owner_id=None, completed=7)
    assert counters.roll_up()
    assert list(FinishedCount.objects.values_list("pk", flat=True)) == [kept.pk]


# --- Rate-limit rejections and access -------------------------------------------------------


@pytest.mark.django_db
def test_rate_limit_rejections_are_shared_through_redis():
    """Count rejections by kind in Redis, where every web process adds to the same total."""
    before = scrape()
    metrics.count_rate_limit_rejection("submit")
    metrics.count_rate_limit_rejection("submit")
    metrics.count_rate_limit_rejection("login")

    after = scrape()
    rejections = lambda samples, kind: value(samples, "skipjack_rate_limit_rejections_total", kind=kind)  # noqa: E731
    assert rejections(after, "submit") - rejections(before, "submit") == 2
    assert rejections(after, "login") - rejections(before, "login") == 1


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="scrape-secret", METRICS_ALLOW_IPS=[])
def test_metrics_token_is_required_when_set():
    """Refuse a scrape without the bearer token once METRICS_TOKEN is set."""
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert value(scrape(HTTP_AUTHORIZATION="Bearer scrape-secret"), "skipjack_queue_metrics_up") == 1


@pytest.mark.django_db
def test_without_token_or_allowlist_only_loopback_may_scrape_in_development():
    """Answer scrapes from loopback alone when neither METRICS_TOKEN nor METRICS_ALLOW_IPS is set."""
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    for address in ("203.0.113.7", "10.0.0.2", "2001:db8::1"):
        assert Client(REMOTE_ADDR=address).get("/metrics").status_code == 403, address


@pytest.mark.django_db
@override_settings(METRICS_ALLOW_IPS=["10.0.0.0/8", "192.0.2.1/32"])
def test_the_allowlist_admits_its_addresses_and_networks_only():
    """Answer scrapes from the listed networks and addresses, an IPv4-mapped one included; refuse loopback and the rest."""
    for address in ("10.1.2.3", "192.0.2.1", "::ffff:10.0.0.1"):
        assert Client(REMOTE_ADDR=address).get("/metrics").status_code == 200, address
    for address in ("127.0.0.1", "192.0.2.2", "11.0.0.1", "not an address"):
        assert Client(REMOTE_ADDR=address).get("/metrics").status_code == 403, address


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="scrape-secret", METRICS_ALLOW_IPS=["10.0.0.0/8"])
def test_with_both_set_the_token_or_an_allowed_address_suffices():
    """Answer the token's bearer from anywhere and an allowed address without it; refuse the others with 401."""
    assert Client(REMOTE_ADDR="203.0.113.7").get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert Client(REMOTE_ADDR="10.0.0.9").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="203.0.113.7").get("/metrics").status_code == 401
    assert Client(REMOTE_ADDR="203.0.113.7").get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401

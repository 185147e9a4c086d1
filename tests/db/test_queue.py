"""Every transition of a job, and every refused one, on real PostgreSQL."""

import math
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.backends.signals import connection_created
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import db, queue
from jobs.counters import BUCKETS
from jobs.errors import IllegalTransition, OwnerAtCapacity, PayloadError, UnknownJobType
from jobs.models import ACTIVE_STATUSES, Job, JobCounter, JobStatus, Priority
from jobs.spec import build as queue_spec
from jobs.worker.producer import ClaimFront
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db

ALL_STATUSES = list(JobStatus)


def claim(limit=10, **kwargs):
    return queue.claim_jobs(worker_id=uuid.uuid4(), limit=limit, **kwargs)


def status_of(job_or_id):
    return Job.objects.values_list("status", flat=True).get(pk=getattr(job_or_id, "pk", job_or_id))


# --- enqueue ---------------------------------------------------------------


def test_enqueue_stores_a_queued_job_with_the_normalized_payload():
    """Store a validated job, queued, with a trace id."""
    job = queue.enqueue("reverse_string", "hello world", priority="high")
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert job.payload == {"text": "hello world"}
    assert job.priority == Priority.HIGH
    assert job.max_retries == 3
    assert len(job.trace_id) == 32


def test_enqueue_with_delay_is_scheduled():
    """Store a job with a future run_at as scheduled, and do not claim it early."""
    job = queue.enqueue("reverse_string", {"text": "later"}, delay=60)
    assert job.status == JobStatus.SCHEDULED
    assert job.run_at > timezone.now() + timedelta(seconds=50)
    assert claim() == []


def test_enqueue_refuses_unknown_types_and_bad_payloads():
    """Raise before storing anything for an unknown type or an invalid payload."""
    with pytest.raises(UnknownJobType):
        queue.enqueue("no_such_type", {})
    with pytest.raises(PayloadError) as excinfo:
        queue.enqueue("reverse_string", {"text": 42})
    assert "text" in excinfo.value.errors
    with pytest.raises(ValueError):
        queue.enqueue("reverse_string", "x", priority="urgent")
    assert Job.objects.count() == 0


def test_enqueue_refuses_too_deep_and_too_large_payloads(settings):
    """Refuse payloads nested past the depth limit or larger than the size limit."""
    deep = {"text": "x"}
    node = deep
    for _ in range(100):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(PayloadError, match="nested"):
        queue.enqueue("reverse_string", deep)
    settings.JOBS_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(PayloadError, match="limit"):
        queue.enqueue("reverse_string", {"text": "x" * 200})
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_enqueue_joins_the_callers_transaction():
    """Leave no job behind when the enqueuing transaction rolls back."""

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with transaction.atomic():
            queue.enqueue("reverse_string", "gone")
            queue.enqueue_many("reverse_string", ["a", "b"])
            raise Boom
    assert Job.objects.count() == 0
    with transaction.atomic():
        queue.enqueue("reverse_string", "kept")
    assert Job.objects.count() == 1


def test_enqueue_many_inserts_in_one_statement():
    """Insert a whole batch, its count and its NOTIFY with a single statement."""
    with CaptureQueriesContext(connection) as queries:
        ids = queue.enqueue_many("reverse_string", [f"job {n}" for n in range(500)], priority="low")
    assert len(queries.captured_queries) == 1
    assert "INSERT INTO jobs_job" in queries.captured_queries[0]["sql"]
    assert len(ids) == 500
    assert Job.objects.filter(pk__in=ids, priority=Priority.LOW, payload__text="job 7").count() == 1


def test_enqueue_is_one_statement():
    """Store a job, its count and its NOTIFY in one round trip."""
    with CaptureQueriesContext(connection) as queries:
        job = queue.enqueue("reverse_string", "hello")
    assert len(queries.captured_queries) == 1
    assert Job.objects.get(pk=job.pk).run_at == job.run_at


def test_owner_max_active_refuses_a_job_past_the_owners_unfinished_jobs():
    """Store nothing, count nothing and raise OwnerAtCapacity when the owner's unfinished jobs reach the cap."""
    owner = UserFactory()
    JobFactory(owner=owner, status=JobStatus.COMPLETED)  # finished jobs do not count
    running = JobFactory(owner=owner, status=JobStatus.RUNNING)
    JobFactory(status=JobStatus.QUEUED)  # nor do other owners'
    second = queue.enqueue("reverse_string", "a", owner=owner, owner_max_active=2)
    counted = list(JobCounter.objects.filter(name="enqueued").values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries, pytest.raises(OwnerAtCapacity):
        queue.enqueue("reverse_string", "b", owner=owner, owner_max_active=2)
    assert len(queries.captured_queries) == 1
    assert set(Job.objects.filter(owner=owner).active().values_list("pk", flat=True)) == {running.pk, second.pk}
    assert list(JobCounter.objects.filter(name="enqueued").values_list("pk", flat=True)) == counted  # not even a 0
    Job.objects.filter(pk=second.pk).update(status=JobStatus.DEAD)
    assert queue.enqueue("reverse_string", "c", owner=owner, owner_max_active=2).owner_id == owner.pk


def test_unique_key_returns_the_existing_active_job():
    """Return the unfinished job with the same owner and key instead of a duplicate."""
    owner = UserFactory()
    first = queue.enqueue("reverse_string", "a", owner=owner, unique_key="k")
    second = queue.enqueue("reverse_string", "b", owner=owner, unique_key="k")
    other_owner = queue.enqueue("reverse_string", "c", owner=UserFactory(), unique_key="k")
    assert second.pk == first.pk and second.deduplicated
    assert other_owner.pk != first.pk
    Job.objects.filter(pk=first.pk).update(status=JobStatus.COMPLETED)
    assert queue.enqueue("reverse_string", "d", owner=owner, unique_key="k").pk != first.pk


# --- claim -----------------------------------------------------------------


def test_claim_marks_jobs_running_with_a_lease():
    """Claim ready jobs: running, one attempt counted, each with its own lease token."""
    jobs = JobFactory.create_batch(3)
    worker = uuid.uuid4()
    claimed = queue.claim_jobs(worker_id=worker, limit=10, lease_seconds=30)
    assert {c.id for c in claimed} == {j.pk for j in jobs}
    assert len({c.lease_token for c in claimed}) == 3
    for row in Job.objects.all():
        assert row.status == JobStatus.RUNNING
        assert row.attempts == 1
        assert row.leased_by == worker
        assert row.lease_expires_at > timezone.now() + timedelta(seconds=20)
        assert row.started_at is not None


def test_claim_respects_the_limit_and_queues():
    """Claim at most `limit` jobs, only from the queues asked for."""
    JobFactory.create_batch(5, queue="emails")
    JobFactory.create_batch(5, queue="reports")
    assert len(claim(3, queues=["emails"])) == 3
    claimed = claim(10, queues=["emails"])
    assert len(claimed) == 2 and {c.queue for c in claimed} == {"emails"}
    assert len(claim(100)) == 5


def test_claim_skips_jobs_that_are_not_ready():
    """Never claim future, finished, running or expired jobs."""
    JobFactory(status=JobStatus.SCHEDULED, run_at=timezone.now() + timedelta(minutes=5))
    JobFactory(status=JobStatus.RETRYING, run_at=timezone.now() + timedelta(minutes=5))
    JobFactory(expires_at=timezone.now() - timedelta(seconds=1))
    for status in (JobStatus.RUNNING, *queue.REQUEUEABLE_STATUSES, JobStatus.COMPLETED):
        JobFactory(status=status)
    due = [
        JobFactory(status=JobStatus.SCHEDULED, run_at=timezone.now() - timedelta(seconds=1)),
        JobFactory(status=JobStatus.RETRYING, run_at=timezone.now() - timedelta(seconds=1)),
    ]
    assert {c.id for c in claim()} == {j.pk for j in due}


def test_claim_serves_the_highest_priority_first_then_the_rest_in_order():
    """Fill a claim from the highest priority down, named or not, each oldest run_at first."""
    low = JobFactory.create_batch(2, priority=Priority.LOW)
    high = JobFactory.create_batch(2, priority=Priority.HIGH)
    normal = JobFactory.create_batch(2, priority=Priority.NORMAL)
    urgent = JobFactory(priority=100)
    between = JobFactory(priority=-7)
    first = claim(4)
    assert [c.id for c in first] == [urgent.pk, high[0].pk, high[1].pk, normal[0].pk]
    assert [c.priority for c in first] == [100, Priority.HIGH, Priority.HIGH, Priority.NORMAL]
    assert [c.id for c in claim(10)] == [normal[1].pk, between.pk, low[0].pk, low[1].pk]


def test_claim_within_a_priority_takes_the_oldest_run_at_first():
    """Order jobs of one priority by run_at."""
    now = timezone.now()
    newer = JobFactory(run_at=now - timedelta(seconds=1))
    older = JobFactory(run_at=now - timedelta(seconds=10))
    assert [c.id for c in claim(1)] == [older.pk]
    assert [c.id for c in claim(1)] == [newer.pk]


def test_a_claim_from_the_front_reads_only_the_priorities_it_names():
    """Leave alone the jobs of a priority a worker's front does not name: it learns of them from a sweep or a NOTIFY."""
    named = JobFactory(priority=Priority.NORMAL)
    unnamed = JobFactory(priority=42)
    start = {int(p): -math.inf for p in Priority}
    assert [c.id for c in claim(10, start=start)] == [named.pk]
    assert queue.ready_priorities() == [42]
    assert [c.id for c in claim(10, start={**start, 42: -math.inf})] == [unnamed.pk]


def test_ready_priorities_lists_each_priority_with_jobs_to_claim_once():
    """List the priorities of ready and waiting jobs without a concurrency key, highest first, each once."""
    for priority in (5, 5, -100, 100, 0):
        JobFactory(priority=priority)
    JobFactory(priority=9, status=JobStatus.SCHEDULED, run_at=timezone.now() + timedelta(hours=1))
    JobFactory(priority=77, status=JobStatus.COMPLETED)
    JobFactory(priority=66, concurrency_key="tenant:1")
    assert queue.ready_priorities() == [100, 9, 5, 0, -100]


def test_a_priority_outside_the_scale_is_refused():
    """Refuse a priority below -100 or above 100 in enqueue, and in the table itself."""
    from django.db import IntegrityError

    with pytest.raises(ValueError, match="-100 to 100"):
        queue.enqueue("reverse_string", "x", priority=101)
    with pytest.raises(IntegrityError, match="job_priority_in_range"), transaction.atomic():
        JobFactory(priority=-101)


@pytest.mark.django_db(transaction=True)
def test_claim_skips_rows_locked_elsewhere():
    """Skip, without waiting, a row another transaction holds FOR UPDATE."""
    from django.db import connections

    locked, free = JobFactory(), JobFactory()
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute("SELECT id FROM jobs_job WHERE id = %s FOR UPDATE", [locked.pk])
        assert [c.id for c in claim()] == [free.pk]
        assert status_of(locked) == JobStatus.QUEUED
    finally:
        other.rollback()
        other.close()
    assert [c.id for c in claim()] == [locked.pk]


# --- worker-side transitions ---------------------------------------------------


def test_complete_records_the_result_and_history():
    """Complete a running job: result stored, lease cleared, the attempt in the history."""
    JobFactory()
    (job,) = claim()
    assert queue.complete_job(job, "dlrow olleh")
    row = Job.objects.get(pk=job.id)
    assert (row.status, row.result, row.progress) == (JobStatus.COMPLETED, "dlrow olleh", 100)
    assert row.lease_token is None and row.finished_at is not None
    assert [(h["attempt"], h["outcome"]) for h in row.history] == [(1, "completed")]


def test_complete_many_in_one_statement():
    """Complete a whole batch with a single UPDATE."""
    JobFactory.create_batch(50)
    jobs = claim(50)
    with CaptureQueriesContext(connection) as queries:
        done = queue.complete_jobs([queue.Completion(j, {"n": j.id}) for j in jobs])
    assert len(queries) == 1
    assert done == {j.id for j in jobs}
    assert Job.objects.filter(status=JobStatus.COMPLETED).count() == 50


def claim_and_complete_one_by_one(times: int) -> dict[str, str]:
    """Claim and complete `times` jobs one at a time; return the connection's prepared statements, name: text."""
    JobFactory.create_batch(times)
    for _ in range(times):
        queue.complete_jobs([queue.Completion(j, None) for j in claim(1)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def test_hot_statements_are_prepared_once_they_repeat():
    """Prepare the claim and the completion on the connection, so PostgreSQL stops re-planning them."""
    prepared = claim_and_complete_one_by_one(8).values()
    assert any("FOR UPDATE SKIP LOCKED" in text for text in prepared)
    assert any("jsonb_to_recordset" in text for text in prepared)
    assert Job.objects.filter(status=JobStatus.COMPLETED).count() == 8


def test_fail_schedules_a_retry_with_backoff(settings):
    """Send a failed job with retries left to retrying, due after the backoff."""
    settings.JOBS_BACKOFF_JITTER = 0
    JobFactory()
    (job,) = claim()
    before = timezone.now()
    assert queue.fail_job(job, error="boom", traceback="Traceback...") == JobStatus.RETRYING
    row = Job.objects.get(pk=job.id)
    assert row.status == JobStatus.RETRYING and row.error == "boom"
    assert before + timedelta(seconds=4) < row.run_at < before + timedelta(seconds=7)
    assert row.history[-1]["traceback"] == "Traceback..."
    assert row.lease_token is None


def test_fail_on_the_last_attempt_goes_to_the_dlq():
    """Send a job whose retries ran out to dead: it ran max_retries + 1 times."""
    JobFactory(max_retries=1)
    for attempt, expected in ((1, JobStatus.RETRYING), (2, JobStatus.DEAD)):
        Job.objects.update(run_at=timezone.now())
        (job,) = claim()
        assert job.attempts == attempt
        assert queue.fail_job(job, error=f"boom {attempt}") == expected
    row = Job.objects.get()
    assert row.finished_at is not None
    assert [h["error"] for h in row.history] == ["boom 1", "boom 2"]
    assert claim() == []


def test_permanent_failure_skips_the_retries():
    """Send a permanently failed job straight to dead."""
    JobFactory(max_retries=5)
    (job,) = claim()
    assert queue.fail_job(job, error="bad input", permanent=True) == JobStatus.DEAD


def test_release_requeues_without_counting_the_attempt():
    """Put a job back as queued with its attempt count restored."""
    JobFactory()
    (job,) = claim()
    assert queue.release_jobs([job]) == 1
    row = Job.objects.get()
    assert (row.status, row.attempts, row.lease_token) == (JobStatus.QUEUED, 0, None)


def test_set_progress_needs_the_lease():
    """Record progress only while the lease is ours."""
    JobFactory()
    (job,) = claim()
    assert queue.set_progress(job, 40)
    assert Job.objects.get().progress == 40
    stale = queue.ClaimedJob(**{**{f: getattr(job, f) for f in job.__slots__}, "lease_token": uuid.uuid4()})
    assert not queue.set_progress(stale, 90)
    assert Job.objects.get().progress == 40


def test_worker_writes_are_refused_once_the_lease_is_lost():
    """Refuse complete, fail, release and renew with a stale token: the zombie changes nothing."""
    JobFactory()
    (zombie,) = claim(lease_seconds=30)
    Job.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert [(job.id, job.status) for job in queue.rescue_expired_leases()] == [(zombie.id, JobStatus.RETRYING)]
    queue.retry_now(zombie.id)  # instead of waiting out the backoff
    (rescuer,) = claim()
    assert rescuer.attempts == 2
    assert not queue.complete_job(zombie, "stale result")
    assert queue.fail_job(zombie, error="stale") is None
    assert queue.release_jobs([zombie]) == 0
    assert queue.heartbeat(uuid.uuid4(), busy=1, processed=0, failed=0, held=[zombie]) == {}
    assert queue.complete_job(rescuer, "fresh result")
    row = Job.objects.get()
    assert (row.status, row.result) == (JobStatus.COMPLETED, "fresh result")


def test_rescue_counts_the_lost_attempt_and_backs_off(settings):
    """Rescue expired leases to retrying after the backoff, or to dead when it was the last attempt."""
    settings.JOBS_BACKOFF_JITTER = 0
    retry = JobFactory(stale=True, attempts=2, max_retries=3)
    last = JobFactory(stale=True, attempts=4, max_retries=3)
    fresh = JobFactory(status=JobStatus.RUNNING, attempts=1)
    before = timezone.now()
    rescued = sorted((job.id, job.status) for job in queue.rescue_expired_leases())
    after = timezone.now()
    run_at = Job.objects.get(pk=retry.pk).run_at
    assert before + timedelta(seconds=10) <= run_at <= after + timedelta(seconds=10), "5 s base, second attempt"
    assert rescued == sorted([(retry.pk, JobStatus.RETRYING), (last.pk, JobStatus.DEAD)])
    assert status_of(fresh) == JobStatus.RUNNING
    assert "Lease expired" in Job.objects.get(pk=retry.pk).error
    assert Job.objects.get(pk=retry.pk).history[-1]["outcome"] == "lost"


def test_heartbeat_renews_leases():
    """Push the lease of the worker's running jobs forward."""
    JobFactory()
    worker = uuid.uuid4()
    (job,) = queue.claim_jobs(worker_id=worker, limit=1, lease_seconds=5)
    assert queue.heartbeat(worker, busy=1, processed=0, failed=0, held=[job], lease_seconds=120) == {job.id: False}
    assert Job.objects.get().lease_expires_at > timezone.now() + timedelta(seconds=100)


def test_expire_moves_jobs_past_their_ttl():
    """Expire ready jobs whose TTL passed; leave others alone."""
    old = JobFactory(expires_at=timezone.now() - timedelta(seconds=1))
    young = JobFactory(expires_at=timezone.now() + timedelta(hours=1))
    running = JobFactory(status=JobStatus.RUNNING, expires_at=timezone.now() - timedelta(seconds=1))
    assert queue.expire_jobs() == 1
    assert [status_of(j) for j in (old, young, running)] == [JobStatus.EXPIRED, JobStatus.QUEUED, JobStatus.RUNNING]


def test_ttl_option_sets_expires_at():
    job = queue.enqueue("reverse_string", "x", ttl=60)
    assert timezone.now() + timedelta(seconds=50) < job.expires_at < timezone.now() + timedelta(seconds=70)


# --- user and operator transitions --------------------------------------------------


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_cancel_is_legal_only_for_unfinished_jobs(status):
    """Cancel queued, scheduled, retrying and claimed jobs; ask a running one's worker; refuse finished ones."""
    job = JobFactory(status=status)
    if status == JobStatus.RUNNING:
        queue.cancel_job(job.pk)
        row = Job.objects.get(pk=job.pk)
        assert row.status == JobStatus.RUNNING and row.lease_token == job.lease_token
        assert row.cancel_requested_at is not None
        queue.cancel_job(job.pk)  # asked for already: nothing changes
        assert Job.objects.get(pk=job.pk).cancel_requested_at == row.cancel_requested_at
    elif status in ACTIVE_STATUSES:
        queue.cancel_job(job.pk)
        row = Job.objects.get(pk=job.pk)
        assert row.status == JobStatus.CANCELLED and row.lease_token is None
    else:
        with pytest.raises(IllegalTransition, match=f"it is {status}"):
            queue.cancel_job(job.pk)
        assert status_of(job) == status


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_retry_is_legal_only_for_dead_cancelled_or_expired_jobs(status):
    """Requeue dead, cancelled and expired jobs with fresh retries; refuse the rest."""
    job = JobFactory(status=status, attempts=4)
    if status in queue.REQUEUEABLE_STATUSES:
        queue.retry_job(job.pk)
        row = Job.objects.get(pk=job.pk)
        assert (row.status, row.attempts, row.finished_at) == (JobStatus.QUEUED, 0, None)
    else:
        with pytest.raises(IllegalTransition):
            queue.retry_job(job.pk)
        assert status_of(job) == status


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_retry_now_is_legal_only_for_waiting_jobs(status):
    """Make scheduled and retrying jobs due now; refuse the rest."""
    job = JobFactory(status=status, run_at=timezone.now() + timedelta(hours=1))
    if status in (JobStatus.SCHEDULED, JobStatus.RETRYING):
        queue.retry_now(job.pk)
        assert status_of(job) == JobStatus.QUEUED
        assert [c.id for c in claim()] == [job.pk]
    else:
        with pytest.raises(IllegalTransition):
            queue.retry_now(job.pk)
        assert status_of(job) == status


def test_transitions_on_a_missing_job_raise_does_not_exist():
    with pytest.raises(Job.DoesNotExist):
        queue.cancel_job(999_999)


def test_cancelling_a_claimed_job_takes_its_lease():
    """Refuse the worker's completion of a job cancelled before a slot started it."""
    JobFactory()
    (job,) = claim(starting=0)
    queue.cancel_job(job.id)
    assert not queue.complete_job(job, "late")
    assert status_of(job.id) == JobStatus.CANCELLED


def test_a_running_job_asked_to_cancel_never_waits_again():
    """A retry or snooze its worker reports before hearing of the cancel ends the job cancelled; a completion stands."""
    JobFactory.create_batch(3)
    failing, snoozing, finishing = claim()
    for job in (failing, snoozing, finishing):
        queue.cancel_job(job.id)
    assert queue.record_outcomes([queue.Completion(finishing, "done")], [queue.Failure(failing, "boom")],
                                 [queue.Snoozed(snoozing, 60)]) == {
        failing.id: JobStatus.CANCELLED, snoozing.id: JobStatus.CANCELLED, finishing.id: JobStatus.COMPLETED}
    assert Job.objects.get(pk=failing.id).finished_at is not None


def test_a_snooze_puts_the_job_back_without_counting_the_attempt():
    JobFactory()
    (job,) = claim()
    assert queue.record_outcomes([], [], [queue.Snoozed(job, 30)]) == {job.id: JobStatus.SCHEDULED}
    row = Job.objects.get(pk=job.id)
    assert (row.attempts, row.started_at, row.lease_token) == (0, None, None)
    assert timezone.now() + timedelta(seconds=25) < row.run_at < timezone.now() + timedelta(seconds=35)
    assert [entry["outcome"] for entry in row.history] == ["snoozed"]
    assert not JobCounter.objects.filter(name__in=["failed", "retried"]).exists()
    assert claim() == []


def test_a_cancelled_job_whose_worker_died_is_cancelled_by_the_rescue():
    JobFactory(stale=True, attempts=1, max_retries=3)
    job = Job.objects.get()
    Job.objects.filter(pk=job.pk).update(cancel_requested_at=timezone.now())
    (rescued,) = queue.rescue_expired_leases()
    assert rescued.status == JobStatus.CANCELLED
    assert Job.objects.get(pk=job.pk).finished_at is not None


def test_bulk_actions_touch_only_legal_rows():
    """Apply cancel, retry-now and requeue to the legal rows of a mixed selection."""
    jobs = {status: JobFactory(status=status) for status in ALL_STATUSES}
    everything = Job.objects.all()
    assert queue.requeue_dead(everything) == [jobs[JobStatus.DEAD].pk]
    assert status_of(jobs[JobStatus.DEAD]) == JobStatus.QUEUED
    assert queue.retry_jobs_now(everything) == 2
    assert queue.cancel_jobs(everything) == 6  # queued x2, scheduled->queued, retrying->queued, claimed, running (asked)
    assert status_of(jobs[JobStatus.RUNNING]) == JobStatus.RUNNING
    assert Job.objects.get(pk=jobs[JobStatus.RUNNING].pk).cancel_requested_at is not None
    assert status_of(jobs[JobStatus.COMPLETED]) == JobStatus.COMPLETED


def test_requeue_dead_honours_the_limit_and_filters():
    dead = JobFactory.create_batch(4, status=JobStatus.DEAD, type="fail")
    other = JobFactory(status=JobStatus.DEAD, type="reverse_string", queue="emails")
    assert queue.requeue_dead(queue.dead_jobs(type="fail"), limit=3) == [j.pk for j in dead[:3]]
    assert queue.requeue_dead(queue.dead_jobs(queue="emails")) == [other.pk]
    assert Job.objects.dead().count() == 1


def test_prune_deletes_old_finished_jobs_but_keeps_the_dlq():
    """Delete completed/cancelled/expired jobs past retention; keep dead and recent ones."""
    old = timezone.now() - timedelta(days=30)
    for status in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.EXPIRED, JobStatus.DEAD):
        JobFactory(status=status, finished_at=old)
    recent = JobFactory(status=JobStatus.COMPLETED)
    assert queue.prune_finished(older_than_seconds=7 * 24 * 3600) == 3
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.DEAD, JobStatus.COMPLETED}
    assert Job.objects.filter(pk=recent.pk).exists()


def test_prune_goes_in_batches_oldest_first():
    """Delete at most `limit` jobs per call, the longest finished first, so a backlog goes in short transactions."""
    now = timezone.now()
    jobs = [JobFactory(status=JobStatus.COMPLETED, finished_at=now - timedelta(days=10 + n)) for n in range(5)]
    assert queue.prune_finished(older_than_seconds=24 * 3600, limit=2) == 2
    assert set(Job.objects.values_list("pk", flat=True)) == {j.pk for j in jobs[:3]}
    assert queue.prune_finished(older_than_seconds=24 * 3600, limit=2) == 2
    assert queue.prune_finished(older_than_seconds=24 * 3600, limit=2) == 1
    assert queue.prune_finished(older_than_seconds=24 * 3600, limit=2) == 0


def test_claims_stay_exact_under_the_prepared_generic_plan():
    """Claim exactly `limit` jobs, each once, when PostgreSQL runs the prepared claim with its generic plan."""
    JobFactory.create_batch(60)
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    try:
        batches = [claim(7) for _ in range(8)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
    assert [len(b) for b in batches] == [7] * 8
    ids = [job.id for batch in batches for job in batch]
    assert len(ids) == len(set(ids)) == 56
    assert Job.objects.filter(status=JobStatus.RUNNING).count() == 56


def test_a_claim_from_the_front_skips_what_is_due_before_it():
    """Claim only jobs due at or after the given start; without one, the oldest first."""
    now = timezone.now()
    late = JobFactory(run_at=now - timedelta(hours=1))
    fresh = JobFactory(run_at=now - timedelta(seconds=1))
    start = {p: (now - timedelta(minutes=1)).timestamp() for p in Priority}
    assert [job.id for job in claim(10, start=start)] == [fresh.pk]
    (job,) = claim(10)
    assert job.id == late.pk
    assert job.priority == Priority.NORMAL and abs(job.due - late.run_at.timestamp()) < 1e-3


def test_claim_front_moves_forward_and_sweeps_less_often_while_nothing_is_behind():
    """Start claims just before the newest job claimed; back off sweeps that find nothing behind, reset when they do."""
    front = ClaimFront(sweep_interval=1.0)
    assert front.start(now=0.0) is None, "the first claim reads from the start"

    def job(due):
        return queue.ClaimedJob(1, "t", {}, 1, 3, None, "", "default", uuid.uuid4(), None, Priority.NORMAL, due)

    front.claimed([job(100.0), job(105.0)], swept=True, now=0.0)
    assert front.start(now=0.5)[Priority.NORMAL] == 105.0 - front.LOOKBACK
    assert front.start(now=0.5)[Priority.HIGH] == -math.inf
    front.claimed([job(90.0)], swept=False, now=0.5)
    assert front.start(now=1.0)[Priority.NORMAL] == 105.0 - front.LOOKBACK, "never moves back"
    intervals = []
    for now in (2.0, 10.0, 30.0, 60.0, 90.0):
        assert front.start(now=now) is None
        front.claimed([], swept=True, now=now)
        intervals.append(front.sweep_interval)
    assert intervals == [4.0, 8.0, 10.0, 10.0, 10.0]
    front.claimed([job(50.0)], swept=True, now=100.0)  # a straggler behind the front
    assert front.sweep_interval == 1.0 and front.next_sweep == 101.0


def test_claim_front_reads_the_named_priorities_those_it_learns_and_forgets_them_at_a_sweep():
    """Read high, normal and low always, a priority once claimed or named by a NOTIFY, until a sweep no longer finds it."""
    front = ClaimFront(sweep_interval=1.0)
    assert front.start(now=0.0) is None
    assert front.sweep([90, 0]) == {90: -math.inf, **{int(p): -math.inf for p in Priority}}
    front.claimed([], swept=True, now=0.0)
    front.learn([-3])
    front.claimed([queue.ClaimedJob(1, "t", {}, 1, 3, None, "", "default", uuid.uuid4(), None, 12, 100.0)],
                  swept=False, now=0.1)
    assert set(front.start(now=0.5)) == {90, 50, 12, 0, -3, -50}
    assert front.start(now=0.5)[12] == 100.0 - front.LOOKBACK
    assert set(front.sweep([12])) == {50, 12, 0, -50}, "a sweep forgets the priorities it found no job of"


@pytest.mark.django_db(transaction=True)
def test_an_enqueue_of_a_priority_other_than_the_named_ones_names_it_in_its_notify():
    """Name a new priority in the NOTIFY, for a job due now or later, so workers read it at once; the named ones as before."""
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
        queue.enqueue("reverse_string", "a", priority=37)
        queue.enqueue("reverse_string", "a", priority=-8, delay=3600)
        queue.enqueue_many("reverse_string", ["a", "b"], priority="high")
        queue.enqueue_specs([spec.with_options(priority=12) for spec in
                             [queue_spec("reverse_string", "c", queue="emails")]])
        queue.enqueue("reverse_string", "a", priority=5, delay=3600, concurrency_key="k:1")
        notices = [note.payload for note in listener.notifies(timeout=1.0, stop_after=5)]
    assert notices == ["default:p37", "default:p-8", "default", "emails:p12"], "none for the keyed job due later"


@pytest.mark.django_db(transaction=True)
def test_a_pooled_connection_is_set_to_plan_every_run_once():
    """Set a worker's connections to plan every run once each, not each time Django takes one from the pool."""
    connection.force_debug_cursor = True
    start, seen = len(connection.queries_log), set()
    try:
        db.plan_every_run_in_this_process()
        if connection.connection is not None:
            seen.add(id(connection.connection))
        for _ in range(8):
            connection.close()  # back to the pool
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('plan_cache_mode')")
                assert cursor.fetchone()[0] == "force_custom_plan"
            seen.add(id(connection.connection))
        sets = [q for q in list(connection.queries_log)[start:] if q["sql"].startswith("SET plan_cache_mode")]
        assert len(seen) < 8  # the pool handed some connection out again
        assert len(sets) == len(seen)
    finally:
        connection.force_debug_cursor = False
        connection_created.disconnect(dispatch_uid="jobs.db.plan_every_run")


def test_prepared_completion_is_planned_for_the_table_as_it_is_now():
    """Plan the prepared completion afresh on each run: one prepared on a near-empty table must not scan it all later."""
    db.plan_every_run(connection=connection)  # as workers do (Worker.run)
    # Prepared after 5 runs; PostgreSQL considers a generic plan after 5 more.
    prepared = claim_and_complete_one_by_one(15)
    (name,) = [name for name, text in prepared.items() if "jsonb_to_recordset" in text]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO jobs_job (queue, type, payload, priority, status, attempts, max_retries, run_at, created_at,"
            " error, history, progress, trace_id)"
            " SELECT 'default', 'noop', '{}', 1, 'completed', 1, 0, now(), now(), '', '[]', 0, ''"
            " FROM generate_series(1, 50000)"
        )
        buckets = "{" + ",".join(str(b) for b in BUCKETS) + "}"
        cursor.execute(f"""EXPLAIN EXECUTE {name}('[{{"id": 1, "token": "{uuid.uuid4()}"}}]', '{buckets}')""")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using jobs_job_pkey" in plan, plan
    assert "Seq Scan on jobs_job" not in plan, plan


@pytest.mark.parametrize("payload, field", [({"text": "a\x00b"}, "text"), ({"text": "\ud800"}, "text"), ("\x00", "payload")])
def test_enqueue_refuses_a_payload_postgresql_cannot_store(payload, field):
    """Raise PayloadError naming the field that holds a NUL or a lone surrogate, and store nothing."""
    with pytest.raises(PayloadError) as excinfo:
        queue.enqueue("reverse_string", payload)
    assert list(excinfo.value.errors) == [field]
    with pytest.raises(PayloadError):
        queue.enqueue_many("reverse_string", ["fine", payload])
    assert Job.objects.count() == 0


@pytest.mark.parametrize("option", ["queue", "unique_key", "idempotency_key", "trace_id"])
@pytest.mark.parametrize("value", ["a\x00b", "\ud800"])
def test_enqueue_refuses_options_postgresql_cannot_store(option, value):
    """Raise ValueError naming the option that holds a NUL or a lone surrogate, and store nothing."""
    with pytest.raises(ValueError, match=f"^{option} must not contain"):
        queue.enqueue("reverse_string", "x", **{option: value})
    if option in ("queue", "trace_id"):
        with pytest.raises(ValueError, match=f"^{option} must not contain"):
            queue.enqueue_many("reverse_string", ["x"], **{option: value})
    assert Job.objects.count() == 0


# --- claimed, started, staged ------------------------------------------------------


def test_a_claim_starts_only_the_jobs_it_has_free_slots_for():
    """Mark the first `starting` jobs running with their attempt; hold the rest as claimed, uncounted and unstarted."""
    ids = queue.enqueue_many("reverse_string", ["a", "b", "c"])
    claimed = claim(3, starting=1)
    assert [job.id for job in claimed] == ids, "in the order to run them"
    assert [job.started for job in claimed] == [True, False, False]
    rows = {row.pk: row for row in Job.objects.filter(pk__in=ids)}
    assert (rows[ids[0]].status, rows[ids[0]].attempts) == (JobStatus.RUNNING, 1)
    assert rows[ids[0]].started_at is not None
    for job_id in ids[1:]:
        assert (rows[job_id].status, rows[job_id].attempts, rows[job_id].started_at) == (JobStatus.CLAIMED, 0, None)


def test_a_claimed_job_counts_its_attempt_when_its_start_or_its_outcome_is_stored():
    ids = queue.enqueue_many("reverse_string", ["a", "b"])
    started, finished = claim(2, starting=0)
    assert started.begin() and started.attempts == 1
    assert not started.begin(), "an attempt is counted once"
    assert queue.start_jobs([(started, 0.5)]) == {started.id}
    row = Job.objects.get(pk=started.id)
    assert (row.status, row.attempts) == (JobStatus.RUNNING, 1)
    assert 0.4 < (timezone.now() - row.started_at).total_seconds() < 5
    # One that ran and ended before its start was stored: the completion stores both.
    assert queue.complete_jobs([queue.Completion(finished, "b", run_seconds=0.1, started_ago=0.2)]) == {finished.id}
    row = Job.objects.get(pk=finished.id)
    assert (row.status, row.attempts, row.history[-1]["attempt"]) == (JobStatus.COMPLETED, 1, 1)
    assert datetime.fromisoformat(row.history[-1]["started_at"]) == row.started_at <= row.finished_at
    assert queue.start_jobs([(finished, 0.1)]) == set(), "a finished job is not started again"
    assert Job.objects.filter(pk__in=ids, attempts=1).count() == 2


def test_release_gives_back_claimed_jobs_and_uncounts_one_started_by_the_claim():
    ids = queue.enqueue_many("reverse_string", ["a", "b"])
    assert queue.release_jobs(claim(2, starting=1)) == 2
    assert sorted(Job.objects.filter(pk__in=ids).values_list("status", "attempts", "started_at")) == [
        (JobStatus.QUEUED, 0, None), (JobStatus.QUEUED, 0, None)]


def test_rescue_backs_off_a_started_job_and_requeues_a_claimed_one_uncounted():
    ids = queue.enqueue_many("reverse_string", ["a", "b"])
    started, waiting = claim(2, starting=1)
    Job.objects.filter(pk__in=ids).update(lease_expires_at=timezone.now() - timedelta(seconds=1))  # the worker died
    rescued = {job.id: job.status for job in queue.rescue_expired_leases()}
    assert rescued == {started.id: JobStatus.RETRYING, waiting.id: JobStatus.QUEUED}
    lost, requeued = Job.objects.get(pk=started.id), Job.objects.get(pk=waiting.id)
    assert lost.attempts == 1 and lost.run_at > timezone.now() and lost.history[-1]["outcome"] == "lost"
    assert (requeued.attempts, requeued.history, requeued.lease_token) == (0, [], None)
    assert not queue.complete_job(waiting, "late"), "the dead worker's lease is gone"
    assert counter_value("failed", "reverse_string") == 1


def counter_value(name, type_name):
    return sum(JobCounter.objects.filter(name=name, type=type_name).values_list("value", flat=True))


def test_staging_relabels_due_scheduled_and_retrying_jobs_queued():
    past, future = timezone.now() - timedelta(seconds=1), timezone.now() + timedelta(hours=1)
    due = [JobFactory(status=JobStatus.SCHEDULED, run_at=past), JobFactory(status=JobStatus.RETRYING, run_at=past)]
    later = [JobFactory(status=JobStatus.SCHEDULED, run_at=future), JobFactory(status=JobStatus.RETRYING, run_at=future)]
    assert queue.stage_due_jobs() == 2
    assert [status_of(job) for job in due] == [JobStatus.QUEUED] * 2
    assert [status_of(job) for job in later] == [JobStatus.SCHEDULED, JobStatus.RETRYING]
    assert queue.stage_due_jobs() == 0


def test_the_leader_stages_due_jobs_in_its_round():
    from jobs.worker.maintainer import Maintainer

    job = JobFactory(status=JobStatus.SCHEDULED, run_at=timezone.now() - timedelta(seconds=1))
    follower, leader = Maintainer(), Maintainer()
    leader.leadership.worker_id, follower.leadership.worker_id = uuid.uuid4(), uuid.uuid4()
    leader.run(now=0.0)
    assert status_of(job) == JobStatus.QUEUED
    again = JobFactory(status=JobStatus.RETRYING, run_at=timezone.now() - timedelta(seconds=1))
    follower.run(now=0.0)
    assert status_of(again) == JobStatus.RETRYING, "only the leader runs the maintenance"


@pytest.mark.django_db(transaction=True)
def test_the_priority_migration_moves_stored_priorities_to_their_named_points():
    """Move the priorities of jobs and schedules stored as 0/1/2 (lower first) to 50/0/-50 (higher first), and back."""
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("jobs", "0014_keyed_claim_order")], [("jobs", "0015_priority_scale")]
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before).apps
        jobs = {old_value: old.get_model("jobs", "Job").objects.create(type="reverse_string", priority=old_value).pk
                for old_value in (0, 1, 2)}
        schedule = old.get_model("jobs", "Schedule").objects.create(name="n", cron="* * * * *", type="reverse_string",
                                                                    priority=2)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        assert {old_value: Job.objects.get(pk=pk).priority for old_value, pk in jobs.items()} == {
            0: Priority.HIGH, 1: Priority.NORMAL, 2: Priority.LOW}
        from jobs.models import Schedule

        assert Schedule.objects.get(pk=schedule.pk).priority == Priority.LOW
        Job.objects.filter(pk=jobs[1]).update(priority=7)
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        back = executor.loader.project_state(before).apps.get_model("jobs", "Job")
        assert {old_value: back.objects.get(pk=pk).priority for old_value, pk in jobs.items()} == {0: 0, 1: 0, 2: 2}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

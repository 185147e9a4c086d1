"""Claimed versus running, with real worker processes: a job waiting in a worker for a free slot is
`claimed`, counts no attempt and has no start; its wait is measured to its real start."""

import time
from datetime import datetime

import pytest
from django.db.models import Sum

from jobs import queue
from jobs.models import ACTIVE_STATUSES, Job, JobCounter, JobStatus, Worker
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

FAST = ["--poll-interval", "0.2"]


def statuses(ids):
    return sorted(Job.objects.filter(pk__in=ids).values_list("status", flat=True))


def test_prefetched_jobs_behind_a_slow_one_are_claimed_until_a_slot_starts_them(start_worker, effects):
    """Hold prefetched jobs as `claimed` (no attempt, no start), run one at a time, and count their wait to the start."""
    slow = queue.enqueue("record_effect", {"seconds": 2})
    quick = queue.enqueue_many("record_effect", [{}] * 3)
    worker = start_worker("--concurrency", "1", "--prefetch", "3", *FAST)
    wait_for(lambda: statuses([slow.pk, *quick]) == [JobStatus.CLAIMED] * 3 + [JobStatus.RUNNING],
             message="the slow job running and the others claimed")
    worker_id = Worker.objects.get(pid=worker.pid, stopped_at__isnull=True).pk
    for row in Job.objects.filter(pk__in=quick):
        assert (row.status, row.attempts, row.started_at, row.leased_by) == (JobStatus.CLAIMED, 0, None, worker_id)
        assert row.history == []
    running = Job.objects.get(pk=slow.pk)
    assert (running.attempts, running.leased_by) == (1, worker_id) and running.started_at is not None

    most_running, deadline = 0, time.monotonic() + 30
    while Job.objects.filter(pk__in=[slow.pk, *quick], status__in=ACTIVE_STATUSES).exists():
        assert time.monotonic() < deadline, "the jobs did not finish"
        most_running = max(most_running, Job.objects.filter(status=JobStatus.RUNNING).count())
        time.sleep(0.02)
    assert statuses([slow.pk, *quick]) == [JobStatus.COMPLETED] * 4
    assert most_running == 1, "never more running than the worker has slots"

    slow_row = Job.objects.get(pk=slow.pk)
    for row in Job.objects.filter(pk__in=quick):
        assert row.attempts == 1
        (entry,) = row.history
        assert entry["attempt"] == 1
        assert datetime.fromisoformat(entry["started_at"]) == row.started_at
        # Started once the slow job had run, not when it was claimed with it.
        assert row.started_at >= slow_row.started_at + (slow_row.finished_at - slow_row.started_at) * 0.9
        assert (row.started_at - row.run_at).total_seconds() >= 1.8
    # The queue-wait histogram observed each attempt from due to its real start: at least 3 x 1.8 s.
    waited = JobCounter.objects.filter(name="queue_wait_seconds_sum", type="record_effect").aggregate(s=Sum("value"))
    assert waited["s"] >= 3 * 1.8
    worker.stop()


def test_a_claimed_job_of_a_killed_worker_is_queued_again_without_an_attempt(start_worker, effects):
    """Rescue what a killed worker held: its running job lost an attempt and backs off; its claimed ones lost nothing."""
    slow = queue.enqueue("record_effect", {"seconds": 30}, max_retries=1)
    quick = queue.enqueue_many("record_effect", [{}] * 2)
    victim = start_worker("--concurrency", "1", "--prefetch", "2", "--lease", "1", *FAST)
    wait_for(lambda: statuses([slow.pk, *quick]) == [JobStatus.CLAIMED] * 2 + [JobStatus.RUNNING],
             message="one running and two claimed")
    victim.kill()
    start_worker("--concurrency", "2", "--lease", "1", *FAST,
                 env={"JOBS_LEADER_LEASE_SECONDS": "1", "JOBS_BACKOFF_BASE": "60"})
    wait_for(lambda: statuses(quick) == [JobStatus.COMPLETED] * 2, timeout=30, message="the claimed jobs to complete")
    for row in Job.objects.filter(pk__in=quick):
        assert row.attempts == 1
        assert [entry["outcome"] for entry in row.history] == ["completed"]
    lost = Job.objects.get(pk=slow.pk)
    assert (lost.status, lost.attempts) == (JobStatus.RETRYING, 1)
    assert [entry["outcome"] for entry in lost.history] == ["lost"]

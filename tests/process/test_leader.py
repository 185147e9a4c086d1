"""The maintenance leader: one worker at a time runs rescue, expiry and pruning, and another takes over
when it dies. A rescued job backs off like any failure."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import queue
from jobs.models import Job, JobStatus, Leadership as LeadershipRow, Worker
from jobs.retry import backoff_seconds
from tests.conftest import wait_for
from tests.factories import JobFactory


@pytest.mark.django_db(transaction=True)
@pytest.mark.process
def test_kill_9_of_the_leader_hands_maintenance_to_another_worker_within_seconds(start_worker):
    """Kill the leader; another worker leads within its lease, and rescue, expiry and pruning go on, once each."""
    env = {"JOBS_LEADER_LEASE_SECONDS": "2"}
    workers = [start_worker("--poll-interval", "0.2", "--lease", "1", env=env) for _ in range(3)]

    def leader_pid():
        row = LeadershipRow.objects.filter(role="maintenance", expires_at__gt=timezone.now()).first()
        return row and Worker.objects.filter(pk=row.worker_id).values_list("pid", flat=True).first()

    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 3, message="3 workers")
    first = wait_for(leader_pid, message="a leader")
    assert sum("leading the maintenance" in w.output() for w in workers) == 1
    by_id = {w.pid: w for w in workers}
    # Its next pruning is a minute away: whoever prunes this sooner took over.
    old = JobFactory(status=JobStatus.COMPLETED, finished_at=timezone.now() - timedelta(days=8))
    by_id[first].kill()
    killed_at = time.monotonic()
    second = wait_for(lambda: (pid := leader_pid()) not in (None, first) and pid, timeout=10, message="a new leader")
    assert time.monotonic() - killed_at < 2 + 2, "within the lease and a poll"
    assert second in by_id and second != first

    stale = JobFactory(stale=True, attempts=1, max_retries=3)
    expiring = JobFactory(expires_at=timezone.now() - timedelta(seconds=1), run_at=timezone.now() + timedelta(hours=1),
                          status=JobStatus.SCHEDULED)
    wait_for(lambda: Job.objects.get(pk=stale.pk).status == JobStatus.RETRYING, message="the rescue")
    wait_for(lambda: Job.objects.get(pk=expiring.pk).status == JobStatus.EXPIRED, message="the expiry")
    wait_for(lambda: not Job.objects.filter(pk=old.pk).exists(), timeout=10, message="the pruning")
    outcomes = [entry["outcome"] for entry in Job.objects.get(pk=stale.pk).history]
    assert outcomes.count("lost") == 1, outcomes
    for worker in workers:
        if worker.pid != first:
            worker.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.process
def test_a_job_that_kills_its_worker_backs_off_between_attempts_then_is_dead(start_worker):
    """Rescue a job whose worker dies each time it runs after its backoff, and send it to the DLQ after its retries."""
    job = queue.enqueue("kill_own_worker", max_retries=2)
    supervisor = start_worker("--processes", "2", "--poll-interval", "0.2", "--lease", "1",
                              env={"JOBS_LEADER_LEASE_SECONDS": "1"})
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.DEAD, timeout=60, message="the job to be dead")
    row = Job.objects.get(pk=job.pk)
    assert row.attempts == 3
    history = row.history
    assert [entry["outcome"] for entry in history] == ["lost", "lost", "lost"]
    for number in (1, 2):
        lost_at = timezone.datetime.fromisoformat(history[number - 1]["finished_at"])
        retried_at = timezone.datetime.fromisoformat(history[number]["started_at"])
        # Backoff base 1 s with 10 % jitter: at least 0.9 s after the first loss, 1.8 s after the second.
        assert (retried_at - lost_at).total_seconds() >= 0.9 * backoff_seconds(number, base=1, cap=10, jitter=0)
    supervisor.stop()

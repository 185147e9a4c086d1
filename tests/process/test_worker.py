"""The worker as a real process: draining, crashes, signals, timeouts, poison."""

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs import queue
from jobs.models import Job, JobStatus, Leadership, Worker
from tests.conftest import ROOT, wait_for
from tests.factories import JobFactory
from tests.sample_handlers import EFFECTS_TABLE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

FAST = ["--poll-interval", "0.2"]


def status(job_id):
    return Job.objects.values_list("status", flat=True).get(pk=job_id)


def wait_for_status(job_id, expected, timeout=30):
    return wait_for(lambda: status(job_id) == expected, timeout=timeout, message=f"job {job_id} to be {expected}")


def test_runworker_is_ours_not_channels():
    """Resolve `manage.py runworker` to Skipjack's command, not Channels' one of the same name."""
    from django.core.management import get_commands

    assert get_commands()["runworker"] == "jobs"
    out = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "SKIP LOCKED" in out
    for option in ("--queues", "--concurrency", "--processes", "--burst", "--shutdown-timeout"):
        assert option in out


def test_four_processes_drain_5000_jobs_exactly_once(start_worker, effects):
    """Drain 5,000 jobs with 4 worker processes; every job's side effect happens exactly once."""
    queue.enqueue_many("record_effect", [{}] * 5000)
    workers = [start_worker("--burst", "--concurrency", "4", *FAST) for _ in range(4)]
    for worker in workers:
        assert worker.wait(timeout=180) == 0, worker.output()
    assert Job.objects.filter(status=JobStatus.COMPLETED).count() == 5000
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*), count(DISTINCT job_id), count(DISTINCT pid) FROM {EFFECTS_TABLE}")  # noqa: S608 - the test table's name
        executions, distinct_jobs, pids = cursor.fetchone()
        cursor.execute(f"SELECT job_id FROM {EFFECTS_TABLE} GROUP BY job_id HAVING count(*) > 1 LIMIT 5")  # noqa: S608 - the test table's name
        duplicated = cursor.fetchall()
    assert duplicated == []
    assert (executions, distinct_jobs) == (5000, 5000)
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}
    assert pids == 4, "every process took part"


def test_kill_9_mid_job_is_rescued_and_completes(start_worker, effects):
    """Rescue the job of a worker killed with SIGKILL; another worker completes it on attempt 2."""
    job = queue.enqueue("record_effect", {"seconds": 1.5})
    victim = start_worker("--lease", "1", *FAST)
    wait_for_status(job.pk, JobStatus.RUNNING)
    victim.kill()
    rescuer = start_worker("--lease", "1", *FAST)
    wait_for_status(job.pk, JobStatus.COMPLETED, timeout=30)
    row = Job.objects.get(pk=job.pk)
    assert row.attempts == 2
    assert [h["outcome"] for h in row.history] == ["lost", "completed"]
    assert row.result == {"pid": rescuer.pid}
    rescuer.stop()


def test_zombie_worker_cannot_overwrite_the_rescued_job(start_worker, effects):
    """Refuse the late write of a frozen worker whose job was rescued meanwhile."""
    job = queue.enqueue("record_effect", {"seconds": 1.0})
    zombie = start_worker("--lease", "1", *FAST)
    wait_for_status(job.pk, JobStatus.RUNNING)
    zombie.signal(signal.SIGSTOP)
    try:
        rescuer = start_worker("--lease", "1", *FAST)
        wait_for_status(job.pk, JobStatus.COMPLETED, timeout=30)
    finally:
        zombie.signal(signal.SIGCONT)
    # The zombie wakes, finishes its copy and tries to write it: the row is read after that try.
    wait_for(lambda: "lease_lost" in zombie.output(), timeout=15, message="the zombie's write to be refused")
    row = Job.objects.get(pk=job.pk)
    assert row.status == JobStatus.COMPLETED
    assert row.result == {"pid": rescuer.pid}
    assert [h["outcome"] for h in row.history] == ["lost", "completed"]
    zombie.stop()


def test_sigterm_lets_the_running_job_finish(start_worker, effects):
    """Finish the running job within the grace period on SIGTERM, then exit 0."""
    job = queue.enqueue("record_effect", {"seconds": 1.0})
    worker = start_worker("--shutdown-timeout", "20", *FAST)
    wait_for_status(job.pk, JobStatus.RUNNING)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert status(job.pk) == JobStatus.COMPLETED
    assert Worker.objects.get().stopped_at is not None


def test_sigterm_past_the_grace_period_releases_jobs_without_losing_them(start_worker, effects):
    """On SIGTERM, release prefetched jobs uncounted; the one interrupted mid-run keeps its attempt and retries."""
    ids = queue.enqueue_many("record_effect", [{"seconds": 3}] * 4)
    worker = start_worker("--concurrency", "1", "--prefetch", "3", "--shutdown-timeout", "0.5", *FAST)
    wait_for(lambda: sorted(Job.objects.filter(pk__in=ids).values_list("status", flat=True))
             == [JobStatus.CLAIMED] * 3 + [JobStatus.RUNNING], message="1 job running and 3 claimed")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert "waiting up to 0.5s for 1 running job(s) to finish: record_effect#" in worker.output()
    rows = Job.objects.filter(pk__in=ids)
    assert sorted(rows.values_list("status", "attempts")) == [
        (JobStatus.QUEUED, 0), (JobStatus.QUEUED, 0), (JobStatus.QUEUED, 0), (JobStatus.RETRYING, 1)]
    interrupted = rows.get(status=JobStatus.RETRYING)
    assert interrupted.history[-1]["outcome"] == "interrupted"
    queue.retry_now(interrupted.pk)  # instead of waiting out its backoff
    drain = start_worker("--burst", "--concurrency", "4", *FAST)
    assert drain.wait(timeout=60) == 0
    assert sorted(rows.values_list("status", "attempts")) == [
        (JobStatus.COMPLETED, 1), (JobStatus.COMPLETED, 1), (JobStatus.COMPLETED, 1), (JobStatus.COMPLETED, 2)]


def test_timeout_frees_the_slot_and_records_the_error(start_worker):
    """Stop a job past its timeout, record the timeout, and run the next job in the same slot."""
    spinner = queue.enqueue("spin", {"seconds": 20}, timeout=0.5, max_retries=0)
    sleeper = queue.enqueue("sleep", {"seconds": 20}, timeout=0.5, max_retries=1)
    after = queue.enqueue("reverse_string", "hello world")
    worker = start_worker("--concurrency", "1", "--prefetch", "0", *FAST)
    wait_for_status(after.pk, JobStatus.COMPLETED, timeout=15)
    spun = Job.objects.get(pk=spinner.pk)
    assert spun.status == JobStatus.DEAD
    assert spun.error == "Timed out after 0.5s"
    assert spun.history[-1]["outcome"] == "timeout"
    assert Job.objects.get(pk=sleeper.pk).status == JobStatus.RETRYING
    worker.stop()


def test_poisoned_jobs_never_stop_the_worker(start_worker):
    """Send unknown types, invalid payloads and SystemExit to the DLQ or a retry, and keep working."""
    unknown = JobFactory(type="no_such_handler")
    invalid = JobFactory(type="reverse_string", payload={"text": 42})
    exits = JobFactory(type="exit_process", payload={}, max_retries=0)
    failing = JobFactory(type="fail", payload={"message": "kaboom"}, max_retries=2)
    worker = start_worker("--concurrency", "2", *FAST)
    for job in (unknown, invalid, exits):
        wait_for_status(job.pk, JobStatus.DEAD)
    wait_for_status(failing.pk, JobStatus.RETRYING)
    assert "Unknown job type 'no_such_handler'" in Job.objects.get(pk=unknown.pk).error
    assert Job.objects.get(pk=invalid.pk).error.startswith("Invalid payload")
    assert "SystemExit" in Job.objects.get(pk=exits.pk).error
    assert "kaboom" in Job.objects.get(pk=failing.pk).history[0]["traceback"]
    after = queue.enqueue("reverse_string", "hello world")
    wait_for_status(after.pk, JobStatus.COMPLETED)
    assert Job.objects.get(pk=after.pk).result == "dlrow olleh"
    assert worker.proc.poll() is None


def test_a_result_json_cannot_hold_fails_only_its_own_job(start_worker):
    """Send a job whose result is NaN or a set to the DLQ; the jobs written back with it complete."""
    nan = queue.enqueue("unstorable_result", {"kind": "nan"}, max_retries=3)
    a_set = queue.enqueue("unstorable_result", {"kind": "set"}, max_retries=3)
    fine = queue.enqueue_many("reverse_string", [f"job {n}" for n in range(20)])
    worker = start_worker("--burst", "--concurrency", "4", *FAST)
    assert worker.wait(timeout=60) == 0, worker.output()
    for job in (nan, a_set):
        row = Job.objects.get(pk=job.pk)
        assert (row.status, row.attempts) == (JobStatus.DEAD, 1), "not retried: the same result would come back"
        assert row.error.startswith("Result is not JSON: ")
    assert Job.objects.filter(pk__in=fine, status=JobStatus.COMPLETED).count() == 20


def test_a_job_committed_behind_the_claim_front_still_runs(start_worker):
    """Run a job due long before the jobs already claimed (its transaction committed late): a sweep finds it."""
    worker = start_worker("--concurrency", "2", *FAST)
    first = queue.enqueue_many("reverse_string", [f"job {n}" for n in range(20)])
    wait_for(lambda: Job.objects.filter(pk__in=first, status=JobStatus.COMPLETED).count() == 20, timeout=30,
             message="the first jobs to complete")
    straggler = queue.enqueue("reverse_string", "late", run_at=timezone.now() - timedelta(hours=1))
    assert status(straggler.pk) == JobStatus.QUEUED
    wait_for_status(straggler.pk, JobStatus.COMPLETED)
    assert worker.proc.poll() is None


def test_burst_mode_sweeps_before_it_stops(start_worker, effects):
    """Stop a burst worker only once a claim from the start finds nothing, not when the front is empty."""
    jobs = queue.enqueue_many("record_effect", [{"seconds": 0.05}] * 30)
    # A long poll interval: no scheduled sweep comes before the queue drains.
    worker = start_worker("--burst", "--concurrency", "2", "--poll-interval", "60")
    wait_for(lambda: Job.objects.filter(pk__in=jobs, status=JobStatus.COMPLETED).exists(), timeout=30,
             message="the worker to start completing jobs")
    straggler = queue.enqueue("reverse_string", "late", run_at=timezone.now() - timedelta(hours=1))
    assert worker.wait(timeout=60) == 0, worker.output()
    assert Job.objects.filter(pk__in=jobs, status=JobStatus.COMPLETED).count() == 30
    assert status(straggler.pk) == JobStatus.COMPLETED


def test_failing_job_retries_with_backoff_then_lands_in_the_dlq(start_worker):
    """Retry a failing job max_retries times, then move it to dead with every attempt recorded."""
    job = queue.enqueue("fail", {"message": "always"}, max_retries=2)
    start_worker(*FAST, env={"JOBS_BACKOFF_BASE": "0.2"})
    wait_for_status(job.pk, JobStatus.DEAD, timeout=30)
    row = Job.objects.get(pk=job.pk)
    assert row.attempts == 3
    assert [h["outcome"] for h in row.history] == ["failed"] * 3
    started = [h["started_at"] for h in row.history]
    assert started == sorted(started)


def test_new_jobs_wake_an_idle_worker_through_notify(start_worker):
    """Start a job long before the next poll: NOTIFY wakes the worker."""
    worker = start_worker("--poll-interval", "60")
    # Its first poll ends with the maintenance, which makes it the leader:
    # from then on only a NOTIFY can wake it within 60 s.
    wait_for(lambda: Leadership.objects.filter(worker_id__in=Worker.objects.values("pk")).exists(),
             message="the worker's first poll")
    job = queue.enqueue("reverse_string", "hello world")
    wait_for_status(job.pk, JobStatus.COMPLETED, timeout=20)
    worker.stop()


def test_a_workers_connections_plan_prepared_statements_on_every_run(start_worker):
    """Plan every run of a prepared statement on each connection a worker opens, not a generic plan made once."""
    job = queue.enqueue("plan_cache_mode")
    start_worker(*FAST)
    wait_for_status(job.pk, JobStatus.COMPLETED)
    assert Job.objects.get(pk=job.pk).result == "force_custom_plan"


def test_worker_survives_losing_its_database_connections(start_worker):
    """Reconnect after every connection to PostgreSQL is cut, and lose no job."""
    first = queue.enqueue("reverse_string", "one")
    worker = start_worker(*FAST, env={"PGAPPNAME": "skipjack-doomed-worker"})
    wait_for_status(first.pk, JobStatus.COMPLETED)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'skipjack-doomed-worker'"
        )
        assert cursor.fetchone()[0] >= 1
    second = queue.enqueue("reverse_string", "two")
    wait_for_status(second.pk, JobStatus.COMPLETED, timeout=30)
    assert worker.proc.poll() is None


def test_heartbeat_and_worker_row(start_worker):
    """Register the worker with its queues and keep its heartbeat fresh."""
    worker = start_worker("--queues", "emails,reports", "--concurrency", "3", "--lease", "0.9", *FAST)
    row = wait_for(lambda: Worker.objects.filter(pid=worker.pid).first(), message="worker row")
    first_beat = row.heartbeat_at
    wait_for(lambda: Worker.objects.get(pk=row.pk).heartbeat_at > first_beat, message="a later heartbeat")
    assert (row.queues, row.concurrency) == (["emails", "reports"], 3)


def test_processes_option_runs_and_replaces_children(start_worker):
    """Run N worker processes under one command, replace one that dies, stop all on SIGTERM."""
    import psutil

    supervisor = start_worker("--processes", "2", *FAST)
    children = wait_for(lambda: len(psutil.Process(supervisor.pid).children()) == 2 and psutil.Process(supervisor.pid).children())
    os.kill(children[0].pid, signal.SIGKILL)
    wait_for(
        lambda: {c.pid for c in psutil.Process(supervisor.pid).children()} - {children[0].pid, children[1].pid},
        message="a replacement child",
    )
    job = queue.enqueue("reverse_string", "hello world")
    wait_for_status(job.pk, JobStatus.COMPLETED)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0

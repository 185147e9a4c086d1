"""Flow control with real worker processes: limits and rates hold across 4 workers of 8 slots, keys take
turns, and a pause stops every worker's claims within a second.

A sampler reads the database every 10 ms while the jobs run; the counts
that decide are taken from the jobs' own start and end times afterwards.
"""

import itertools
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta

import psycopg
import pytest

from jobs import queue
from jobs.models import ACTIVE_STATUSES, Job, JobStatus, QueueControl
from tests.conftest import ChildProcess, database_url_for_tests, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

WORKERS = 4
SLOTS = 8
# Start and end times come from two clocks (the database's, and the worker's
# for how long a job had run when its start was stored): allow this much.
CLOCK_SLACK = timedelta(milliseconds=2)


class Sampler(threading.Thread):
    """Reads the running jobs per (queue, key) every 10 ms, keeping the most seen at once."""

    def __init__(self):
        super().__init__(daemon=True)
        self.most = defaultdict(int)
        self.samples = 0
        self.stop = threading.Event()

    def run(self):
        with psycopg.connect(database_url_for_tests(), autocommit=True) as conn:
            while not self.stop.is_set():
                per_queue = defaultdict(int)
                rows = conn.execute("SELECT queue, concurrency_key, count(*) FROM jobs_job WHERE status = 'running' "
                                    "GROUP BY 1, 2").fetchall()
                for queue_name, key, n in rows:
                    self.most[(queue_name, key)] = max(self.most[(queue_name, key)], n)
                    per_queue[queue_name] += n
                for queue_name, n in per_queue.items():
                    self.most[(queue_name, "*")] = max(self.most[(queue_name, "*")], n)
                self.samples += 1
                time.sleep(0.01)


def most_at_once(intervals) -> int:
    """Return the most intervals (start, end) that overlap at any moment, by more than CLOCK_SLACK."""
    events = sorted([(start + CLOCK_SLACK, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def start_workers(start_worker, n=WORKERS):
    workers = [start_worker("--concurrency", str(SLOTS)) for _ in range(n)]
    wait_for(lambda: queue_workers() >= n, message=f"{n} workers registered")
    return workers


def queue_workers() -> int:
    from jobs.selectors import live_workers

    return live_workers().count()


def test_limits_and_rates_hold_across_workers_and_every_key_makes_progress(start_worker):
    queue.set_queue_controls("video", concurrency=3)
    queue.set_queue_controls("emails", rate_limit=10, rate_period=1.0)
    # One busy tenant with 60 jobs and nine with 8 each, at most 2 of a tenant's at once (the type's limit).
    keyed = [{"tenant": 0, "seconds": 0.05}] * 60 + [{"tenant": t, "seconds": 0.05} for t in range(1, 10)
                                                     for _ in range(8)]
    queue.enqueue_many("tenant_task", keyed, queue="tenants")
    queue.enqueue_many("tenant_task", [{"seconds": 0.1}] * 30, queue="video")
    queue.enqueue_many("tenant_task", [{"seconds": 0.01}] * 30, queue="emails")
    sampler = Sampler()
    sampler.start()
    start_workers(start_worker)
    wait_for(lambda: not Job.objects.filter(status__in=ACTIVE_STATUSES).exists(), timeout=90,
             message="every job to finish")
    sampler.stop.set()
    sampler.join()

    assert Job.objects.filter(status=JobStatus.COMPLETED).count() == len(keyed) + 60
    assert sampler.samples > 50
    # The sampler's view: never more running than a limit allows.
    for (queue_name, key), most in sampler.most.items():
        if queue_name == "tenants" and key not in (None, "*"):
            assert most <= 2, (key, most)
    assert sampler.most[("video", "*")] <= 3

    # The jobs' own times.
    spans = defaultdict(list)
    for queue_name, key, started, finished in Job.objects.values_list("queue", "concurrency_key", "started_at",
                                                                      "finished_at"):
        spans[(queue_name, key)].append((started, finished))
    keys = [key for queue_name, key in spans if queue_name == "tenants"]
    assert sorted(keys) == sorted(f"tenant:{t}" for t in range(10))
    for key in keys:
        assert most_at_once(spans[("tenants", key)]) <= 2, key
    assert most_at_once(spans[("video", None)]) == 3  # the limit, reached and held
    starts = sorted(started for started, _ in spans[("emails", None)])
    for i, start in enumerate(starts):
        in_window = sum(1 for other in starts[: i + 1] if other > start - timedelta(seconds=1))
        assert in_window <= 10, f"{in_window} starts in the second up to {start}"
    assert (starts[-1] - starts[0]).total_seconds() >= 1.9  # 30 starts at 10 a second: at least 2 s apart

    # Fairness: the busy tenant's 60 jobs did not hold the others back; each had a start in the first second.
    first = min(start for key in keys for start, _ in spans[("tenants", key)])
    for key in keys:
        assert min(start for start, _ in spans[("tenants", key)]) - first < timedelta(seconds=1), key
    quiet_done = max(end for key in keys if key != "tenant:0" for _, end in spans[("tenants", key)])
    busy_done = max(end for _, end in spans[("tenants", "tenant:0")])
    assert quiet_done < busy_done


def manage(*args) -> str:
    child = ChildProcess(["manage.py", *args])
    assert child.wait(timeout=60) == 0, child.output()
    return child.output()


def test_a_pause_stops_every_workers_claims_within_a_second_and_a_resume_restarts_them(start_worker):
    # Jobs of 1.5 s, so that each worker also holds jobs it prefetched: those must not start after the pause.
    ids = queue.enqueue_many("tenant_task", [{"seconds": 1.5}] * 200, queue="steady")
    start_workers(start_worker)
    wait_for(lambda: Job.objects.filter(status=JobStatus.CLAIMED).count() >= WORKERS * SLOTS // 2, timeout=30,
             message="the workers running jobs and holding prefetched ones")
    manage("queues", "pause", "steady")
    paused_at = QueueControl.objects.get(name="steady").paused_at
    running_then = set(Job.objects.filter(status=JobStatus.RUNNING, started_at__lte=paused_at)
                       .values_list("pk", flat=True))
    time.sleep(2.5)
    late = Job.objects.filter(queue="steady", started_at__gt=paused_at + timedelta(seconds=1)).count()
    assert late == 0, f"{late} jobs started more than a second after the pause"
    # What was prefetched went back to the queue, with no attempt counted; what ran finished.
    assert Job.objects.filter(status=JobStatus.CLAIMED).count() == 0
    assert not Job.objects.filter(status=JobStatus.QUEUED, attempts__gt=0).exists()
    assert set(Job.objects.filter(pk__in=running_then, status=JobStatus.COMPLETED).values_list("pk", flat=True)) \
        == running_then
    assert Job.objects.filter(status=JobStatus.RUNNING).count() == 0
    queued = Job.objects.filter(status=JobStatus.QUEUED).count()
    assert queued > 0

    manage("queues", "resume", "steady")
    resumed_at = QueueControl.objects.get(name="steady").updated_at
    wait_for(lambda: Job.objects.filter(queue="steady", started_at__gt=resumed_at).exists(), timeout=5,
             message="a start after the resume")
    first = Job.objects.filter(queue="steady", started_at__gt=resumed_at).order_by("started_at").first()
    assert (first.started_at - resumed_at).total_seconds() < 1.0
    wait_for(lambda: not Job.objects.filter(status__in=ACTIVE_STATUSES).exists(), timeout=120,
             message="every job to finish after the resume")
    assert Job.objects.filter(pk__in=ids, status=JobStatus.COMPLETED).count() == 200


# --- snooze and cancel -----------------------------------------------------------


def worker_agrees_with_rows(worker_pid: int) -> bool:
    """Whether the worker's busy count (its last heartbeat) matches the jobs it holds running."""
    from jobs.models import Worker

    worker = Worker.objects.get(pid=worker_pid, stopped_at__isnull=True)
    return worker.busy == Job.objects.filter(leased_by=worker.pk, status=JobStatus.RUNNING).count()


@pytest.mark.parametrize("returned", [False, True])
def test_a_snoozed_job_waits_without_using_its_retries_and_then_runs(start_worker, returned):
    job = queue.enqueue("snooze_times", {"times": 3, "return": returned}, max_retries=0)
    start_worker("--concurrency", "2", "--poll-interval", "0.2")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED, timeout=20, message="the job to wake")
    row = Job.objects.get(pk=job.pk)
    outcomes = [entry["outcome"] for entry in row.history]
    assert outcomes == ["snoozed"] * 3 + ["completed"]
    waits = [datetime.fromisoformat(b["started_at"]) - datetime.fromisoformat(a["finished_at"])
             for a, b in itertools.pairwise(row.history)]
    assert all(wait.total_seconds() >= 0.3 for wait in waits), waits
    assert row.attempts == 1 and row.result == "awake"  # every snooze gave its attempt back


def test_cancel_stops_a_cooperative_handler_and_frees_its_slot_and_lease(start_worker):
    worker = start_worker("--concurrency", "2", "--lease", "3", "--poll-interval", "0.2")
    job = queue.enqueue("cooperative", {"steps": 100000})
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.RUNNING, message="the job to run")
    asked = time.monotonic()
    queue.cancel_job(job.pk)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED, timeout=10, message="the cancel")
    took = time.monotonic() - asked
    row = Job.objects.get(pk=job.pk)
    assert took < 2.0, f"the cooperative handler took {took:.1f}s to stop"
    assert (row.leased_by, row.lease_token, row.lease_expires_at) == (None, None, None)
    assert row.result["stopped_at_step"] > 0 and row.history[-1]["outcome"] == "cancelled"
    wait_for(lambda: worker_agrees_with_rows(worker.pid), timeout=5, message="the busy count to agree")
    after = queue.enqueue("reverse_string", {"text": "still works"})
    wait_for(lambda: Job.objects.get(pk=after.pk).status == JobStatus.COMPLETED, message="the next job")


@pytest.mark.parametrize("job_type", ["sleep_blind", "spin"])
def test_cancel_stops_a_handler_that_ignores_it_after_the_grace_period(start_worker, job_type):
    worker = start_worker("--concurrency", "2", "--lease", "3", "--poll-interval", "0.2",
                          env={"JOBS_CANCEL_GRACE": "1"})
    job = queue.enqueue(job_type, {"seconds": 60})
    other = queue.enqueue("cooperative", {"steps": 300})  # 3 s of work in the other slot, untouched by the cancel
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.RUNNING, message="the job to run")
    asked = time.monotonic()
    queue.cancel_job(job.pk)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED, timeout=10, message="the cancel")
    took = time.monotonic() - asked
    assert 0.9 <= took < 3.0, f"stopped after {took:.1f}s, with a grace of 1s"
    row = Job.objects.get(pk=job.pk)
    assert row.lease_token is None and "grace period" in row.error
    wait_for(lambda: Job.objects.get(pk=other.pk).status == JobStatus.COMPLETED, timeout=15,
             message="the other job to finish")
    # The slot was replaced at once: two more jobs run side by side although the blind handler still runs.
    pair = queue.enqueue_many("cooperative", [{"steps": 100}] * 2)
    wait_for(lambda: Job.objects.filter(pk__in=pair, status=JobStatus.RUNNING).count() == 2, timeout=10,
             message="both slots to run a job")
    wait_for(lambda: not Job.objects.filter(status__in=ACTIVE_STATUSES).exists(), timeout=15, message="the rest")
    wait_for(lambda: worker_agrees_with_rows(worker.pid), timeout=5, message="the busy count to agree")

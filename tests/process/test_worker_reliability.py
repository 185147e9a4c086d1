"""The worker under abuse, as real processes: timeouts and cancels at random moments, a stalled
network, hostile results, handlers that never stop. Whatever happens, no job is left `running`
without a slot that runs it, every job reaches a final state, and SIGTERM ends the worker."""

import random
import signal
import threading
import time

import pytest
from django.db import connection, connections

from jobs import queue
from jobs.models import ACTIVE_STATUSES, HELD_STATUSES, Job, JobStatus, Worker
from jobs.worker import SHUTDOWN_MARGIN
from tests.conftest import database_proxy_target, proxied_database_url, wait_for
from tests.sample_handlers import EFFECTS_TABLE
from tests.tcp_proxy import BLACKHOLE, REFUSE, TcpProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

FINAL = {JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED}


def statuses(ids) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Job.objects.filter(pk__in=ids).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def wait_until_final(ids, timeout):
    wait_for(lambda: not Job.objects.filter(pk__in=ids, status__in=ACTIVE_STATUSES).exists(),
             timeout=timeout, interval=0.2, message=f"every job to finish, still {statuses(ids)}")


def stop_within_grace(worker, grace: float, code: int = 0) -> float:
    """SIGTERM `worker`; assert it exits with `code` within its grace period (and a little slack); return the seconds."""
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=grace + 15) == code, worker.output()[-3000:]
    took = time.monotonic() - started
    assert took < grace + 3, f"took {took:.1f}s to stop"
    return took


def assert_live_slots(concurrency: dict[int, int]):
    """Run as many 3-second jobs as there are slots; each worker (pid: slots) starts one per slot it claimed for."""
    ids = queue.enqueue_many("record_effect", [{"seconds": 3}] * sum(concurrency.values()))
    time.sleep(1.5)  # long enough for every slot to start one, short of any finishing
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pid, count(*) FROM {EFFECTS_TABLE} WHERE job_id = ANY(%s) GROUP BY pid", [ids])  # noqa: S608 - the test table's name; values are parameters
        started = dict(cursor.fetchall())
    worker_pids = dict(Worker.objects.filter(stopped_at__isnull=True).values_list("pk", "pid"))
    claimed: dict[int, int] = {}
    for leased_by in Job.objects.filter(pk__in=ids, status=JobStatus.RUNNING).values_list("leased_by", flat=True):
        pid = worker_pids[leased_by]
        claimed[pid] = claimed.get(pid, 0) + 1
    for pid, slots in concurrency.items():
        assert started.get(pid, 0) == min(claimed.get(pid, 0), slots), (pid, started, claimed)
    assert sum(started.values()) >= min(concurrency.values())
    wait_until_final(ids, timeout=30)
    assert statuses(ids) == {JobStatus.COMPLETED: len(ids)}


def test_thousands_of_timeouts_and_cancels_leave_no_job_running_and_every_slot_alive(start_worker, effects):
    """Time out and cancel chatty handlers at random moments in two workers; every job ends, no slot is lost."""
    rng = random.Random(20261204)
    concurrency = 6
    env = {"JOBS_MAX_ABANDONED_THREADS": "1000"}
    args = ("--concurrency", str(concurrency), "--prefetch", "4", "--lease", "3", "--poll-interval", "0.2",
            "--shutdown-timeout", "5")
    ids = []
    for _ in range(60):
        for _ in range(50):
            seconds, timeout = rng.uniform(0, 0.3), rng.uniform(0.02, 0.2)
            ids.append(queue.enqueue("chatty", {"seconds": seconds}, timeout=timeout, max_retries=0).pk)
    workers = [start_worker(*args, env=env) for _ in range(2)]

    cancelled = []
    done = threading.Event()

    def cancel_at_random():
        local = random.Random(rng.random())
        try:
            while not done.is_set():
                # Mostly running jobs (the handler is mid-line), sometimes prefetched or waiting ones.
                statuses_ = [JobStatus.RUNNING] if local.random() < 0.8 else ACTIVE_STATUSES
                running = list(Job.objects.filter(status__in=statuses_).values_list("pk", flat=True)[:50])
                if not running:
                    if not Job.objects.filter(status__in=ACTIVE_STATUSES).exists():
                        return
                    continue
                job_id = local.choice(running)
                try:
                    queue.cancel_job(job_id)
                    cancelled.append(job_id)
                except Exception:  # noqa: BLE001, S110 - it finished meanwhile
                    pass
                time.sleep(local.uniform(0.001, 0.01))
        finally:
            connections.close_all()

    canceller = threading.Thread(target=cancel_at_random)
    canceller.start()
    try:
        wait_until_final(ids, timeout=240)
    finally:
        done.set()
        canceller.join()

    counts = statuses(ids)
    rows = Job.objects.filter(pk__in=ids)
    timeouts = rows.filter(status=JobStatus.DEAD, error__startswith="Timed out after").count()
    print(f"{timeouts} timeouts, {len(cancelled)} cancels: {counts}")
    assert set(counts) <= FINAL
    assert timeouts + len(cancelled) >= 1500, (timeouts, len(cancelled))
    assert len(cancelled) >= 200
    for job_id, result in rows.filter(status=JobStatus.COMPLETED).values_list("pk", "result"):
        assert result == {"job": job_id}
    assert not Job.objects.filter(status=JobStatus.RUNNING).exists()
    for worker in workers:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        assert "Exception in thread" not in worker.output()
    assert_live_slots({w.pid: concurrency for w in workers})
    for worker in workers:
        stop_within_grace(worker, grace=5)


@pytest.mark.parametrize("mode", [REFUSE, BLACKHOLE])
def test_a_worker_cut_off_past_its_lease_gives_up_its_jobs_and_recovers(start_worker, effects, mode):
    """Stall a worker's database link past its lease while its handlers run; the jobs are rescued and finish once,
    the stalled worker gives up its running handlers when it reconnects, and keeps every slot."""
    lease = 2.0
    with TcpProxy(*database_proxy_target()) as proxy:
        url = proxied_database_url(proxy)
        stalled = start_worker("--concurrency", "4", "--lease", str(lease), "--poll-interval", "0.2",
                               "--queues", "default,stalled-only", "--shutdown-timeout", "5",
                               env={"DATABASE_URL": url, "DB_POOL_MIN_SIZE": "0"})
        # Handlers that log on every line and outlast the stall: the stalled
        # worker finds their leases gone while they still run.
        ids = [queue.enqueue("chatty", {"seconds": 8}).pk for _ in range(8)]
        # 4 running in its slots, 4 prefetched and claimed.
        wait_for(lambda: sorted(Job.objects.filter(pk__in=ids).values_list("status", flat=True))
                 == [JobStatus.CLAIMED] * 4 + [JobStatus.RUNNING] * 4, message="the stalled worker to claim all 8")
        started = set(Job.objects.filter(pk__in=ids, status=JobStatus.RUNNING).values_list("pk", flat=True))
        stalled_id = Worker.objects.get(pid=stalled.pid).pk
        proxy.cut(mode, drop=(mode == REFUSE))
        rescuer = start_worker("--concurrency", "8", "--lease", str(lease), "--poll-interval", "0.2",
                               "--shutdown-timeout", "5")
        wait_for(lambda: not Job.objects.filter(pk__in=ids, leased_by=stalled_id).exists()
                 and Job.objects.filter(pk__in=ids, status__in=HELD_STATUSES).count() == 8,
                 message="the rescuer to take over all 8")
        proxy.heal()
        late = queue.enqueue_many("reverse_string", ["one", "two", "three", "four"], queue="stalled-only")
        wait_until_final([*ids, *late], timeout=60)
        assert statuses(late) == {JobStatus.COMPLETED: 4}
        assert statuses(ids) == {JobStatus.COMPLETED: 8}
        for row in Job.objects.filter(pk__in=ids):
            # Written once, by the rescuer: a late write of the stalled worker would add a second "completed".
            # A job the stalled worker had only claimed lost no attempt.
            lost = ["lost"] if row.pk in started else []
            assert [entry["outcome"] for entry in row.history] == [*lost, "completed"]
            assert row.attempts == len(lost) + 1
            assert row.result == {"job": row.pk}
        assert not Job.objects.filter(status=JobStatus.RUNNING).exists()
        wait_for(lambda: "lease_lost" in stalled.output(), timeout=15, message="the stalled worker to notice")
        assert stalled.proc.poll() is None
        assert "Exception in thread" not in stalled.output()
        assert_live_slots({stalled.pid: 4, rescuer.pid: 8})
        for worker in (stalled, rescuer):
            stop_within_grace(worker, grace=5)


def test_sigterm_ends_a_worker_whose_database_link_hangs(start_worker):
    """End a worker on SIGTERM within its grace period even while its database connection hangs."""
    with TcpProxy(*database_proxy_target()) as proxy:
        url = proxied_database_url(proxy)
        worker = start_worker("--lease", "2", "--poll-interval", "0.2", "--shutdown-timeout", "2",
                              env={"DATABASE_URL": url})
        wait_for(lambda: Worker.objects.filter(pid=worker.pid).exists(), message="the worker to register")
        proxy.cut(BLACKHOLE, drop=False)
        time.sleep(1)
        stop_within_grace(worker, grace=2 + SHUTDOWN_MARGIN, code=1)
        assert "shutdown did not finish within its grace period" in worker.output()


def test_hostile_results_and_errors_in_one_batch_fail_nobody_else(start_worker):
    """Store NUL, lone surrogates, 5,000-deep nesting and oversized results beside ordinary jobs, and keep heartbeating."""
    kinds = {kind: queue.enqueue("hostile_output", {"kind": kind}, max_retries=0).pk
             for kind in ("nul_string", "nul_key", "nul_error", "deep", "huge")}
    ordinary = queue.enqueue_many("reverse_string", [f"job {n}" for n in range(20)])
    worker = start_worker("--concurrency", "4", "--lease", "0.9", "--poll-interval", "0.2",
                          env={"JOBS_MAX_RESULT_BYTES": "100000"})
    wait_until_final([*kinds.values(), *ordinary], timeout=30)
    row = {kind: Job.objects.get(pk=pk) for kind, pk in kinds.items()}
    assert (row["nul_string"].status, row["nul_string"].result) == (JobStatus.COMPLETED, "a\ufffdb")
    assert row["nul_key"].status == JobStatus.COMPLETED
    assert row["nul_key"].result == {"a\ufffd": ["b\ufffd", {"c": "\ufffd\ufffd"}], "fine": "😀 \\u0000"}
    assert row["nul_error"].status == JobStatus.DEAD
    assert row["nul_error"].error == "RuntimeError: a\ufffdb \ufffd"
    assert "a\ufffdb" in row["nul_error"].history[-1]["traceback"]
    assert (row["deep"].status, row["deep"].attempts) == (JobStatus.DEAD, 1)
    assert row["deep"].error.startswith("Result is not JSON: RecursionError")
    assert row["huge"].status == JobStatus.DEAD
    assert row["huge"].error == "Result is 2097154 bytes of JSON; the limit is 100000 (JOBS_MAX_RESULT_BYTES)."
    assert statuses(ordinary) == {JobStatus.COMPLETED: 20}
    beat = Worker.objects.get(pid=worker.pid).heartbeat_at
    wait_for(lambda: Worker.objects.get(pid=worker.pid).heartbeat_at > beat, message="a later heartbeat")
    after = queue.enqueue("reverse_string", "still working")
    wait_until_final([after.pk], timeout=15)
    assert Job.objects.get(pk=after.pk).result == "gnikrow llits"


def test_cancelling_running_and_prefetched_jobs_frees_their_slots(start_worker):
    """Cancel a running job and a prefetched one: the slot is replaced at once, and nothing stays `running`."""
    worker = start_worker("--concurrency", "2", "--prefetch", "1", "--lease", "1.5", "--poll-interval", "0.2")
    sleepers = [queue.enqueue("sleep", {"seconds": 25}).pk for _ in range(2)]
    wait_for(lambda: Job.objects.filter(pk__in=sleepers, status=JobStatus.RUNNING).count() == 2,
             message="both sleepers running")
    prefetched = queue.enqueue("reverse_string", "prefetched")
    wait_for(lambda: Job.objects.get(pk=prefetched.pk).status == JobStatus.CLAIMED, message="the prefetch")
    queue.cancel_job(sleepers[0])
    queue.cancel_job(prefetched.pk)
    short = queue.enqueue("reverse_string", "short")
    wait_until_final([short.pk], timeout=10)
    assert Job.objects.get(pk=short.pk).result == "trohs"
    assert list(Job.objects.filter(status=JobStatus.RUNNING).values_list("pk", flat=True)) == [sleepers[1]]
    row = Worker.objects.get(pid=worker.pid)
    wait_for(lambda: Worker.objects.get(pk=row.pk).busy == 1, message="the heartbeat to report 1 busy slot")
    queue.cancel_job(sleepers[1])
    wait_for(lambda: Worker.objects.get(pk=row.pk).busy == 0, message="the heartbeat to report 0 busy slots")
    assert not Job.objects.filter(status=JobStatus.RUNNING).exists()
    stop_within_grace(worker, grace=30)


def test_past_the_bound_of_abandoned_threads_the_worker_restarts_itself(start_worker):
    """Restart the process (same pid, new worker row) once more handlers ignore their timeout than allowed."""
    spinners = [queue.enqueue("spin", {"seconds": 30}, timeout=0.3, max_retries=0).pk for _ in range(2)]
    worker = start_worker("--concurrency", "1", "--prefetch", "0", "--lease", "1.5", "--poll-interval", "0.2",
                          env={"JOBS_MAX_ABANDONED_THREADS": "1"})
    wait_until_final(spinners, timeout=30)
    wait_for(lambda: Worker.objects.filter(pid=worker.pid).count() == 2, timeout=30, message="a second worker row")
    assert "restarting the worker process" in worker.output()
    assert worker.proc.poll() is None
    first, second = Worker.objects.filter(pid=worker.pid).order_by("started_at")
    assert first.stopped_at is not None and second.stopped_at is None
    after = queue.enqueue("reverse_string", "after the restart")
    wait_until_final([after.pk], timeout=30)
    assert Job.objects.get(pk=after.pk).status == JobStatus.COMPLETED
    stop_within_grace(worker, grace=30)

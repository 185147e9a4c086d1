"""Schedules with real processes: every schedule gets exactly one job per tick while the leader is killed with
kill -9 and another takes over, and while two schedulers are forced to run at once."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import queue
from jobs.models import Job, Leadership, Schedule, ScheduleTick, Worker
from tests.conftest import ROOT, ChildProcess, database_url_for_tests, wait_for

SCHEDULES = 50
RUN_SECONDS = 20


@pytest.mark.django_db(transaction=True)
@pytest.mark.process
def test_fifty_schedules_every_second_get_one_job_per_tick_through_a_kill_9_of_the_leader(start_worker):
    env = {"JOBS_LEADER_LEASE_SECONDS": "2"}
    workers = [start_worker("--poll-interval", "0.2", "--lease", "2", env=env) for _ in range(3)]
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 3, message="3 workers")

    def leader_pid():
        row = Leadership.objects.filter(role="maintenance", expires_at__gt=timezone.now()).first()
        return row and Worker.objects.filter(pk=row.worker_id).values_list("pid", flat=True).first()

    first = wait_for(leader_pid, message="a leader")
    # catch_up: a tick the failover made late still fires, so none may be lost.
    for n in range(SCHEDULES):
        queue.create_schedule({"name": f"every-second-{n:02d}", "interval_seconds": 1, "type": "reverse_string",
                               "payload": f"tick {n}", "misfire": "catch_up", "catch_up_limit": 100})
    starts = dict(Schedule.objects.values_list("name", "next_fire_at"))
    time.sleep(RUN_SECONDS / 2)
    by_pid = {w.pid: w for w in workers}
    by_pid[first].kill()
    killed_at = time.monotonic()
    second = wait_for(lambda: (pid := leader_pid()) not in (None, first) and pid, timeout=10, message="a new leader")
    assert second in by_pid and time.monotonic() - killed_at < 6
    time.sleep(max(0.0, RUN_SECONDS / 2 - (time.monotonic() - killed_at)))
    Schedule.objects.update(enabled=False)  # what fires from here on is recorded as paused
    # A margin for the ticks fired just before the pause, and left for the last round to record.
    last = timezone.now() - timedelta(seconds=3)

    for name, start in starts.items():
        expected = [start + timedelta(seconds=k) for k in range(int((last - start).total_seconds()) + 1)]
        recorded = list(ScheduleTick.objects.filter(schedule__name=name, tick_at__lte=last)
                        .order_by("tick_at").values_list("tick_at", "outcome"))
        assert len(expected) >= RUN_SECONDS - 4
        assert recorded == [(tick, "enqueued") for tick in expected], f"{name}: a tick lost or doubled"
    job_ids = list(ScheduleTick.objects.filter(outcome="enqueued").values_list("job_id", flat=True))
    assert len(job_ids) == len(set(job_ids)) and None not in job_ids
    assert Job.objects.filter(pk__in=job_ids).count() == len(job_ids), "each tick's job exists, once"
    assert Job.objects.count() == len(job_ids), "no job without its tick"
    for worker in workers:
        if worker.pid != first:
            worker.stop()


FORCED_SCHEDULER = """
import time
from jobs import queue
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    queue.fire_due_schedules(limit=7)
    time.sleep(0.01)
print("scheduler done")
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.process
def test_two_schedulers_forced_to_run_at_once_enqueue_each_tick_once():
    """Two processes run the scheduler's round in a loop, with no leadership between them, for 8 seconds."""
    for n in range(20):
        queue.create_schedule({"name": f"forced-{n:02d}", "interval_seconds": 1, "type": "reverse_string",
                               "payload": "f", "misfire": "catch_up"})
    starts = dict(Schedule.objects.values_list("name", "next_fire_at"))
    schedulers = [ChildProcess([str(ROOT / "manage.py"), "shell", "-c", FORCED_SCHEDULER.format(seconds=8)])
                  for _ in range(2)]
    try:
        for scheduler in schedulers:
            assert scheduler.wait(timeout=60) == 0, scheduler.output()
            assert "scheduler done" in scheduler.output()
    finally:
        for scheduler in schedulers:
            scheduler.stop()
    last = timezone.now() - timedelta(seconds=2)
    for name, start in starts.items():
        expected = [start + timedelta(seconds=k) for k in range(int((last - start).total_seconds()) + 1)]
        recorded = list(ScheduleTick.objects.filter(schedule__name=name, tick_at__lte=last)
                        .order_by("tick_at").values_list("tick_at", "outcome"))
        assert len(expected) >= 5
        assert recorded == [(tick, "enqueued") for tick in expected], name
    job_ids = list(ScheduleTick.objects.values_list("job_id", flat=True))
    assert len(job_ids) == len(set(job_ids)) == Job.objects.count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.process
def test_a_leader_killed_with_kill_9_in_the_middle_of_a_round_leaves_each_tick_to_the_next_leader_once(start_worker):
    """The leader's round is held inside its transaction, after it inserted the ticks and jobs of every due
    schedule (the previous job of a `replace` schedule is locked elsewhere, so cancelling it waits); it is
    killed there. Its ticks and jobs roll back, and the next leader fires each of them once."""
    import psycopg

    env = {"JOBS_LEADER_LEASE_SECONDS": "2"}
    workers = [start_worker("--poll-interval", "0.2", "--lease", "2", env=env) for _ in range(2)]
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 2, message="2 workers")
    for n in range(10):
        queue.create_schedule({"name": f"plain-{n}", "interval_seconds": 1, "type": "reverse_string",
                               "payload": "p", "misfire": "catch_up"})
    replacer = queue.create_schedule({"name": "replacer", "interval_seconds": 1, "type": "sleep",
                                      "payload": {"seconds": 60}, "overlap": "replace", "misfire": "catch_up"})
    starts = dict(Schedule.objects.values_list("name", "next_fire_at"))
    previous = wait_for(lambda: Schedule.objects.get(pk=replacer.pk).last_job_id, message="the replacer's first job")

    def leader():
        row = Leadership.objects.filter(role="maintenance", expires_at__gt=timezone.now()).first()
        return row and Worker.objects.filter(pk=row.worker_id).values_list("pid", flat=True).first()

    with psycopg.connect(database_url_for_tests()) as blocker:
        # Holds the job the next tick's round must cancel: that round waits, its transaction open.
        blocker.execute("SELECT id FROM jobs_job WHERE id = %s FOR UPDATE", [previous])
        with psycopg.connect(database_url_for_tests(), autocommit=True) as observer:
            def round_waiting():
                return observer.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                    ["%FOR UPDATE%"]).fetchone()

            wait_for(round_waiting, timeout=10, message="the leader's round waiting inside its transaction")
        pending = ScheduleTick.objects.filter(tick_at__gt=Schedule.objects.get(pk=replacer.pk).last_fire_at)
        assert not pending.exists(), "what the waiting round inserted is not committed"
        first = leader()
        {w.pid: w for w in workers}[first].kill()
        blocker.rollback()
    wait_for(lambda: (pid := leader()) not in (None, first) and pid, timeout=10, message="a new leader")
    time.sleep(4)
    Schedule.objects.update(enabled=False)
    last = timezone.now() - timedelta(seconds=3)
    for name, start in starts.items():
        expected = [start + timedelta(seconds=k) for k in range(int((last - start).total_seconds()) + 1)]
        recorded = list(ScheduleTick.objects.filter(schedule__name=name, tick_at__lte=last)
                        .order_by("tick_at").values_list("tick_at", "outcome", "detail"))
        assert [tick for tick, _, _ in recorded] == expected, f"{name}: a tick lost or doubled"
        if name == "replacer":  # ticks due at once after the failover: the latest replaces the others
            assert all(outcome == "enqueued" or detail.startswith("Replaced by") for _, outcome, detail in recorded)
        else:
            assert {outcome for _, outcome, _ in recorded} == {"enqueued"}, name
    job_ids = list(ScheduleTick.objects.filter(outcome="enqueued").values_list("job_id", flat=True))
    assert len(job_ids) == len(set(job_ids)) == Job.objects.count()
    for worker in workers:
        if worker.pid != first:
            worker.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.process
def test_the_command_exits_non_zero_with_a_one_line_reason_for_bad_input():
    bad = ChildProcess([str(ROOT / "manage.py"), "schedules", "add", "bad", "reverse_string", "--cron", "61 * * * *",
                        "--payload", '"x"'])
    assert bad.wait(timeout=60) == 1
    assert bad.output().strip().splitlines() == ["CommandError: cron: Invalid cron expression: Bad minute."]
    good = ChildProcess([str(ROOT / "manage.py"), "schedules", "add", "good", "reverse_string", "--every", "1h",
                         "--payload", '"x"'])
    assert good.wait(timeout=60) == 0, good.output()
    assert Schedule.objects.filter(name="good", interval_seconds=3600).exists()

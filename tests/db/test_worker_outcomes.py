"""The worker's completer and slots in-process, on the real database: what a handler returns is
made storable, a value the database refuses fails only its own job, and a slot that dies is replaced."""


import pytest

from jobs import queue
from jobs.models import Job, JobStatus
from jobs.worker import Worker, executor
from jobs.worker.completer import MAX_WRITE_ATTEMPTS
from jobs.worker.state import Outcome, Running

pytestmark = pytest.mark.django_db(transaction=True)


def worker_holding(count: int) -> tuple[Worker, list[Running]]:
    """Return a registered in-process worker that has claimed `count` reverse_string jobs, and their Running."""
    queue.enqueue_many("reverse_string", [f"job {n}" for n in range(count)])
    worker = Worker(install_signal_handlers=False)
    worker.register()
    held = []
    for job in queue.claim_jobs(worker_id=worker.worker_id, limit=count):
        running = Running(job=job, context=worker._context(job), timeout=60, started=0.0)
        worker.held[job.id] = running
        held.append(running)
    return worker, held


def test_a_result_the_database_refuses_fails_only_its_own_job_in_the_batch():
    """Write the rest of a batch when one result cannot be stored, and send that one to the DLQ with the reason."""
    worker, held = worker_holding(5)
    bad = held[2]
    for running in held:
        # Bypasses the slot, which would have made the result storable.
        result = "a\x00b" if running is bad else running.job.payload["text"][::-1]
        worker.slots.done.append(Outcome(running=running, ok=True, result=result, duration=0.01))
    assert worker.completer.write_back()
    rows = {row.pk: row for row in Job.objects.filter(pk__in=[r.job.id for r in held])}
    for running in held:
        row = rows[running.job.id]
        if running is bad:
            assert row.status == JobStatus.DEAD
            assert row.error.startswith("Result could not be stored: ")
        else:
            assert (row.status, row.result) == (JobStatus.COMPLETED, running.job.payload["text"][::-1])
    assert not worker.held and not worker.completer.unwritten


def test_an_error_the_database_refuses_is_replaced_by_the_reason():
    worker, (running,) = worker_holding(1)
    worker.slots.done.append(Outcome(running=running, ok=False, error="boom \x00", traceback="tb \x00", duration=0.01))
    worker.completer.write_back()
    row = Job.objects.get(pk=running.job.id)
    assert row.status == JobStatus.RETRYING
    assert row.error.startswith("The error could not be stored: ")


@pytest.fixture
def slot_killing_executor(monkeypatch):
    """Make a slot die outside the handler for jobs of one payload, as only a bug in the slot's loop could."""
    execute = executor.execute

    def dying(running, worker_id):
        if running.job.payload.get("text") == "kill the slot":
            raise SystemExit("the slot's own code failed")
        return execute(running, worker_id)

    monkeypatch.setattr(executor, "execute", dying)


def test_a_slot_thread_that_dies_is_replaced_and_its_job_failed(slot_killing_executor):
    doomed = queue.enqueue("reverse_string", "kill the slot", max_retries=0)
    fine = queue.enqueue_many("reverse_string", ["a", "b", "c"])
    worker = Worker(burst=True, concurrency=2, lease_seconds=0.3, poll_interval=0.1,
                               install_signal_handlers=False)
    assert worker.run() == 0
    row = Job.objects.get(pk=doomed.pk)
    assert (row.status, row.error) == (JobStatus.DEAD, "The worker's slot thread running it died.")
    assert Job.objects.filter(pk__in=fine, status=JobStatus.COMPLETED).count() == 3
    assert len(worker.slots.threads) == 2, "the dead slot was replaced"


@pytest.fixture
def refuse_updates_of():
    """Make PostgreSQL refuse every UPDATE of the given job ids, as a trigger or a constraint might."""
    from django.db import connection

    def refuse(ids):
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                CREATE OR REPLACE FUNCTION skipjack_test_refuse() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql;
                CREATE TRIGGER skipjack_test_refuse BEFORE UPDATE ON {Job._meta.db_table}
                FOR EACH ROW WHEN (OLD.id = ANY('{{{",".join(map(str, ids))}}}'::bigint[]))
                EXECUTE FUNCTION skipjack_test_refuse();
                """
            )

    yield refuse
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS skipjack_test_refuse ON {Job._meta.db_table}")
        cursor.execute("DROP FUNCTION IF EXISTS skipjack_test_refuse()")


def test_an_outcome_the_database_keeps_refusing_is_given_up_without_holding_back_the_others(refuse_updates_of):
    """Write the rest of the batch at once, try the refused one a few more rounds, then leave it to the rescue."""
    worker, held = worker_holding(4)
    stuck = held[1]
    refuse_updates_of([stuck.job.id])
    for running in held:
        worker.slots.done.append(Outcome(running=running, ok=True, result="done", duration=0.01))
    worker.completer.write_back()
    others = [r.job.id for r in held if r is not stuck]
    assert Job.objects.filter(pk__in=others, status=JobStatus.COMPLETED).count() == 3
    assert [o.running for o in worker.completer.unwritten] == [stuck]
    assert list(worker.held) == [stuck.job.id], "its lease is still renewed while it waits"
    for _ in range(MAX_WRITE_ATTEMPTS - 1):
        worker.completer.write_back()
    assert not worker.completer.unwritten and not worker.held
    assert Job.objects.get(pk=stuck.job.id).status == JobStatus.RUNNING  # until its lease runs out


def test_a_ticks_outcomes_are_written_back_in_one_statement(settings):
    """Write a tick's outcomes (a success, a retry, a dead job, a timeout) in one statement, each with its own."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    worker, (completed, retried, permanent, timed_out) = worker_holding(4)
    worker.slots.done.extend([
        Outcome(running=completed, ok=True, result="done", duration=0.01),
        Outcome(running=retried, ok=False, error="boom", traceback="tb", duration=0.01),
        Outcome(running=permanent, ok=False, error="bad input", permanent=True, duration=0.01),
        Outcome(running=timed_out, ok=False, error="Timed out after 1s", kind="timeout", duration=1.0),
    ])
    with CaptureQueriesContext(connection) as queries:
        worker.completer.write_back()
    assert [q["sql"].lstrip().split()[0] for q in queries] == ["WITH"]
    rows = {row.pk: row for row in Job.objects.filter(pk__in=[r.job.id for r in (completed, retried, permanent, timed_out)])}
    assert (rows[completed.job.id].status, rows[completed.job.id].result) == (JobStatus.COMPLETED, "done")
    assert (rows[retried.job.id].status, rows[retried.job.id].history[-1]["traceback"]) == (JobStatus.RETRYING, "tb")
    assert rows[permanent.job.id].status == JobStatus.DEAD
    assert rows[timed_out.job.id].history[-1]["outcome"] == "timeout"
    assert (worker.processed, worker.failed) == (4, 3) and not worker.held

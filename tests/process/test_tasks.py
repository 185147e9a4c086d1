"""Django tasks in real worker processes: results read from another process, retries to the DLQ, refused rows."""

import json
import sys
import textwrap

import pytest
from django.db import connection

from jobs import queue
from jobs.models import Job, JobStatus
from jobs.tasks.compat import TaskResultStatus
from tests import tasks
from tests.conftest import ROOT, ChildProcess, wait_for
from tests.factories import JobFactory
from tests.sample_handlers import EFFECTS_TABLE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

FAST = ["--poll-interval", "0.2"]
TASK_MODULES = "tests.tasks"


@pytest.fixture(autouse=True)
def _tasks(settings):
    settings.JOBS_TASK_MODULES = ["tests.tasks"]


def status(job_id):
    return Job.objects.values_list("status", flat=True).get(pk=int(job_id))


def wait_for_status(job_id, expected, timeout=30):
    return wait_for(lambda: status(job_id) == expected, timeout=timeout, message=f"job {job_id} to be {expected}")


READ_RESULTS = """
import json
from tests import tasks
out = []
for task, result_id in {pairs}:
    result = getattr(tasks, task).get_result(result_id)
    try:
        value = result.return_value
    except ValueError as exc:
        value = str(exc)
    out.append({{"id": result.id, "status": str(result.status), "value": value, "attempts": result.attempts,
                "workers": result.worker_ids, "errors": [e.exception_class.__name__ for e in result.errors],
                "enqueued_at": result.enqueued_at.isoformat(), "finished_at": result.finished_at.isoformat()}})
print("RESULTS " + json.dumps(out))
"""


def results_in_another_process(pairs):
    """Return the results of `pairs` (task name, result id) as a fresh `manage.py shell` reads them."""
    reader = ChildProcess([str(ROOT / "manage.py"), "shell", "-c", READ_RESULTS.format(pairs=repr(pairs))],
                          env={"JOBS_TASK_MODULES": TASK_MODULES})
    assert reader.wait(timeout=120) == 0, reader.output()
    [line] = [line for line in reader.output().splitlines() if line.startswith("RESULTS ")]
    return json.loads(line.removeprefix("RESULTS "))


def test_results_are_read_from_another_process(start_worker):
    """Run sync, async and context tasks in a worker process, and read each result in a third process."""
    plain = tasks.add.enqueue(2, 3)
    coroutine = tasks.async_multiply.enqueue(6, 7)
    context = tasks.attempt_number.enqueue()
    failed = tasks.permanent_failure.enqueue()
    worker = start_worker("--burst", *FAST, env={"JOBS_TASK_MODULES": TASK_MODULES})
    assert worker.wait(timeout=120) == 0, worker.output()
    read = results_in_another_process([("add", plain.id), ("async_multiply", coroutine.id),
                                       ("attempt_number", context.id), ("permanent_failure", failed.id)])
    here = [tasks.add.get_result(plain.id), tasks.async_multiply.get_result(coroutine.id),
            tasks.attempt_number.get_result(context.id), tasks.permanent_failure.get_result(failed.id)]
    assert [(r["id"], r["status"], r["value"], r["attempts"], r["errors"]) for r in read] == [
        (plain.id, "SUCCESSFUL", 5, 1, []),
        (coroutine.id, "SUCCESSFUL", 42, 1, []),
        (context.id, "SUCCESSFUL", {"attempt": 1, "id": context.id, "status": "RUNNING"}, 1, []),
        (failed.id, "FAILED", "Task failed", 1, ["PermanentError"]),
    ]
    for theirs, ours in zip(read, here, strict=True):
        assert theirs["workers"] == ours.worker_ids and len(set(theirs["workers"])) == 1
        assert (theirs["enqueued_at"], theirs["finished_at"]) == (ours.enqueued_at.isoformat(), ours.finished_at.isoformat())


def test_retries_with_backoff_reach_the_dlq_through_a_task(start_worker):
    """Retry a failing task max_retries times, with its own backoff, then leave it dead in the DLQ with every error."""
    result = tasks.failing_task.enqueue("always")
    worker = start_worker(*FAST, env={"JOBS_TASK_MODULES": TASK_MODULES})
    wait_for_status(result.id, JobStatus.DEAD, timeout=60)
    final = tasks.failing_task.get_result(result.id)
    assert (final.status, final.attempts) == (TaskResultStatus.FAILED, 3)
    assert [e.exception_class for e in final.errors] == [tasks.TaskFailure] * 3
    assert all("TaskFailure: always" in e.traceback for e in final.errors)
    job = Job.objects.get(pk=int(result.id))
    assert [h["outcome"] for h in job.history] == ["failed"] * 3
    assert list(queue.dead_jobs().values_list("pk", flat=True)) == [job.pk]
    worker.stop()


def test_a_timeout_given_to_a_task_stops_it(start_worker):
    """Stop a task past the timeout its decorator gave it; with no retries left it is dead, failed of JobTimeout."""
    result = tasks.sleeps.enqueue(30)
    worker = start_worker(*FAST, env={"JOBS_TASK_MODULES": TASK_MODULES})
    wait_for_status(result.id, JobStatus.DEAD, timeout=60)
    [error] = tasks.sleeps.get_result(result.id).errors
    assert error.exception_class.__name__ == "JobTimeout"
    assert Job.objects.get(pk=int(result.id)).error == "Timed out after 0.5s"
    worker.stop()


EPHEMERAL = '''
try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task
def kept():
    return "kept"
'''


def test_a_task_whose_function_or_module_is_gone_goes_to_the_dlq_with_a_clear_error(start_worker, tmp_path, settings):
    """Fail for good, without running, a task removed after its enqueue, and one whose module left JOBS_TASK_MODULES."""
    module = tmp_path / "skipjack_ephemeral_tasks.py"
    module.write_text(EPHEMERAL + textwrap.dedent('''

        @task
        def doomed():
            return "should not run"
    '''))
    sys.path.insert(0, str(tmp_path))
    try:
        settings.JOBS_TASK_MODULES = ["tests.tasks", "skipjack_ephemeral_tasks"]
        import skipjack_ephemeral_tasks

        removed = skipjack_ephemeral_tasks.doomed.enqueue()
        left = skipjack_ephemeral_tasks.kept.enqueue()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("skipjack_ephemeral_tasks", None)
    module.write_text(EPHEMERAL)  # the deploy that removed doomed()
    env = {"PYTHONPATH": str(tmp_path), "JOBS_TASK_MODULES": f"{TASK_MODULES},skipjack_ephemeral_tasks"}
    worker = start_worker("--burst", *FAST, env=env)
    assert worker.wait(timeout=120) == 0, worker.output()
    job = Job.objects.get(pk=int(removed.id))
    assert (job.status, job.attempts) == (JobStatus.DEAD, 1)
    assert job.error == ("TaskNotRunnable: Task 'skipjack_ephemeral_tasks.doomed' cannot run: module "
                         "'skipjack_ephemeral_tasks' has no 'doomed' (removed or renamed since the task was enqueued?).")
    assert Job.objects.get(pk=int(left.id)).result == "kept"
    # The next deploy takes the module out of the settings too: its tasks are refused the same way.
    again = JobFactory(type="skipjack_ephemeral_tasks.kept", payload={"args": [], "kwargs": {}})
    worker = start_worker("--burst", *FAST, env={"PYTHONPATH": str(tmp_path), "JOBS_TASK_MODULES": TASK_MODULES})
    assert worker.wait(timeout=120) == 0, worker.output()
    job = Job.objects.get(pk=again.pk)
    assert job.status == JobStatus.DEAD
    assert "nor a task of a module in JOBS_TASK_MODULES; it was not run" in job.error


def test_a_row_naming_a_callable_that_is_no_task_is_refused_and_never_run(start_worker, tmp_path, effects):
    """Refuse rows naming a plain function, another name for one, or anything outside JOBS_TASK_MODULES; none runs."""
    targets = {
        "tests.tasks.write_side_effect": "is not a task but a function",
        "tests.tasks.not_a_task": "is not a task but a function",
        "tests.tasks.TaskFailure": "is not a task but a type",
        "pathlib.Path.write_text": "nor a task of a module in JOBS_TASK_MODULES",
        "tests.sample_handlers.record_effect": "nor a task of a module in JOBS_TASK_MODULES",
    }
    files = {path: tmp_path / f"ran-{n}" for n, path in enumerate(targets)}
    jobs = {path: JobFactory(type=path, payload={"args": [str(files[path])], "kwargs": {}}) for path in targets}
    after = tasks.record.enqueue("7")
    worker = start_worker("--burst", *FAST, env={"JOBS_TASK_MODULES": TASK_MODULES})
    assert worker.wait(timeout=120) == 0, worker.output()
    for path, reason in targets.items():
        job = Job.objects.get(pk=jobs[path].pk)
        assert job.status == JobStatus.DEAD, path
        assert job.error.startswith("TaskNotRunnable: ") and reason in job.error, job.error
        assert not files[path].exists(), f"{path} ran"
    # The worker went on with the next task, which ran once.
    assert tasks.record.get_result(after.id).return_value == "7"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT job_id FROM {EFFECTS_TABLE}")  # noqa: S608 - the test table's name
        assert cursor.fetchall() == [(7,)]


def test_tasks_of_mixed_priorities_run_highest_first(start_worker):
    """Run 100 tasks of mixed priorities, enqueued in random order, on one worker thread: highest first, then oldest."""
    import random

    rng = random.Random(16)
    priorities = [rng.choice([-100, -50, -3, 0, 0, 7, 50, 99, 100]) for _ in range(100)]
    results = [tasks.add.using(priority=p).enqueue(n, 0) for n, p in enumerate(priorities)]
    worker = start_worker("--burst", "--concurrency", "1", "--prefetch", "1", *FAST,
                          env={"JOBS_TASK_MODULES": TASK_MODULES})
    assert worker.wait(timeout=120) == 0, worker.output()
    jobs = Job.objects.filter(pk__in=[int(r.id) for r in results]).order_by("started_at", "id")
    assert all(job.status == JobStatus.COMPLETED for job in jobs)
    ran = [(job.priority, job.pk) for job in jobs]
    assert ran == sorted(ran, key=lambda run: (-run[0], run[1]))
    assert (ran[0][0], ran[-1][0], len(set(priorities))) == (100, -100, 8)

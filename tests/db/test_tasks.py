"""The Django Tasks backend's contract, field by field, against the real jobs table (jobs.tasks)."""

import uuid
from datetime import datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core import checks
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from jobs.checks import check_task_settings
from jobs.errors import JobCancelled, JobExpired, JobTimeout, LeaseExpired, PayloadError, PermanentError
from jobs.models import Job, JobStatus, Priority
from jobs.tasks import SkipjackBackend
from jobs.tasks.compat import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from jobs.worker import Worker
from tests import tasks
from tests.factories import JobFactory

TASKS = {"default": {"BACKEND": "jobs.tasks.SkipjackBackend", "QUEUES": ["default", "emails"]}}


@pytest.fixture(autouse=True)
def _tasks(settings):
    settings.JOBS_TASK_MODULES = ["tests.tasks"]
    settings.TASKS = TASKS


def run_worker():
    Worker(burst=True, concurrency=2, poll_interval=0.1, install_signal_handlers=False).run()


def task_job(status, **fields):
    """Return a job of tests.tasks.add(1, 2) in `status`, as the queue would have left it."""
    return JobFactory(type="tests.tasks.add", payload={"args": [1, 2], "kwargs": {}}, status=status, **fields)


def failed_attempt(n, exception="tests.tasks.TaskFailure", outcome="failed", worker=None):
    return {"attempt": n, "worker": str(worker or uuid.uuid4()), "started_at": (timezone.now() - timedelta(seconds=60 - n)).isoformat(),
            "finished_at": timezone.now().isoformat(), "outcome": outcome, "error": f"TaskFailure: try {n}",
            "traceback": f"Traceback ...\ntests.tasks.TaskFailure: try {n}\n", "exception": exception}


# enqueue


@pytest.mark.django_db
def test_enqueue_stores_a_job_named_by_the_tasks_module_path_and_returns_a_ready_result():
    """Store one job whose type is the module path and whose payload the arguments; every field of READY."""
    result = tasks.add.enqueue(2, b=3)
    job = Job.objects.get(pk=int(result.id))
    assert (job.type, job.payload, job.status, job.queue) == ("tests.tasks.add", {"args": [2], "kwargs": {"b": 3}},
                                                             JobStatus.QUEUED, "default")
    assert result.status == TaskResultStatus.READY and not result.is_finished
    assert result.task.func is tasks.add.func and result.backend == "default"
    assert (result.args, result.kwargs) == ([2], {"b": 3})
    assert result.enqueued_at == job.created_at
    assert (result.started_at, result.last_attempted_at, result.finished_at) == (None, None, None)
    assert (result.errors, result.worker_ids, result.attempts) == ([], [], 0)
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value
    stored = tasks.add.get_result(result.id)
    assert (stored.id, stored.status, stored.args, stored.kwargs, stored.enqueued_at) == (
        result.id, TaskResultStatus.READY, [2], {"b": 3}, job.created_at)


@pytest.mark.django_db
def test_arguments_are_stored_as_json_and_anything_else_is_refused():
    """Normalize tuples to lists as Django does; refuse what JSON cannot hold, storing nothing."""
    result = tasks.echo.enqueue((1, 2), key=("a", "b"))
    assert Job.objects.get(pk=int(result.id)).payload == {"args": [[1, 2]], "kwargs": {"key": ["a", "b"]}}
    with pytest.raises(TypeError):
        tasks.echo.enqueue(object())
    with pytest.raises(PayloadError):
        tasks.echo.enqueue("x" * 70_000)  # over JOBS_MAX_PAYLOAD_BYTES
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_enqueue_inside_a_transaction_that_rolls_back_leaves_no_task():
    """Join the caller's transaction: after a rollback the task never existed, and no task_enqueued was sent."""
    sent = []
    task_enqueued.connect(lambda sender, task_result, **kw: sent.append(task_result.id), weak=False,
                          dispatch_uid="test-rollback")
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            result = tasks.add.enqueue(1, 1)
            assert Job.objects.filter(pk=int(result.id)).exists()
            raise RuntimeError("roll back")
    finally:
        task_enqueued.disconnect(dispatch_uid="test-rollback")
    assert not Job.objects.exists()
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result.id)
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_task_enqueued_is_sent_once_the_enqueue_commits():
    """Send task_enqueued with the READY result, after commit and not before; not for a task a unique key returned."""
    sent = []
    task_enqueued.connect(lambda sender, task_result, **kw: sent.append((sender, task_result)), weak=False,
                          dispatch_uid="test-commit")
    try:
        with transaction.atomic():
            result = tasks.add.using(unique_key="once").enqueue(1, 1)
            assert sent == []
        assert tasks.add.using(unique_key="once").enqueue(1, 1).id == result.id
    finally:
        task_enqueued.disconnect(dispatch_uid="test-commit")
    [(sender, sent_result)] = sent
    assert sender is SkipjackBackend
    assert (sent_result.id, sent_result.status) == (result.id, TaskResultStatus.READY)


@pytest.mark.django_db
def test_aenqueue_and_aget_result():
    """Enqueue and read back through the async API."""
    result = async_to_sync(tasks.add.aenqueue)(4, 4)
    stored = async_to_sync(tasks.add.aget_result)(result.id)
    assert (stored.id, stored.status, stored.args) == (result.id, TaskResultStatus.READY, [4, 4])


# run_after


@pytest.mark.django_db
def test_run_after_defers_the_task_to_an_aware_datetime():
    """Store a deferred task as scheduled for run_after, READY until then, with run_after on its task."""
    when = timezone.now() + timedelta(hours=1)
    result = tasks.add.using(run_after=when).enqueue(1, 2)
    job = Job.objects.get(pk=int(result.id))
    assert (job.status, job.run_at) == (JobStatus.SCHEDULED, when)
    stored = tasks.add.get_result(result.id)
    assert (stored.status, stored.task.run_after) == (TaskResultStatus.READY, when)


def test_a_naive_run_after_is_refused():
    """Refuse a run_after without a time zone, as Django's API does with USE_TZ."""
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=datetime(2030, 1, 1))  # noqa: DTZ001 - the naive datetime under test


@pytest.mark.django_db(transaction=True)
def test_a_deferred_task_runs_once_run_after_has_passed():
    """Leave a task deferred a moment alone, then run it."""
    result = tasks.add.using(run_after=timezone.now() + timedelta(seconds=0.5)).enqueue(20, 22)
    run_worker()
    assert tasks.add.get_result(result.id).status == TaskResultStatus.READY
    Job.objects.filter(pk=int(result.id)).update(run_at=timezone.now())
    run_worker()
    assert tasks.add.get_result(result.id).return_value == 42


# results, in every status


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "expected"), [
    (JobStatus.QUEUED, TaskResultStatus.READY), (JobStatus.SCHEDULED, TaskResultStatus.READY),
    (JobStatus.RETRYING, TaskResultStatus.READY), (JobStatus.CLAIMED, TaskResultStatus.READY),
    (JobStatus.RUNNING, TaskResultStatus.RUNNING), (JobStatus.COMPLETED, TaskResultStatus.SUCCESSFUL),
    (JobStatus.DEAD, TaskResultStatus.FAILED), (JobStatus.CANCELLED, TaskResultStatus.FAILED),
    (JobStatus.EXPIRED, TaskResultStatus.FAILED),
])
def test_every_field_of_the_result_in_every_status(status, expected):
    """Map each job status to its TaskResult status, with every field as the row and its history give it."""
    earlier = uuid.uuid4()
    history = [failed_attempt(1, worker=earlier)] if status in (JobStatus.RETRYING, JobStatus.RUNNING,
                                                                JobStatus.COMPLETED, JobStatus.DEAD) else []
    started = timezone.now() - timedelta(seconds=5) if status in (JobStatus.RUNNING, JobStatus.COMPLETED,
                                                                  JobStatus.DEAD) else None
    job = task_job(status, history=history, started_at=started, attempts=len(history) + (started is not None),
                   result=3 if status == JobStatus.COMPLETED else None)
    if status == JobStatus.DEAD:  # its last attempt failed too
        job.history = [*history, failed_attempt(2)]
        job.save(update_fields=["history"])
    result = tasks.add.get_result(str(job.pk))
    assert result.status == expected
    assert (result.id, result.args, result.kwargs, result.backend) == (str(job.pk), [1, 2], {}, "default")
    assert result.enqueued_at == job.created_at
    assert result.task.queue_name == "default"
    finished = status in (JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED)
    assert result.is_finished is finished
    assert result.finished_at == (job.finished_at if finished else None)
    # One worker per attempt, the running one included, so `attempts` counts them all.
    expected_workers = [entry["worker"] for entry in job.history]
    if status == JobStatus.RUNNING:
        expected_workers.append(str(job.leased_by))
    assert result.worker_ids == expected_workers
    assert result.attempts == len(expected_workers)
    starts = [datetime.fromisoformat(entry["started_at"]) for entry in job.history] + ([started] if started else [])
    assert result.started_at == (min(starts) if starts else None)
    assert result.last_attempted_at == (max(starts) if starts else None)
    if status == JobStatus.COMPLETED:
        assert result.return_value == 3
    elif finished:
        with pytest.raises(ValueError, match="failed"):
            _ = result.return_value
    else:
        with pytest.raises(ValueError, match="not finished"):
            _ = result.return_value
    # One error per failed attempt, with its traceback; a task that ended without one says why.
    attempt_errors = [(e["exception"], e["traceback"]) for e in job.history]
    assert [(e.exception_class_path, e.traceback) for e in result.errors][:len(attempt_errors)] == attempt_errors
    end = {JobStatus.CANCELLED: JobCancelled, JobStatus.EXPIRED: JobExpired}.get(status)
    if end is not None:
        assert len(result.errors) == 1 and result.errors[0].exception_class is end
    else:
        assert len(result.errors) == len(attempt_errors)
    for error in result.errors:
        assert issubclass(error.exception_class, BaseException)


@pytest.mark.django_db
@pytest.mark.parametrize(("outcome", "exception"), [
    ("timeout", JobTimeout), ("lost", LeaseExpired), ("cancelled", JobCancelled), ("failed", Exception),
])
def test_an_attempt_whose_history_names_no_exception_gets_one_that_imports(outcome, exception):
    """Give attempts ended by the worker (a timeout, a rescue, a cancel) or recorded before classes were an exception class."""
    entry = {**failed_attempt(1, outcome=outcome)}
    del entry["exception"]
    job = task_job(JobStatus.DEAD, history=[entry])
    [error] = tasks.add.get_result(str(job.pk)).errors
    assert error.exception_class is exception
    assert error.traceback == entry["traceback"]


@pytest.mark.django_db
def test_a_dead_job_without_attempts_fails_with_its_error():
    """Report a task that went to the DLQ without an attempt recorded with its error, as a PermanentError."""
    job = task_job(JobStatus.DEAD, error="Invalid payload")
    [error] = tasks.add.get_result(str(job.pk)).errors
    assert error.exception_class is PermanentError and "Invalid payload" in error.traceback


@pytest.mark.django_db
def test_snoozes_are_neither_errors_nor_attempts():
    """Leave snoozed attempts out of errors and worker_ids: a snooze gives its attempt back."""
    snoozed = {**failed_attempt(1, outcome="snoozed"), "exception": ""}
    job = task_job(JobStatus.QUEUED, history=[snoozed])
    result = tasks.add.get_result(str(job.pk))
    assert (result.errors, result.worker_ids) == ([], [])


# unknown ids


@pytest.mark.django_db
@pytest.mark.parametrize("result_id", ["", "abc", "0", "-1", "1.5", " 1", "1 ", "\u0661", "+1", str(2**63), "9" * 30,
                                       "999999"])
def test_unknown_and_malformed_ids_do_not_exist(result_id):
    """Raise TaskResultDoesNotExist for an id that is no job's, sync and async."""
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result_id)
    with pytest.raises(TaskResultDoesNotExist):
        async_to_sync(tasks.add.aget_result)(result_id)


@pytest.mark.django_db
def test_a_job_that_is_no_task_has_no_result():
    """Raise TaskResultDoesNotExist for a job of a registered type, and for a row naming a task no worker may run."""
    handler_job = JobFactory(type="reverse_string")
    elsewhere = JobFactory(type="os.system", payload={"args": ["true"], "kwargs": {}})
    for job in (handler_job, elsewhere):
        with pytest.raises(TaskResultDoesNotExist):
            task_backends["default"].get_result(str(job.pk))


# queues and options


@pytest.mark.django_db
def test_queue_names_are_validated_against_queues():
    """Accept a queue of QUEUES, refuse any other, and refuse QUEUES a job cannot be stored in."""
    result = tasks.add.using(queue_name="emails").enqueue(1, 1)
    assert Job.objects.get(pk=int(result.id)).queue == "emails"
    with pytest.raises(InvalidTask, match="Queue 'reports' is not valid"):
        tasks.add.using(queue_name="reports")
    with override_settings(TASKS={"default": {"BACKEND": "jobs.tasks.SkipjackBackend", "QUEUES": ["bad name"]}}):
        with pytest.raises(InvalidTaskBackend, match="QUEUES"):
            task_backends["default"]


@pytest.mark.django_db
def test_a_task_of_a_module_outside_jobs_task_modules_is_refused(settings):
    """Refuse to enqueue a task no worker would run, storing nothing."""
    settings.JOBS_TASK_MODULES = ["myapp.tasks"]
    with pytest.raises(InvalidTask, match="JOBS_TASK_MODULES"):
        tasks.add.enqueue(1, 1)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_options_come_from_the_enqueue_then_the_task_then_options():
    """Store each option as .using() gives it, else as the decorator did, else as the backend's OPTIONS do."""
    with override_settings(TASKS={"default": {**TASKS["default"], "OPTIONS": {"max_retries": 7, "timeout": 30, "ttl": 600}}}):
        own = Job.objects.get(pk=int(tasks.failing_task.enqueue().id))
        assert (own.max_retries, own.timeout) == (2, 30)
        assert own.expires_at is not None and own.expires_at - own.created_at == pytest.approx(timedelta(seconds=600), abs=timedelta(seconds=1))
        defaults = Job.objects.get(pk=int(tasks.add.enqueue(1, 1).id))
        assert (defaults.max_retries, defaults.timeout) == (7, 30)
        given = Job.objects.get(pk=int(tasks.failing_task.using(max_retries=0, timeout=5).enqueue().id))
        assert (given.max_retries, given.timeout) == (0, 5)


@pytest.mark.django_db
def test_a_unique_key_returns_the_unfinished_task_with_that_key():
    """Return the result of the unfinished task with the same unique key instead of storing another."""
    first = tasks.add.using(unique_key="sum-1").enqueue(1, 1)
    again = tasks.add.using(unique_key="sum-1").enqueue(5, 5)
    assert again.id == first.id and again.args == [1, 1]
    assert Job.objects.count() == 1
    Job.objects.filter(pk=int(first.id)).update(status=JobStatus.COMPLETED, finished_at=timezone.now())
    assert tasks.add.using(unique_key="sum-1").enqueue(2, 2).id != first.id


@pytest.mark.django_db
def test_a_concurrency_key_from_the_arguments_puts_the_task_under_flow_control():
    """Give the job the key its task's function makes of the arguments, and the key's limit."""
    keyed = tasks.add.using(concurrency_key=lambda a, b: f"tenant:{a}", key_concurrency=2)
    job = Job.objects.get(pk=int(keyed.enqueue(42, 1).id))
    assert (job.concurrency_key, job.key_limit) == ("tenant:42", 2)


@pytest.mark.parametrize(("options", "message"), [
    ({"max_retries": -1}, "max_retries"), ({"max_retries": 101}, "max_retries"), ({"timeout": 0}, "timeout"),
    ({"ttl": float("inf")}, "ttl"), ({"unique_key": ""}, "unique_key"), ({"unique_key": "a\x00"}, "NUL"),
    ({"concurrency_key": "no spaces"}, "Use 1 to 200"), ({"key_concurrency": 0}, "key_concurrency"),
])
def test_bad_options_are_refused(options, message):
    """Refuse a task whose options the queue could not store, naming the option."""
    with pytest.raises(InvalidTask, match=message):
        tasks.add.using(**options)


def test_using_refuses_options_it_does_not_know():
    """Refuse .using() of an option that is not an enqueue's, such as the backoff, which is the task's."""
    with pytest.raises(TypeError, match="backoff_base"):
        tasks.add.using(backoff_base=1)


def test_a_priority_outside_django_range_is_refused():
    """Refuse priorities outside -100..100, as Django's API does."""
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=101)


def test_options_of_the_backend_are_checked(settings):
    """Refuse unknown or bad OPTIONS when the backend loads, and say so in the system check."""
    for options, message in (({"retries": 3}, "unknown options 'retries'"), ({"timeout": -1}, "timeout")):
        settings.TASKS = {"default": {"BACKEND": "jobs.tasks.SkipjackBackend", "OPTIONS": options}}
        with pytest.raises(InvalidTaskBackend, match=message):
            task_backends["default"]
        # The backport's own check loads every backend, and fails on this one; ours says why.
        [error] = check_task_settings(None)
        assert error.id == "jobs.E002" and message in error.msg


def test_the_system_check_validates_the_tasks_of_jobs_task_modules(settings):
    """Report a task of JOBS_TASK_MODULES that its backend no longer accepts (a queue left out of QUEUES)."""
    assert [m for m in checks.run_checks() if m.id.startswith("jobs.")] == []
    settings.TASKS = {"default": {"BACKEND": "jobs.tasks.SkipjackBackend", "QUEUES": ["emails"]}}
    errors = [m for m in check_task_settings(None) if m.id == "jobs.E003"]
    assert "tests.tasks.add" in " ".join(e.msg for e in errors) and "Queue 'default' is not valid" in errors[0].msg


def test_all_four_capability_flags_are_true():
    """Claim every capability of the API; the tests here and in tests/process show each honoured."""
    backend = task_backends["default"]
    assert (backend.supports_defer, backend.supports_async_task, backend.supports_get_result,
            backend.supports_priority) == (True, True, True, True)


@pytest.mark.django_db
def test_a_tasks_priority_is_its_jobs_priority():
    """Store a task's priority as it is, on the jobs' own scale, and read it back so."""
    for priority in (100, 50, 1, 0, -5, -100):
        result = tasks.add.using(priority=priority).enqueue(1, 1)
        assert Job.objects.get(pk=int(result.id)).priority == priority
        assert tasks.add.get_result(result.id).task.priority == priority
    assert Job.objects.get(pk=int(tasks.echo.enqueue().id)).priority == 10, "the decorator's"
    assert Priority.NORMAL == 0, "Django's default priority is normal"


# running in the worker


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_sync_async_and_context_tasks():
    """Run a plain task, a coroutine task and one that takes its context, and store what each returned."""
    plain = tasks.add.enqueue(2, 3)
    coroutine = tasks.async_multiply.enqueue(6, 7)
    context = tasks.attempt_number.enqueue()
    run_worker()
    assert tasks.add.get_result(plain.id).return_value == 5
    assert tasks.async_multiply.get_result(coroutine.id).return_value == 42
    assert tasks.attempt_number.get_result(context.id).return_value == {
        "attempt": 1, "id": context.id, "status": TaskResultStatus.RUNNING}
    done = tasks.add.get_result(plain.id)
    assert done.status == TaskResultStatus.SUCCESSFUL and done.attempts == 1
    assert done.started_at is not None and done.started_at == done.last_attempted_at <= done.finished_at


@pytest.mark.django_db(transaction=True)
def test_the_context_counts_every_attempt():
    """Give a retried task the attempt number it is on: 3 after two failures."""
    result = tasks.attempt_number.using(max_retries=3).enqueue(fail_until=3)
    for _ in range(3):
        run_worker()
        Job.objects.filter(pk=int(result.id), status=JobStatus.RETRYING).update(run_at=timezone.now())
    final = tasks.attempt_number.get_result(result.id)
    assert final.return_value["attempt"] == 3 and final.attempts == 3
    assert [e.exception_class for e in final.errors] == [tasks.TaskFailure, tasks.TaskFailure]
    assert "attempt 2 fails on purpose" in final.errors[1].traceback


@pytest.mark.django_db(transaction=True)
def test_task_started_and_task_finished_carry_the_stored_result():
    """Send task_started before the task runs and task_finished once its outcome is stored, with the result as stored."""
    seen = []

    def started(sender, task_result, **kwargs):
        seen.append(("started", sender, task_result.id, task_result.status, task_result.attempts,
                     Job.objects.get(pk=int(task_result.id)).status))

    def finished(sender, task_result, **kwargs):
        seen.append(("finished", sender, task_result.id, task_result.status, task_result.attempts,
                     Job.objects.get(pk=int(task_result.id)).status, task_result.return_value))

    task_started.connect(started, dispatch_uid="test-started")
    task_finished.connect(finished, dispatch_uid="test-finished")
    try:
        result = tasks.add.enqueue(1, 2)
        run_worker()
    finally:
        task_started.disconnect(dispatch_uid="test-started")
        task_finished.disconnect(dispatch_uid="test-finished")
    assert seen[0][:5] == ("started", SkipjackBackend, result.id, TaskResultStatus.RUNNING, 1)
    assert seen[0][5] in (JobStatus.RUNNING, JobStatus.CLAIMED)
    assert seen[1] == ("finished", SkipjackBackend, result.id, TaskResultStatus.SUCCESSFUL, 1, JobStatus.COMPLETED, 3)


@pytest.mark.django_db(transaction=True)
def test_task_finished_is_sent_for_a_failed_task_and_not_for_a_retried_attempt():
    """Send task_finished only when the task is finished: not for an attempt that will be retried."""
    seen = []
    task_finished.connect(lambda sender, task_result, **kw: seen.append((task_result.status, len(task_result.errors))),
                          weak=False, dispatch_uid="test-failed")
    try:
        retried = tasks.failing_task.enqueue()
        dead = tasks.permanent_failure.enqueue()
        run_worker()
    finally:
        task_finished.disconnect(dispatch_uid="test-failed")
    assert tasks.failing_task.get_result(retried.id).status == TaskResultStatus.READY
    assert seen == [(TaskResultStatus.FAILED, 1)]
    [error] = tasks.permanent_failure.get_result(dead.id).errors
    assert error.exception_class is PermanentError and "no point retrying" in error.traceback


# tasks on every surface, like any job


@pytest.mark.django_db(transaction=True)
def test_tasks_show_on_the_api_dashboard_admin_dlq_and_metrics_by_their_task_name(settings):
    """List a completed and a dead task by their module path everywhere jobs are shown, and requeue the dead one."""
    from django.core.cache import cache
    from django.test import Client
    from django.urls import reverse

    from tests.db.test_api import client_for
    from tests.db.test_metrics import scrape, value
    from tests.factories import UserFactory

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.METRICS_CACHE_SECONDS = 0
    cache.clear()
    done = tasks.add.enqueue(1, 2)
    dead = tasks.permanent_failure.enqueue()
    run_worker()
    staff = UserFactory(username="operator", is_staff=True, is_superuser=True)
    api = client_for(staff)
    listed = api.get("/api/jobs/", {"type": "tests.tasks.add"}).json()["results"]
    assert [(j["id"], j["type"], j["status"]) for j in listed] == [(int(done.id), "tests.tasks.add", "completed")]
    detail = api.get(f"/api/jobs/{dead.id}/").json()
    assert (detail["type"], detail["status"]) == ("tests.tasks.permanent_failure", "dead")
    assert detail["history"][0]["outcome"] == "failed"
    dlq = api.get("/api/dlq/").json()["results"]
    assert [(j["id"], j["type"]) for j in dlq] == [(int(dead.id), "tests.tasks.permanent_failure")]
    assert "no point retrying" in dlq[0]["error"]
    page = Client()
    page.force_login(staff)
    jobs_page = page.get(reverse("dashboard:jobs")).content.decode()
    assert "tests.tasks.add" in jobs_page and "tests.tasks.permanent_failure" in jobs_page
    assert "tests.tasks.permanent_failure" in page.get(reverse("dashboard:dlq")).content.decode()
    assert "tests.tasks.add" in page.get(reverse("dashboard:job-detail", args=[int(done.id)])).content.decode()
    changelist = page.get(reverse("admin:jobs_job_changelist"), {"type": "tests.tasks.add"})
    assert changelist.status_code == 200
    assert [job.pk for job in changelist.context["cl"].result_list] == [int(done.id)]
    assert "?type=tests.tasks.async_multiply" in changelist.content.decode(), "the type filter offers every task"
    samples = scrape()
    assert value(samples, "skipjack_jobs_enqueued_total", type="tests.tasks.add", queue="default") == 1
    assert value(samples, "skipjack_jobs_completed_total", type="tests.tasks.add", queue="default") == 1
    assert value(samples, "skipjack_jobs_dead_total", type="tests.tasks.permanent_failure", queue="default") == 1
    # Requeued from the DLQ, it runs again as the same task result.
    assert api.post("/api/dlq/requeue/", {"job_ids": [int(dead.id)]}, format="json").json()["requeued"] == 1
    assert tasks.permanent_failure.get_result(dead.id).status == TaskResultStatus.READY
    run_worker()
    again = tasks.permanent_failure.get_result(dead.id)
    assert (again.status, again.attempts, len(again.errors)) == (TaskResultStatus.FAILED, 2, 2)


def test_tasks_cannot_be_submitted_through_the_api(db):
    """Refuse a task's module path as a job type at POST /api/jobs/: only code enqueues tasks."""
    from tests.db.test_api import client_for
    from tests.factories import UserFactory

    staff = UserFactory(username="operator", is_staff=True)
    response = client_for(staff).post("/api/jobs/", {"type": "tests.tasks.add", "payload": {"args": [1, 2], "kwargs": {}}},
                                      format="json")
    assert response.status_code == 400 and "type" in response.json()
    assert not Job.objects.exists()


def test_skipjacks_decorator_hands_the_options_to_the_task_class_on_any_django():
    """Build a SkipjackTask with our options through jobs.tasks.task, as the backport's own decorator does."""
    from jobs.tasks import SkipjackTask, task

    built = task(max_retries=4, backoff_base=2, queue_name="emails")(tasks.add.func)
    assert isinstance(built, SkipjackTask)
    assert (built.max_retries, built.backoff_base, built.queue_name, built.module_path) == (4, 2, "emails", "tests.tasks.add")
    assert isinstance(tasks.failing_task, SkipjackTask) and tasks.failing_task.max_retries == 2

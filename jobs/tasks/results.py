"""A task's result is its job: TaskResult fields as the job's row and its attempt history give them.

    queued, scheduled, retrying, claimed -> READY (claimed: held for a slot, not started)
    running                              -> RUNNING
    completed                            -> SUCCESSFUL
    dead, cancelled, expired             -> FAILED

`errors` holds one TaskError per failed attempt, from its history entry
(its exception class and traceback), and a FAILED task whose end was no
attempt of its own (cancelled while it waited, expired) gets one more that
says so. `worker_ids` has one worker per attempt, the one running now
included, so `attempts` counts them all.
"""

import copy
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from jobs.errors import JobCancelled, JobExpired, JobTimeout, LeaseExpired, PermanentError, WorkerShutdown
from jobs.models import FINISHED_STATUSES, Job, JobStatus
from jobs.tasks.compat import (
    DEFAULT_TASK_BACKEND_ALIAS,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from jobs.tasks.priorities import task_priority

STATUSES = {
    JobStatus.QUEUED: TaskResultStatus.READY,
    JobStatus.SCHEDULED: TaskResultStatus.READY,
    JobStatus.RETRYING: TaskResultStatus.READY,
    JobStatus.CLAIMED: TaskResultStatus.READY,
    JobStatus.RUNNING: TaskResultStatus.RUNNING,
    JobStatus.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobStatus.DEAD: TaskResultStatus.FAILED,
    JobStatus.CANCELLED: TaskResultStatus.FAILED,
    JobStatus.EXPIRED: TaskResultStatus.FAILED,
}
# Attempts that end without a failure: their history entries are no errors.
NOT_FAILED = ("completed", "snoozed")
# The exception of a failed attempt whose history entry names none (written
# before entries named one, or ended by the worker rather than by raising).
OUTCOME_EXCEPTIONS: dict[str, type[BaseException]] = {
    "timeout": JobTimeout, "cancelled": JobCancelled, "interrupted": WorkerShutdown, "lost": LeaseExpired,
}


def class_path(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _moment(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


def attempt_errors(history: list) -> list[TaskError]:
    """Return one TaskError per failed attempt of `history`, oldest first."""
    errors = []
    for entry in history:
        if not isinstance(entry, dict) or entry.get("outcome") in NOT_FAILED:
            continue
        path = entry.get("exception") or class_path(OUTCOME_EXCEPTIONS.get(entry.get("outcome", ""), Exception))
        errors.append(TaskError(exception_class_path=path,
                                traceback=entry.get("traceback") or entry.get("error") or ""))
    return errors


def _end_error(job: Job, history: list) -> TaskError | None:
    """Return the error of a failed task's end when no attempt of its history was that end, else None."""
    last = history[-1].get("outcome") if history and isinstance(history[-1], dict) else None
    cls: type[BaseException]
    if job.status == JobStatus.EXPIRED:
        cls, message = JobExpired, job.error or "Expired before it could start."
    elif job.status == JobStatus.CANCELLED and last != "cancelled":
        cls, message = JobCancelled, job.error or "Cancelled before it ran."
    elif job.status == JobStatus.DEAD and (last is None or last in NOT_FAILED):
        cls, message = PermanentError, job.error or "Failed."
    else:
        return None
    return TaskError(exception_class_path=class_path(cls), traceback=f"{class_path(cls)}: {message}\n")


def worker_ids(job: Job, history: list) -> list[str]:
    """Return the worker of each attempt of `job`, the one running now last."""
    workers = [str(entry.get("worker") or "") for entry in history
               if isinstance(entry, dict) and entry.get("outcome") != "snoozed"]
    if job.status == JobStatus.RUNNING:
        workers.append(str(job.leased_by or ""))
    return workers


def arguments(payload: Any) -> tuple[list, dict]:
    """Return the args and kwargs a task job's payload holds (none, for a payload that is not a task's)."""
    if not isinstance(payload, dict):
        return [], {}
    args, kwargs = payload.get("args"), payload.get("kwargs")
    return (args if isinstance(args, list) else []), (kwargs if isinstance(kwargs, dict) else {})


def task_of(job: Job) -> Task:
    """Return the task `job` runs, with the queue, priority, run_after and backend it was enqueued with.

    Raise TaskResultDoesNotExist for a job that runs no task a worker
    would run (jobs.tasks.runtime.resolve_task).
    """
    from jobs.errors import UnknownJobType
    from jobs.tasks.runtime import resolve_task

    try:
        task = resolve_task(job.type)
    except UnknownJobType as exc:
        raise TaskResultDoesNotExist(f"{job.pk}: {exc}") from None
    payload = job.payload if isinstance(job.payload, dict) else {}
    # A copy with the row's values set, not Task.using(): that would
    # validate again, and a row outlives the settings it was valid under.
    task = copy.copy(task)
    object.__setattr__(task, "queue_name", job.queue)
    object.__setattr__(task, "priority", task_priority(job.priority))
    object.__setattr__(task, "run_after", _moment(payload.get("run_after")))
    object.__setattr__(task, "backend", payload.get("backend") or DEFAULT_TASK_BACKEND_ALIAS)
    return task


def result_for(job: Job, *, task: Task | None = None, backend: str | None = None) -> TaskResult:
    """Return the TaskResult of a task's job as the row has it.

    `task` is the task as it was enqueued, if the caller has it; otherwise
    the job's type is resolved (task_of), and TaskResultDoesNotExist
    raised for a job that runs no task.
    """
    if task is None:
        task = task_of(job)
    history = job.history if isinstance(job.history, list) else []
    starts = [moment for moment in (_moment(entry.get("started_at")) for entry in history if isinstance(entry, dict))
              if moment is not None]
    if job.started_at is not None:
        starts.append(job.started_at)
    errors = attempt_errors(history)
    end = _end_error(job, history)
    if end is not None:
        errors.append(end)
    args, kwargs = arguments(job.payload)
    result: TaskResult = TaskResult(
        task=task,
        id=str(job.pk),
        status=STATUSES[JobStatus(job.status)],
        enqueued_at=job.created_at,
        started_at=min(starts) if starts else None,
        last_attempted_at=max(starts) if starts else None,
        finished_at=job.finished_at if job.status in FINISHED_STATUSES else None,
        args=args,
        kwargs=kwargs,
        backend=backend or task.backend,
        errors=errors,
        worker_ids=worker_ids(job, history),
    )
    if job.status == JobStatus.COMPLETED:
        object.__setattr__(result, "_return_value", job.result)
    return result

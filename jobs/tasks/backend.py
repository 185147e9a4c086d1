"""SkipjackBackend: Django's Tasks API, with the jobs table as the queue.

    TASKS = {"default": {"BACKEND": "jobs.tasks.SkipjackBackend", "QUEUES": ["default", "emails"],
                         "OPTIONS": {"max_retries": 5, "timeout": 60}}}
    JOBS_TASK_MODULES = ["myapp.tasks"]

A task's enqueue is jobs.queue.enqueue of a job whose type is the task's
module path and whose payload is its arguments, so it joins the caller's
transaction like any enqueue: a rolled-back enqueue leaves no task, and no
transaction.on_commit is needed around it. Its result is the job, read
back from any process (jobs.tasks.results).

Our options, each per task (`@task(max_retries=5)`: the backport and
Django 6.1 hand the decorator's extra keywords to task_class), per enqueue
(`.using(timeout=10)`) or for every task of the backend (OPTIONS); the
first of those that sets one wins, then the queue's own defaults.
"""

import copy
from typing import Any

from django.db import transaction

from jobs import queue
from jobs.errors import PayloadError
from jobs.spec import build_for
from jobs.tasks.base import SkipjackBackendBase, call_with_arguments, check_unique_key, resolved_options
from jobs.tasks.compat import DEFAULT_TASK_BACKEND_ALIAS, InvalidTask, Task, TaskResult, normalize_json, task_enqueued
from jobs.tasks.results import result_for
from jobs.tasks.runtime import handler_for_task


class SkipjackBackend(SkipjackBackendBase):
    """Django's task backend on the jobs table: workers are `manage.py runworker`, results are jobs."""

    def enqueue(self, task: Task, args, kwargs) -> TaskResult:
        """Store a job that runs `task` with `args` and `kwargs`, in the caller's transaction; return its result.

        Raise InvalidTask for a task that must not be stored, TypeError
        for arguments JSON cannot hold, and PayloadError (a ValueError)
        for arguments over the queue's payload limits. With a unique key,
        the result of the unfinished task with that key is returned
        instead of a new one.
        """
        self.validate_task(task)
        self.check_runnable(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        options = resolved_options(task, self.options)
        try:
            unique_key = call_with_arguments(options.get("unique_key"), args, kwargs)
            if unique_key is not None:
                check_unique_key(unique_key)
        except ValueError as exc:
            raise InvalidTask(f"The unique key of task {task.module_path!r}: {exc}") from None
        payload: dict[str, Any] = {"args": args, "kwargs": kwargs}
        if task.run_after is not None:
            payload["run_after"] = task.run_after.isoformat()
        if self.alias != DEFAULT_TASK_BACKEND_ALIAS:  # the default's is left out, as most tasks use it
            payload["backend"] = self.alias
        try:
            spec = build_for(
                handler_for_task(task, options), payload, queue=task.queue_name, priority=task.priority,
                max_retries=options.get("max_retries"), timeout=options.get("timeout"), ttl=options.get("ttl"),
                run_at=task.run_after, unique_key=unique_key,
            )
        except PayloadError:
            raise
        except ValueError as exc:  # a key its function made, an option out of range
            raise InvalidTask(f"Task {task.module_path!r}: {exc}") from None
        job = queue.enqueue(spec)
        result = result_for(job, task=task, backend=self.alias)
        if not job.deduplicated:
            # Sent once the task exists for others: at commit, never for a rolled-back enqueue.
            transaction.on_commit(lambda: task_enqueued.send(type(self), task_result=copy.copy(result)), robust=True)
        return result


"""What a Skipjack task and backend are, apart from storing tasks: options, validation, reading results.

jobs.tasks.backend.SkipjackBackend adds the enqueue, through jobs.queue;
the worker needs only this (jobs.tasks.runtime).
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from jobs import conf, flow
from jobs.models import Job
from jobs.registry import unstorable
from jobs.spec import MAX_SECONDS
from jobs.tasks.compat import (
    DEFAULT_TASK_BACKEND_ALIAS,
    DEFAULT_TASK_PRIORITY,
    DEFAULT_TASK_QUEUE_NAME,
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    task_backends,
)
from jobs.tasks.results import result_for

# The options a backend's OPTIONS may set for all its tasks.
BACKEND_OPTIONS = ("max_retries", "timeout", "ttl", "backoff_base", "backoff_cap", "key_concurrency")
# Those a task may set for itself (the decorator's extra keywords).
TASK_OPTIONS = (*BACKEND_OPTIONS, "unique_key", "concurrency_key")
# Those an enqueue may set through .using(): what the job's row stores. The
# backoff is the task's, as a worker finds it when an attempt fails.
ENQUEUE_OPTIONS = ("max_retries", "timeout", "ttl", "unique_key", "concurrency_key", "key_concurrency")
# What the job's `type` column holds: the task's module path.
MAX_PATH = Job._meta.get_field("type").max_length or 100
MAX_UNIQUE_KEY = Job._meta.get_field("unique_key").max_length or 255
# A result id is a job's primary key, written as Django writes an integer.
RESULT_ID = re.compile(r"[1-9][0-9]{0,18}")
MAX_JOB_ID = 2**63 - 1


def check_option(name: str, value: Any) -> None:
    """Raise ValueError for a bad value of option `name`; None means unset and passes."""
    if value is None:
        return
    if name == "max_retries":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError("max_retries must be a whole number from 0 to 100.")
    elif name in ("timeout", "ttl", "backoff_base", "backoff_cap"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and 0 < value <= MAX_SECONDS):
            raise ValueError(f"{name} must be a positive number of seconds up to {MAX_SECONDS:g}.")
    elif name == "key_concurrency":
        flow.check_limit(value, "key_concurrency")
    elif name == "unique_key":
        if not callable(value):
            check_unique_key(value)
    elif name == "concurrency_key":
        if not callable(value):
            if not isinstance(value, str):
                raise ValueError("concurrency_key must be a string, or a function of the task's arguments.")
            flow.check_key(value)
    else:
        raise ValueError(f"Unknown option {name!r}.")


def check_unique_key(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_UNIQUE_KEY:
        raise ValueError(f"unique_key must be a string of 1 to {MAX_UNIQUE_KEY} characters, "
                         "or a function of the task's arguments that returns one.")
    problem = unstorable(value)
    if problem:
        raise ValueError(f"unique_key must not contain {problem}.")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SkipjackTask(Task):  # type: ignore[misc]  # the stubs do not declare Task frozen; it is (and generic only in the backport)
    """A Django task with Skipjack's options: each None falls back to the backend's OPTIONS, then the queue's defaults."""

    # Retries after the first attempt fails (so at most max_retries + 1 attempts).
    max_retries: int | None = None
    # Seconds one attempt may run.
    timeout: float | None = None
    # Seconds the task may wait to start before it expires instead.
    ttl: float | None = None
    # The retry backoff: about base, 2 * base, 4 * base, ... seconds, never above cap.
    backoff_base: float | None = None
    backoff_cap: float | None = None
    # At most one unfinished task with this key (a string, or a function of
    # the task's arguments that returns one, or None for no key).
    unique_key: str | Callable[..., str | None] | None = None
    # Flow control: tasks with the same key in a queue share its limits; at
    # most key_concurrency of them run at once.
    concurrency_key: str | Callable[..., str | None] | None = None
    key_concurrency: int | None = None

    def using(self, *, priority: int | None = None, queue_name: str | None = None, run_after=None,
              backend: str | None = None, **options: Any) -> "SkipjackTask":
        """Return the task with other defaults: Django's, and those of ENQUEUE_OPTIONS."""
        unknown = sorted(set(options) - set(ENQUEUE_OPTIONS))
        if unknown:
            raise TypeError(f"using() got unexpected keyword arguments {', '.join(map(repr, unknown))}; "
                            f"it takes {', '.join(ENQUEUE_OPTIONS)} besides Django's.")
        # Task.using, not super(): the slotted dataclass is a new class, which zero-argument super() does not see.
        task = cast("SkipjackTask", Task.using(self, priority=priority, queue_name=queue_name,
                                                     run_after=run_after, backend=backend))
        changes = {name: value for name, value in options.items() if value is not None}
        return replace(task, **changes) if changes else task


def task(function: Callable | None = None, *, priority: int = DEFAULT_TASK_PRIORITY,
         queue_name: str = DEFAULT_TASK_QUEUE_NAME, backend: str = DEFAULT_TASK_BACKEND_ALIAS,
         takes_context: bool = False, **options: Any) -> Any:
    """Django's @task decorator, handing a backend's own options to its task class on every Django version.

    The backport and Django 6.1 do that themselves; Django 6.0's decorator
    takes Django's four arguments only.
    """

    def wrapper(func: Callable) -> Task:
        return task_backends[backend].task_class(priority=priority, func=func, queue_name=queue_name,
                                                 backend=backend, takes_context=takes_context, run_after=None,
                                                 **options)

    return wrapper(function) if function is not None else wrapper


def resolved_options(task: Task, defaults: dict[str, Any]) -> dict[str, Any]:
    """Return the options in force for `task`: its own, else the backend's `defaults`."""
    own = {name: getattr(task, name, None) for name in TASK_OPTIONS}
    return {**defaults, **{name: value for name, value in own.items() if value is not None}}


def call_with_arguments(key: Any, args: list, kwargs: dict) -> Any:
    """Return `key`, or what it returns for the task's arguments when it is a function of them."""
    return key(*args, **kwargs) if callable(key) else key


class SkipjackBackendBase(BaseTaskBackend):
    """Django's task backend on the jobs table, all but the enqueue (SkipjackBackend adds it)."""

    task_class = SkipjackTask

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        if not isinstance(self.options, dict):
            raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS'] must be a dict.")
        unknown = sorted(set(self.options) - set(BACKEND_OPTIONS))
        if unknown:
            raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS'] has unknown options {', '.join(map(repr, unknown))}; "
                                     f"it takes {', '.join(BACKEND_OPTIONS)}.")
        for name, value in self.options.items():
            try:
                check_option(name, value)
            except ValueError as exc:
                raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS']: {exc}") from None
        for name in self.queues:
            try:
                flow.check_queue_name(name)
            except ValueError as exc:
                raise InvalidTaskBackend(f"TASKS[{alias!r}]['QUEUES']: {exc}") from None

    def validate_task(self, task: Task) -> None:
        """Raise InvalidTask for a task this backend cannot store or a worker would not run as asked.

        Django's rules (a module-level function, `context` first for
        takes_context, a priority from -100 to 100, an aware run_after, a
        queue of QUEUES), then ours: a module path the jobs table can
        store, a queue name flow control accepts, and valid options.
        """
        super().validate_task(task)
        if len(task.module_path) > MAX_PATH:
            raise InvalidTask(f"The task's module path {task.module_path!r} is longer than the {MAX_PATH} "
                              "characters a job's type holds.")
        try:
            flow.check_queue_name(task.queue_name)
            for name in TASK_OPTIONS:
                check_option(name, getattr(task, name, None))
        except ValueError as exc:
            raise InvalidTask(str(exc)) from None

    def check_runnable(self, task: Task) -> None:
        """Raise InvalidTask unless workers would run `task`: its module must be in JOBS_TASK_MODULES."""
        module = task.func.__module__
        if module not in conf.get("JOBS_TASK_MODULES"):
            raise InvalidTask(f"Task {task.module_path!r} is not in a module of JOBS_TASK_MODULES, "
                              "and workers run tasks only from those.")

    def get_result(self, result_id: str) -> TaskResult:
        """Return the result of the task with id `result_id`, as the database has it now, from any process.

        Raise TaskResultDoesNotExist for an id that is no task's: malformed,
        unknown, a job that is no task, or one whose task can no longer be
        imported.
        """
        if not isinstance(result_id, str) or not RESULT_ID.fullmatch(result_id) or int(result_id) > MAX_JOB_ID:
            raise TaskResultDoesNotExist(result_id)
        job = Job.objects.filter(pk=int(result_id)).first()
        if job is None:
            raise TaskResultDoesNotExist(result_id)
        return result_for(job)

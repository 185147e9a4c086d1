"""Django tasks in the worker: from a job's type to the task it runs, safely, and running it.

A task's job names a function by its module path, and anyone who can write
a row can write any path. So a path is only ever looked up, never imported
on its own say: its module must be one of JOBS_TASK_MODULES, the name must
be a Task that module defines (a function decorated with @task, not any
callable), and its backend must be a SkipjackBackend. Anything else fails
for good, with the reason, and goes to the DLQ without running
(TaskNotRunnable).
"""

import threading
import weakref
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.utils import timezone

from jobs import conf, tracing
from jobs.errors import PayloadError, PermanentError, TaskNotRunnable, UnknownJobType
from jobs.registry import Handler, JobContext, get_handler
from jobs.tasks.base import SkipjackBackendBase, resolved_options
from jobs.tasks.compat import (
    InvalidTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    normalize_json,
    signals_module,
    task_backends,
    task_finished,
    task_started,
)

# The keys of a task job's payload.
PAYLOAD_KEYS = frozenset({"args", "kwargs", "run_after", "backend"})


@dataclass(frozen=True)
class TaskHandler(Handler):
    """The handler of a Django task's jobs: runs `task` with the arguments of the job's payload."""

    task: Any = None


def resolve_task(path: str) -> Task:
    """Return the Task at module path `path`; raise TaskNotRunnable if it is none a worker may run.

    Only a module of JOBS_TASK_MODULES is imported, and only a Task defined
    there under that name is returned.
    """
    module_name, _, name = path.rpartition(".")
    if not module_name or module_name not in conf.get("JOBS_TASK_MODULES"):
        raise TaskNotRunnable(path, f"Unknown job type {path!r}: no registered type, nor a task of a module in "
                                    "JOBS_TASK_MODULES; it was not run.")
    try:
        module = import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the import raised, the task cannot run
        raise TaskNotRunnable(path, f"Task {path!r} cannot run: its module {module_name!r} could not be imported "
                                    f"({type(exc).__name__}: {exc}).") from None
    # The module's own namespace, not getattr(): no module-level __getattr__ gets to answer.
    found = vars(module).get(name)
    if found is None:
        raise TaskNotRunnable(path, f"Task {path!r} cannot run: module {module_name!r} has no {name!r} "
                                    "(removed or renamed since the task was enqueued?).")
    if not isinstance(found, Task):
        raise TaskNotRunnable(path, f"{path!r} is not a task but a {type(found).__name__}, so it was not run: "
                                    "workers run only functions decorated with @task.")
    if found.module_path != path:
        raise TaskNotRunnable(path, f"{path!r} is another name for task {found.module_path!r}; it was not run.")
    return found


def task_payload(payload: Any) -> Any:
    """Return a task job's payload if it is one ({"args": [...], "kwargs": {...}}); raise PayloadError otherwise."""
    if not isinstance(payload, dict):
        raise PayloadError("A task's payload is an object with its args and kwargs.")
    errors: dict[str, list[str]] = {}
    for key in sorted(set(payload) - PAYLOAD_KEYS):
        errors[key] = ["Not part of a task's payload."]
    if not isinstance(payload.get("args"), list):
        errors["args"] = ["Must be a list."]
    if not isinstance(payload.get("kwargs"), dict):
        errors["kwargs"] = ["Must be an object."]
    for key in ("run_after", "backend"):
        if key in payload and not isinstance(payload[key], str):
            errors[key] = ["Must be a string."]
    if errors:
        raise PayloadError(errors)
    return payload


def handler_for_task(task: Task, options: dict[str, Any]) -> TaskHandler:
    """Return the handler of `task`'s jobs, with the options in force for it (backend.resolved_options)."""
    key = options.get("concurrency_key")
    concurrency_key: Any = key
    if callable(key):
        def concurrency_key(payload, key=key):
            return key(*payload["args"], **payload["kwargs"])
    return TaskHandler(
        name=task.module_path, func=lambda context: run_task(task, context), validate=task_payload,
        description=(task.func.__doc__ or "").strip(), timeout=options.get("timeout"),
        max_retries=options.get("max_retries"), backoff_base=options.get("backoff_base"),
        backoff_cap=options.get("backoff_cap"), concurrency_key=concurrency_key,
        key_concurrency=options.get("key_concurrency"), task=task,
    )


_handlers: dict[str, TaskHandler] = {}
_handlers_lock = threading.Lock()


def task_handler(path: str) -> TaskHandler:
    """Return the handler of the task at `path` (resolve_task), built once per process; raise TaskNotRunnable."""
    handler = _handlers.get(path)
    if handler is None:
        task = resolve_task(path)
        try:
            backend = task_backends[task.backend]
        except InvalidTaskBackend as exc:
            raise TaskNotRunnable(path, f"Task {path!r} cannot run: {exc}") from None
        if not isinstance(backend, SkipjackBackendBase):
            raise TaskNotRunnable(path, f"Task {path!r} belongs to backend {task.backend!r}, which is not Skipjack's; "
                                        "it was not run.")
        handler = handler_for_task(task, resolved_options(task, backend.options))
        with _handlers_lock:
            _handlers.setdefault(path, handler)
    return handler


def task_names() -> list[str]:
    """Return the job types of the tasks workers run: the module paths of the tasks of JOBS_TASK_MODULES, sorted."""
    names: set[str] = set()
    for module_name in conf.get("JOBS_TASK_MODULES"):
        try:
            module = import_module(module_name)  # imported at start-up already (jobs.apps)
        except ImportError:
            continue
        names.update(value.module_path for value in vars(module).values()
                     if isinstance(value, Task) and value.func.__module__ == module_name)
    return sorted(names)


def handler_for(type_name: str) -> Handler:
    """Return the handler of jobs of `type_name`: a registered job type's, else a Django task's.

    Raise UnknownJobType (TaskNotRunnable, saying why, for a module path)
    for a type no worker may run.
    """
    try:
        return get_handler(type_name)
    except UnknownJobType:
        if "." not in type_name:
            raise
    return task_handler(type_name)


def _default_receivers() -> frozenset[tuple[str, str]]:
    return frozenset((signals_module, name) for name in ("log_task_enqueued", "log_task_started", "log_task_finished"))


def has_own_receivers(signal) -> bool:
    """Return whether `signal` has receivers besides the Tasks API's own log lines.

    Those read only a result's id, task and status, which the worker knows
    without reading the job again; any other receiver gets the result as
    the database has it.
    """
    defaults = _default_receivers()
    for entry in signal.receivers:
        receiver = entry[1]
        if isinstance(receiver, weakref.ReferenceType):
            receiver = receiver()
        if receiver is not None and (getattr(receiver, "__module__", ""), getattr(receiver, "__name__", "")) not in defaults:
            return True
    return False


def _stored_result(job_id: int) -> TaskResult | None:
    from jobs.models import Job
    from jobs.tasks.results import result_for

    job = Job.objects.filter(pk=job_id).first()
    return None if job is None else result_for(job)


def running_result(task: Task, context: JobContext) -> TaskResult:
    """Return the result of the task `context` starts now: RUNNING, this attempt counted.

    Read from the database when something will look at more than its id
    and status (a task that takes its context, a receiver of
    task_started); the attempt's own start may not be stored yet, and is
    added then.
    """
    worker = str(tracing.log_context().get("worker_id") or "")
    now = timezone.now()
    stored = _stored_result(context.job_id) if task.takes_context or has_own_receivers(task_started) else None
    if stored is None:
        args, kwargs = context.payload["args"], context.payload["kwargs"]
        result: TaskResult = TaskResult(
            task=task, id=str(context.job_id), status=TaskResultStatus.RUNNING, enqueued_at=None, started_at=now,
            last_attempted_at=now, finished_at=None, args=args, kwargs=kwargs,
            backend=context.payload.get("backend", task.backend), errors=[], worker_ids=[worker],
        )
        return result
    if stored.status != TaskResultStatus.RUNNING:  # claimed for a slot: its start is stored after it
        stored.worker_ids.append(worker)
        object.__setattr__(stored, "started_at", stored.started_at or now)
        object.__setattr__(stored, "last_attempted_at", now)
    object.__setattr__(stored, "status", TaskResultStatus.RUNNING)
    return stored


def run_task(task: Task, context: JobContext) -> Any:
    """Run one attempt of `task` with the arguments of `context`'s job; return what it returned, as JSON.

    Async tasks run to completion on an event loop of their own
    (Task.call). task_started is sent first; task_finished once the
    worker has recorded the outcome (finished()).
    """
    payload = context.payload
    alias = payload.get("backend", task.backend)
    try:
        backend = task_backends[alias]
    except InvalidTaskBackend as exc:
        raise PermanentError(f"Task {task.module_path!r} cannot run: {exc}") from None
    if not isinstance(backend, SkipjackBackendBase):
        raise PermanentError(f"Task {task.module_path!r} was enqueued on backend {alias!r}, which is not Skipjack's.")
    result = running_result(task, context)
    task_started.send(type(backend), task_result=result)
    if task.takes_context:
        value = task.call(TaskContext(task_result=result), *payload["args"], **payload["kwargs"])
    else:
        value = task.call(*payload["args"], **payload["kwargs"])
    try:
        return normalize_json(value)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"Result is not JSON: {exc}") from None


FINISHED = {"completed": TaskResultStatus.SUCCESSFUL, "dead": TaskResultStatus.FAILED,
            "cancelled": TaskResultStatus.FAILED}


def finished(ended: list[tuple[TaskHandler, Any, str, Any]], worker_id: Any) -> None:
    """Send task_finished for tasks whose outcome the worker recorded: (handler, claimed job, new status, outcome).

    Only for tasks that finished (completed, dead, cancelled); an attempt
    that is retried leaves its task READY. With receivers of their own,
    they get the results as the database has them, read in one query.
    """
    from jobs.models import Job
    from jobs.tasks.compat import TaskResultDoesNotExist
    from jobs.tasks.results import class_path, result_for

    done = [item for item in ended if item[2] in FINISHED]
    if not done:
        return
    if has_own_receivers(task_finished):
        rows = {job.pk: job for job in Job.objects.filter(pk__in=[job.id for _, job, _, _ in done])}
        for handler, job, _, _ in done:
            row = rows.get(job.id)
            if row is None:
                continue
            try:
                stored = result_for(row)
            except TaskResultDoesNotExist:  # its module changed since it ran: the task as it ran
                stored = result_for(row, task=handler.task)
            task_finished.send_robust(_sender(stored.backend), task_result=stored)
        return
    worker = str(worker_id or "")
    now = timezone.now()
    for handler, job, status, outcome in done:
        errors = [] if status == "completed" else [TaskError(
            exception_class_path=outcome.exception or class_path(PermanentError), traceback=outcome.traceback or outcome.error)]
        result: TaskResult = TaskResult(
            task=handler.task, id=str(job.id), status=FINISHED[status], enqueued_at=None, started_at=None,
            last_attempted_at=None, finished_at=now, args=job.payload.get("args", []),
            kwargs=job.payload.get("kwargs", {}), backend=job.payload.get("backend", handler.task.backend),
            errors=errors, worker_ids=[worker],
        )
        if status == "completed":
            object.__setattr__(result, "_return_value", outcome.result)
        task_finished.send_robust(_sender(result.backend), task_result=result)



def _sender(alias: str) -> type:
    """Return the class of backend `alias`, which signals are sent as."""
    try:
        return type(task_backends[alias])
    except InvalidTaskBackend:  # gone from the settings since the task ran
        return SkipjackBackendBase

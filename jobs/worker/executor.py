"""The executor: one attempt as a pipeline, resolve the handler -> run it -> normalise -> an Outcome.

It runs in a slot thread and never raises: whatever a handler does, even
SystemExit or a result no database can store, becomes an Outcome.
"""

import logging
import sys
import time
import traceback

from jobs import conf, tracing
from jobs.errors import PayloadError, PermanentError, Snooze, UnknownJobType
from jobs.registry import stored_payload
from jobs.storable import storable_json, storable_text
from jobs.tasks.runtime import handler_for
from jobs.worker.state import Outcome, Running, log_job

# Longest error message stored; the traceback keeps its last TRACEBACK_CHARS.
ERROR_CHARS = 10_000
TRACEBACK_CHARS = 20_000


def describe(exc: BaseException, prefix: str = "") -> str:
    """Return "Type: message" for `exc`, even when its message cannot be read."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__ must not fail the failure
        message = "(the exception's message could not be read)"
    return storable_text(f"{prefix}{type(exc).__name__}: {message[:2 * ERROR_CHARS]}")[:ERROR_CHARS]


def format_traceback() -> str:
    try:
        # Hidden before the final cut, so that no URL loses its scheme to the cut and keeps its password.
        return storable_text(traceback.format_exc()[-2 * TRACEBACK_CHARS:])[-TRACEBACK_CHARS:]
    except Exception:  # noqa: BLE001
        return ""


def execute(running: Running, worker_id) -> Outcome:
    """Run one attempt of `running` and return its outcome; never raise."""
    job = running.job
    try:
        # The handler's own log lines, and any job it enqueues, carry this job's trace id.
        with tracing.bound(trace_id=job.trace_id, job_id=job.id, type=job.type, queue=job.queue,
                           attempt=job.attempts, user_id=job.owner_id, worker_id=str(worker_id)):
            log_job(logging.INFO, "start", job, worker_id)
            outcome = _run(running)
    except BaseException as exc:  # noqa: BLE001 - nothing a job does may end its slot
        outcome = _failed(running, exc)
    if running.context.cancel_requested.is_set():
        # Asked to cancel while it ran: the job ends cancelled, whatever the handler did then.
        outcome.kind, outcome.ok = "cancelled", False
        outcome.error = "Cancelled while it ran" + (f"; the handler then ended with {outcome.error}" if outcome.error
                                                     and not outcome.error.startswith("JobCancelled") else ".")
    return outcome


def _run(running: Running) -> Outcome:
    job = running.job
    # Resolve and run.
    try:
        # Resolved when the job was claimed; looked up again only to say why an unknown type fails.
        handler = running.handler or handler_for(job.type)
        # The one check of the worker: the stored payload against its type's
        # schema, which jobs.spec.build ran before storing it. A job built
        # that way passes unchanged (a schema accepts its own output), but
        # the row is where this release meets jobs it did not write: stored
        # by an older release whose schema was wider, inserted by hand, or
        # requeued after a setting the schema reads (an allowed program)
        # changed. None of those may reach a handler, which trusts its
        # payload; a failure is permanent, "Invalid payload: ...".
        running.context.payload = stored_payload(handler, job.payload)
        result = handler.func(running.context)
    except Snooze as exc:
        return Outcome(running=running, ok=False, kind="snoozed", snooze=exc.seconds, duration=_ran(running))
    except UnknownJobType as exc:
        return _failed(running, exc, permanent=True)
    except PayloadError as exc:
        return _failed(running, exc, permanent=True, prefix="Invalid payload: ")
    except PermanentError as exc:
        return _failed(running, exc, permanent=True)
    except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not end the worker
        return _failed(running, exc)
    if isinstance(result, Snooze):  # returned rather than raised: the same
        return Outcome(running=running, ok=False, kind="snoozed", snooze=result.seconds, duration=_ran(running))
    # Normalise: checked and made storable here, in the slot, so one job's
    # result cannot fail the batched write of the others.
    try:
        result, size = storable_json(result)
    except (TypeError, ValueError, RecursionError) as exc:
        return _failed(running, exc, permanent=True, prefix="Result is not JSON: ")
    max_bytes = conf.get("JOBS_MAX_RESULT_BYTES")
    if size > max_bytes:
        error = f"Result is {size} bytes of JSON; the limit is {max_bytes} (JOBS_MAX_RESULT_BYTES)."
        return Outcome(running=running, ok=False, error=error, permanent=True, duration=_ran(running))
    return Outcome(running=running, ok=True, result=result, duration=_ran(running))


def _ran(running: Running) -> float:
    now = time.monotonic()
    return now - (running.started if running.started is not None else now)


def exception_path(exc_type: type[BaseException]) -> str:
    """Return the importable path of `exc_type` ("builtins.ValueError"), or of its nearest base class that has one.

    A class defined inside a function, or no longer where its module says,
    cannot be imported by that path; its base classes stand in for it.
    """
    for cls in exc_type.__mro__:
        found = sys.modules.get(cls.__module__)
        for part in cls.__qualname__.split("."):
            found = getattr(found, part, None)
        if found is cls:
            return f"{cls.__module__}.{cls.__qualname__}"
    return "builtins.BaseException"


def _failed(running: Running, exc: BaseException, *, permanent=False, prefix="") -> Outcome:
    return Outcome(running=running, ok=False, error=describe(exc, prefix), traceback=format_traceback(),
                   exception=exception_path(type(exc)), permanent=permanent, duration=_ran(running))

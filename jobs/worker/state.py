"""What the parts of a worker pass between them: a held job, and a finished attempt."""

import logging
import threading
from dataclasses import dataclass, field

from jobs.queue import ClaimedJob, RescuedJob
from jobs.registry import Handler, JobContext

logger = logging.getLogger("jobs.worker")


@dataclass(eq=False)
class Running:
    """A claimed job while this process holds it."""

    job: ClaimedJob
    context: JobContext
    timeout: float
    # Resolved once, when the job is claimed; None for a type this worker does not know.
    handler: Handler | None = None
    started: float | None = None  # time.monotonic() when a slot picked it up
    slot: "Slot | None" = None
    # Set by its slot, under the slots' lock, once its outcome is handed over.
    finished: bool = False
    # Set once the worker gave up on it (timeout, lost lease, shutdown):
    # whatever the slot reports afterwards is dropped.
    abandoned: bool = False
    # time.monotonic() by which its handler must stop, once a cancel of it was asked for.
    cancel_deadline: float | None = None


@dataclass(eq=False)
class Outcome:
    """A finished attempt, waiting to be written back."""

    running: Running
    ok: bool
    result: object = None
    error: str = ""
    traceback: str = ""
    # The importable path of the exception class the handler raised, if it raised one.
    exception: str = ""
    permanent: bool = False
    duration: float = 0.0
    # How the attempt ended, as stored in the job's history: completed, failed,
    # timeout, interrupted, snoozed (with `snooze` seconds) or cancelled.
    kind: str = "failed"
    snooze: float = 0.0
    write_attempts: int = 0


@dataclass(eq=False)
class Slot:
    thread: threading.Thread = field(init=False)  # set once the thread, which runs the slot, exists
    current: Running | None = None  # what its handler runs now
    # Set when its job was abandoned: the thread exits once the handler returns.
    retired: bool = False


def log_job(level: int, event: str, job: ClaimedJob | RescuedJob, worker_id, duration: float | None = None, error: str = "") -> None:
    """Log one event of a job's life, with the fields every such line carries."""
    if not logger.isEnabledFor(level):
        return
    extra = {
        "event": event, "job_id": job.id, "type": job.type, "queue": job.queue, "attempt": job.attempts,
        "trace_id": job.trace_id, "user_id": job.owner_id, "worker_id": str(worker_id),
    }
    if duration is not None:
        extra["duration_ms"] = round(duration * 1000, 3)
    message = f"{event} {job.type}#{job.id} attempt {job.attempts}"
    if error:
        extra["error"] = error
        message += f": {error}"
    logger.log(level, message, extra=extra)

"""Exceptions raised by the queue and by job handlers."""

import math


class PermanentError(Exception):
    """Raised by a handler for a failure a retry cannot fix: the job goes straight to the DLQ."""


class JobTimeout(Exception):
    """Raised inside a handler thread whose job ran past its timeout."""


class JobCancelled(Exception):
    """Raised in a handler (by JobContext.check_cancelled or sleep) once someone asked to cancel its job."""


class Snooze(Exception):  # noqa: N818 - what a handler says: raise Snooze(60)
    """Raised (or returned) by a handler: put the job back to wait `seconds`, the attempt not counted.

    The job is `scheduled` again for then. Its attempts stay what they were
    before this attempt, so a snooze never uses up max_retries, which count
    failures only; the job's history records the attempt as `snoozed`.
    """

    def __init__(self, seconds: float):
        seconds = float(seconds)
        if not math.isfinite(seconds) or not 0 <= seconds <= 365 * 24 * 3600:
            raise ValueError("Snooze takes a number of seconds from 0 to a year.")
        self.seconds = seconds
        super().__init__(f"snoozed for {seconds:g}s")


class JobExpired(Exception):
    """What a job that expired failed of: its TTL passed before a worker could start it."""


class LeaseExpired(Exception):
    """What an attempt failed of when its worker stopped renewing the lease (it died, or froze) and it was rescued."""


class WorkerShutdown(Exception):
    """What an attempt failed of when its worker shut down before the handler finished."""


class UnknownJobType(LookupError):
    def __init__(self, name: str, message: str | None = None):
        super().__init__(message or f"Unknown job type {name!r}.")
        self.name = name


class TaskNotRunnable(UnknownJobType):
    """A job names a Django task that the worker will not or cannot run (jobs.tasks.runtime): it fails for good."""


class JobTypeNotAllowed(PermissionError):
    """The submitting user may not create jobs of this type (e.g. shell commands for non-staff)."""


class PayloadError(ValueError):
    """A payload that fails its type's schema. `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, list[str]] | str):
        if isinstance(errors, str):
            errors = {"payload": [errors]}
        self.errors = errors
        super().__init__("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items()))


class IllegalTransition(Exception):
    """A state change the job's current status does not allow."""


class OwnerAtCapacity(Exception):
    """An enqueue refused because the owner already has as many unfinished jobs as it allowed."""


class SubmissionRefused(Exception):
    """A submission the user's limits do not allow right now (jobs.submission)."""

    kind = "refused"

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RateLimited(SubmissionRefused):
    kind = "rate"


class TooManyActiveJobs(SubmissionRefused):
    kind = "active"

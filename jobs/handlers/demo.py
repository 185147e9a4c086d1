"""Job types for demos: one that waits and one that fails."""

from jobs.errors import PermanentError
from jobs.handlers.validators import MAX_SLEEP_SECONDS, fail_payload, sleep_payload
from jobs.registry import JobContext, job_handler


# The timeout leaves the longest allowed sleep room to finish.
@job_handler("sleep", validate=sleep_payload, timeout=MAX_SLEEP_SECONDS + 60)
def sleep(job: JobContext) -> dict:
    """Sleep for a number of seconds."""
    seconds = job.payload["seconds"]
    job.sleep(seconds)
    return {"slept": seconds}


@job_handler("fail", validate=fail_payload)
def fail(job: JobContext) -> None:
    """Fail on purpose, to be retried or, if permanent, sent to the DLQ."""
    message = job.payload["message"]
    if job.payload["permanent"]:
        raise PermanentError(message)
    raise RuntimeError(message)

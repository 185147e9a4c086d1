"""Text job types."""

from jobs.handlers.validators import text_payload
from jobs.registry import JobContext, job_handler


@job_handler("reverse_string", validate=text_payload)
def reverse_string(job: JobContext) -> str:
    """Reverse a string."""
    return job.payload["text"][::-1]


@job_handler("uppercase_text", validate=text_payload)
def uppercase_text(job: JobContext) -> str:
    """Convert text to upper case."""
    return job.payload["text"].upper()

"""Numeric job types."""

from jobs.handlers.validators import fibonacci_payload
from jobs.registry import JobContext, job_handler


@job_handler("fibonacci_calc", validate=fibonacci_payload)
def fibonacci_calc(job: JobContext) -> int:
    """Compute the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(job.payload["n"]):
        a, b = b, a + b
    return a

"""Outcomes: what a worker writes back for the jobs it holds, one batched statement each.

Each statement is guarded by status and lease token (queries.sql), so an
outcome for a job the worker no longer holds, cancelled or rescued since,
changes nothing, and the job is left out of what the call returns.
"""

import json
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils import timezone

from jobs import events, retry
from jobs.counters import BUCKETS
from jobs.db import statement_cursor
from jobs.models import JobStatus
from jobs.queue.claim import ClaimedJob
from jobs.queue.produce import notify
from jobs.queue.sql import query
from jobs.registry import Handler

_BUCKETS = list(BUCKETS)  # the histogram bounds, as the statements take them


@dataclass(slots=True)
class Completion:
    """A held job whose handler returned `result`."""

    job: ClaimedJob
    result: Any = None
    run_seconds: float | None = None  # how long the handler ran, for the run-time histogram
    started_ago: float = 0.0  # seconds between its slot's start and the write


@dataclass(slots=True)
class Failure:
    """A failed attempt of a held job, as the worker reports it."""

    job: ClaimedJob
    error: str
    traceback: str = ""
    permanent: bool = False
    # How the attempt ended, as the job's history records it: failed, timeout, interrupted.
    outcome: str = "failed"
    run_seconds: float | None = None
    started_ago: float = 0.0
    # The job's handler, if the caller resolved it already: its backoff decides the retry.
    handler: Handler | None = None
    # The importable path of the exception class the attempt raised ("builtins.ValueError"), if it raised one.
    exception: str = ""


@dataclass(slots=True)
class Snoozed:
    """A held job whose handler snoozed (jobs.errors.Snooze): it waits `seconds`, its attempt given back."""

    job: ClaimedJob
    seconds: float
    run_seconds: float | None = None
    started_ago: float = 0.0


@dataclass(slots=True)
class Cancelled:
    """A held job that stopped because a cancel was asked for: its handler gave up, or the grace ran out."""

    job: ClaimedJob
    error: str = "Cancelled."
    # What the handler returned if it finished anyway: kept, though the job is cancelled.
    result: Any = None
    run_seconds: float | None = None
    started_ago: float = 0.0


def record_outcomes(completions: list[Completion], failures: list[Failure], snoozes: list[Snoozed] | None = None,
                    cancels: list[Cancelled] | None = None) -> dict[int, str]:
    """Record the outcomes of held jobs in one statement; return each recorded job's new status.

    A completion makes its job `completed` with its result. A failure sends
    its job to `retrying` after its backoff, or to `dead` (the DLQ) when the
    failure is permanent or its retries are used up, as jobs.retry.decide
    says. A snooze makes its job `scheduled` for later, the attempt not
    counted; a cancel makes it `cancelled`. A job whose cancel was asked for
    never waits again: its retry or snooze ends it `cancelled`. A job missing
    from the result was no longer held (cancelled before it started, or
    rescued after its worker stalled) and keeps whatever state it has now.
    """
    snoozes, cancels = snoozes or [], cancels or []
    if not completions and not failures and not snoozes and not cancels:
        return {}
    # Only the keys a record needs: the statement reads a missing one as NULL.
    rows: list[dict[str, Any]] = [
        {"id": c.job.id, "token": str(c.job.lease_token), "status": JobStatus.COMPLETED, "result": c.result,
         "outcome": "completed", "run_s": c.run_seconds, "ago": c.started_ago, "due": c.job.due}
        for c in completions
    ]
    now = timezone.now()
    for failure in failures:
        job = failure.job
        job.begin()  # a job that failed before its slot's start was stored: this attempt counts
        decision = retry.decide(type_name=job.type, attempts=job.attempts, max_retries=job.max_retries,
                                permanent=failure.permanent, now=now, handler=failure.handler)
        # The delay, not decision.run_at: it counts from the database's clock.
        row = {"id": job.id, "token": str(job.lease_token), "status": decision.status, "delay": decision.delay,
               "error": failure.error, "traceback": failure.traceback[-20000:], "outcome": failure.outcome,
               "run_s": failure.run_seconds, "ago": failure.started_ago, "due": job.due}
        if failure.exception:
            row["exception"] = failure.exception
        rows.append(row)
    for snooze in snoozes:
        snooze.job.begin()
        rows.append({"id": snooze.job.id, "token": str(snooze.job.lease_token), "status": JobStatus.SCHEDULED,
                     "delay": snooze.seconds, "outcome": "snoozed", "error": f"Snoozed for {snooze.seconds:g}s",
                     "run_s": snooze.run_seconds, "ago": snooze.started_ago, "due": snooze.job.due})
    for cancel in cancels:
        cancel.job.begin()
        rows.append({"id": cancel.job.id, "token": str(cancel.job.lease_token), "status": JobStatus.CANCELLED,
                     "result": cancel.result, "outcome": "cancelled", "error": cancel.error,
                     "run_s": cancel.run_seconds, "ago": cancel.started_ago, "due": cancel.job.due})
    with statement_cursor() as cursor:
        cursor.execute(query("record_outcomes"), {"batch": json.dumps(rows, allow_nan=False), "buckets": _BUCKETS})
        recorded = cursor.fetchall()
    for status, progress in ((JobStatus.COMPLETED, 100), (JobStatus.RETRYING, None), (JobStatus.DEAD, None),
                             (JobStatus.SCHEDULED, None), (JobStatus.CANCELLED, None)):
        moved = [(job_id, owner_id) for job_id, new_status, owner_id in recorded if new_status == status]
        if moved:
            events.jobs_changed([m[0] for m in moved], [m[1] for m in moved], status, progress)
    return {job_id: status for job_id, status, _ in recorded}


def complete_jobs(completions: list[Completion]) -> set[int]:
    """Mark held jobs completed with their results, in one statement; return the ids completed."""
    return set(record_outcomes(completions, []))


def complete_job(job: ClaimedJob, result: Any) -> bool:
    """Mark one held job completed. Return False if it was no longer held."""
    return bool(complete_jobs([Completion(job, result)]))


def fail_jobs(failures: list[Failure]) -> dict[int, str]:
    """Record failed attempts of held jobs, in one statement; return each recorded job's new status."""
    return record_outcomes([], failures)


def fail_job(job: ClaimedJob, *, error: str, traceback: str = "", permanent: bool = False,
             outcome: str = "failed", run_seconds: float | None = None) -> str | None:
    """Record one failed attempt (see fail_jobs); return the job's new status, or None if it was no longer held."""
    return fail_jobs([Failure(job, error, traceback, permanent, outcome, run_seconds)]).get(job.id)


def release_jobs(jobs: list[ClaimedJob]) -> int:
    """Put held jobs that no slot started back in the queue, counting no attempt; return how many were.

    Used by a worker that stops before its slots could take them.
    """
    if not jobs:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(query("release_jobs"), {"ids": [j.id for j in jobs], "tokens": [j.lease_token for j in jobs]})
        rows = cursor.fetchall()
    if rows:
        notify(row[1] for row in rows)
        events.jobs_changed([row[0] for row in rows], [row[2] for row in rows], JobStatus.QUEUED, 0)
    return len(rows)


def set_progress(job: ClaimedJob, percent: int) -> bool:
    """Record a held job's progress (0-100). Return False if it was no longer held."""
    percent = max(0, min(100, int(percent)))
    with connection.cursor() as cursor:
        cursor.execute(query("set_progress"), {"percent": percent, "id": job.id, "token": job.lease_token})
        row = cursor.fetchone()
    if row is not None:
        events.jobs_changed([job.id], [job.owner_id], JobStatus.RUNNING, percent)
    return row is not None

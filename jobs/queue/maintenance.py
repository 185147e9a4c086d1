"""Maintenance, run by the queue's leader (jobs.leader): rescue, expiry, staging, pruning.

Each statement is safe to run twice at once (each locks its rows with
SKIP LOCKED), so two leaders overlapping for a moment cost time, never
correctness.
"""

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from jobs import conf, events, retry
from jobs.counters import BUCKETS
from jobs.models import JobStatus, KeyLimit, QueueControl
from jobs.queue.produce import notify
from jobs.queue.sql import query

# Most rows one call of a maintenance statement takes: a large backlog goes
# in short transactions instead of one that holds its locks and its WAL.
PRUNE_BATCH = 5000
STAGE_BATCH = 5000


@dataclass(slots=True)
class RescuedJob:
    """A job taken back from a worker that stopped renewing its lease."""

    id: int
    status: str  # its new status: retrying or dead if it had started, queued if it was only claimed
    queue: str
    owner_id: int | None
    type: str
    attempts: int
    trace_id: str


def rescue_expired_leases(limit: int = 1000) -> list[RescuedJob]:
    """Take back held jobs whose worker stopped renewing their lease; return them.

    A job that had started lost its attempt: it counts, and the job backs
    off like any failed attempt (jobs.retry.decide), to `retrying` or, after
    its last attempt, to `dead`. So a job that kills its worker is not run
    again at once, over and over. A job that was only claimed never ran: it
    is `queued` again, with nothing counted. A job whose cancel was asked
    for is `cancelled`.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_bitmapscan = off")  # see find_expired_leases in queries.sql
        cursor.execute(query("find_expired_leases"), {"limit": limit})
        stale = cursor.fetchall()
        if not stale:
            return []
        now = timezone.now()
        statuses: list[str] = []
        delays: list[float] = []
        for _, type_name, attempts, max_retries, started, _, cancelling in stale:
            if cancelling:
                statuses.append(JobStatus.CANCELLED)
                delays.append(0.0)
            elif started:
                decision = retry.decide(type_name=type_name, attempts=attempts, max_retries=max_retries, now=now)
                statuses.append(decision.status)
                delays.append(decision.delay)
            else:
                statuses.append(JobStatus.QUEUED)
                delays.append(0.0)
        cursor.execute(query("rescue_jobs"), {"ids": [row[0] for row in stale], "statuses": statuses,
                                              "delays": delays, "waits": [row[5] for row in stale],
                                              "buckets": list(BUCKETS)})
        rows = cursor.fetchall()
    rescued = [RescuedJob(*row[:7]) for row in rows]
    due_now = {job.queue for job, row in zip(rescued, rows, strict=True) if job.status == JobStatus.QUEUED or row[7] == 0}
    if due_now:
        notify(due_now)
    for status in (JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.DEAD, JobStatus.CANCELLED):
        moved = [job for job in rescued if job.status == status]
        events.jobs_changed([job.id for job in moved], [job.owner_id for job in moved], status)
    return rescued


def expire_jobs() -> int:
    """Move jobs whose TTL passed before any worker took them to `expired`; return how many."""
    with connection.cursor() as cursor:
        cursor.execute(query("expire_jobs"))
        rows = cursor.fetchall()
    events.jobs_changed([row[0] for row in rows], [row[1] for row in rows], JobStatus.EXPIRED)
    return len(rows)


def stage_due_jobs(limit: int = STAGE_BATCH) -> int:
    """Relabel up to `limit` due scheduled and retrying jobs `queued`; return how many."""
    with connection.cursor() as cursor:
        cursor.execute(query("stage_due_jobs"), {"limit": limit})
        rows = cursor.fetchall()
    events.jobs_changed([row[0] for row in rows], [row[1] for row in rows], JobStatus.QUEUED)
    return len(rows)


def prune_finished(older_than_seconds: float | None = None, *, limit: int = PRUNE_BATCH) -> int:
    """Delete up to `limit` jobs, oldest first, that finished more than `older_than_seconds` ago.

    The age defaults to JOBS_RETENTION_SECONDS. Return how many were
    deleted; a caller with more to prune calls again. Dead jobs stay until
    someone requeues or deletes them: they are the DLQ.
    """
    return prune_older("prune_finished", "JOBS_RETENTION_SECONDS", older_than_seconds, limit)


def prune_older(statement: str, setting: str, older_than_seconds: float | None, limit: int) -> int:
    """Run a pruning statement of queries.sql for rows older than `older_than_seconds` (default: `setting`).

    Return how many rows it deleted; a retention of 0 keeps everything.
    """
    seconds = conf.get(setting) if older_than_seconds is None else older_than_seconds
    if not seconds:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(query(statement), {"seconds": float(seconds), "limit": limit})
        return cursor.rowcount


def prune_start_log() -> int:
    """Drop the logged starts that no rate limit counts any more; return how many."""
    periods = [*QueueControl.objects.filter(rate_limit__isnull=False).values_list("rate_period", flat=True),
               *QueueControl.objects.filter(key_rate_limit__isnull=False).values_list("key_rate_period", flat=True),
               *KeyLimit.objects.filter(rate_limit__isnull=False).values_list("rate_period", flat=True)]
    with connection.cursor() as cursor:
        cursor.execute(query("prune_start_log"), {"keep": max(periods, default=0.0)})
        return cursor.rowcount

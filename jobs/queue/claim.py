"""Claiming: a worker takes ready jobs, leases them, and reports when its slots start them."""

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from jobs import conf, events
from jobs.db import statement_cursor
from jobs.models import NAMED_PRIORITIES, JobStatus
from jobs.queue.sql import query


@dataclass(slots=True)
class ClaimedJob:
    """A job a worker holds the lease of, as the claim returned it."""

    id: int
    type: str
    payload: Any
    # The attempt it is on: counted when a slot starts it (see begin()).
    attempts: int
    max_retries: int
    timeout: float | None
    trace_id: str
    queue: str
    lease_token: uuid.UUID
    owner_id: int | None
    priority: int
    # run_at as seconds since the epoch, by the database's clock: when it was due.
    due: float
    # True once its attempt is counted and its start stored: `running`, not `claimed`.
    started: bool = False

    def begin(self) -> bool:
        """Count the attempt a slot starts now; return True if its start is not stored yet.

        The claim stores the start of the jobs it hands to free slots at
        once. A job that waited for a slot (`claimed`) is started here, and
        the worker stores the start next (start_jobs), or with the job's
        outcome if that comes first.
        """
        if self.started:
            return False
        self.attempts += 1
        self.started = True
        return True


def ready_priorities() -> list[int]:
    """Return the priorities of the jobs claim_jobs takes (ready or waiting), highest first: one skip scan."""
    with statement_cursor() as cursor:
        cursor.execute(query("ready_priorities"))
        return list(cursor.fetchone()[0])


def claim_jobs(*, worker_id: uuid.UUID, limit: int, queues: list[str] | None = None,
               lease_seconds: float | None = None, start: dict[int, float] | None = None,
               starting: int | None = None) -> list[ClaimedJob]:
    """Claim up to `limit` ready jobs for `worker_id` and return them, in the order to run them.

    Highest priority first, then oldest run_at. The first `starting` of
    them (all by default) are `running` at once, for slots that are free
    now; the others are `claimed`, waiting for a slot, their attempt not
    counted. One statement in one short transaction (queries.sql:
    claim_jobs). `start` (from the worker's ClaimFront) names the
    priorities to read, each with the epoch second it starts at, skipping
    jobs due before; without it, the claim reads every priority that has
    jobs (ready_priorities) from the start.
    """
    if limit <= 0:
        return []
    if start is None:
        start = dict.fromkeys({*NAMED_PRIORITIES, *ready_priorities()}, -math.inf)
    priorities = sorted(start, reverse=True)
    params = {
        "priorities": priorities, "fronts": [start[p] for p in priorities], "limit": limit, "worker": worker_id,
        "lease": lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS"),
        "queues": queues or None, "start": limit if starting is None else max(0, starting),
    }
    with transaction.atomic(), statement_cursor() as cursor:
        cursor.execute(query("claim_jobs"), params)
        claimed = [ClaimedJob(*row) for row in cursor.fetchall()]
    # An UPDATE returns its rows in no set order: the claim's order is priority, then due time.
    claimed.sort(key=lambda job: (not job.started, -job.priority, job.due, job.id))
    _announce_claimed(claimed)
    return claimed


def _announce_claimed(claimed: list[ClaimedJob]) -> None:
    for job in claimed:
        if isinstance(job.payload, str):  # Django registers jsonb as text for psycopg
            job.payload = json.loads(job.payload)
    for status, started in ((JobStatus.RUNNING, True), (JobStatus.CLAIMED, False)):
        jobs = [job for job in claimed if job.started is started]
        events.jobs_changed([job.id for job in jobs], [job.owner_id for job in jobs], status, 0)


# The advisory lock limited claims take turns on (lock_limited_claims): "skipjack" in ASCII.
LIMITED_CLAIM_LOCK = 0x736B69706A61636B


@dataclass(frozen=True, slots=True)
class FlowState:
    """What flow control asks of a worker now (queries.sql: flow_state)."""

    paused: frozenset[str] = frozenset()
    # Queues with a concurrency or rate limit of their own: only the limited claim takes their jobs.
    limited: frozenset[str] = frozenset()
    # Whether any job with a concurrency key waits.
    keyed_waiting: bool = False

    def limited_work(self, queues: list[str] | None) -> bool:
        """Return whether the limited claim may find jobs for a worker serving `queues` (None: all)."""
        if self.keyed_waiting:
            return True
        return bool(self.limited if queues is None else self.limited.intersection(queues))


def flow_state() -> FlowState:
    """Read what flow control asks of workers now: one short statement."""
    with statement_cursor() as cursor:
        cursor.execute(query("flow_state"))
        paused, limited, keyed = cursor.fetchone()
    return FlowState(paused=frozenset(paused), limited=frozenset(limited), keyed_waiting=keyed)


def claim_limited_jobs(*, worker_id: uuid.UUID, limit: int, queues: list[str] | None = None,
                       lease_seconds: float | None = None, starting: int | None = None,
                       wait: bool = True) -> list[ClaimedJob] | None:
    """Claim up to `limit` jobs that flow control applies to, within every limit, and return them.

    Those are the jobs with a concurrency key and the jobs of queues with a
    limit of their own, which claim_jobs leaves alone. Limits hold across
    every worker: limited claims take turns on one advisory lock, and each
    counts the held jobs and logged starts it must stay within. Jobs under
    a rate limit are claimed only for the `starting` free slots. Returned
    in the order to run them, started ones first. With `wait` False, return
    None at once if another limited claim holds the turn.
    """
    if limit <= 0:
        return []
    params = {
        "limit": limit, "worker": worker_id, "queues": queues or None,
        "lease": lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS"),
        "start": limit if starting is None else max(0, min(starting, limit)),
    }
    with transaction.atomic(), statement_cursor() as cursor:
        cursor.execute(query("lock_limited_claims" if wait else "try_lock_limited_claims"), {"lock": LIMITED_CLAIM_LOCK})
        if not wait and not cursor.fetchone()[0]:
            return None
        cursor.execute(query("claim_limited_jobs"), params)
        claimed = [ClaimedJob(*row) for row in cursor.fetchall()]
    claimed.sort(key=lambda job: (not job.started, -job.priority, job.due, job.id))
    _announce_claimed(claimed)
    return claimed


def start_jobs(started: list[tuple[ClaimedJob, float]]) -> set[int]:
    """Store the start of claimed jobs that slots started, each (job, seconds ago); return those stored.

    A job missing from the result was no longer held (cancelled, rescued),
    or its outcome, which stores the start too, was written first.
    """
    if not started:
        return set()
    batch = json.dumps([{"id": job.id, "token": str(job.lease_token), "ago": max(0.0, ago)} for job, ago in started])
    with statement_cursor() as cursor:
        cursor.execute(query("start_jobs"), {"batch": batch})
        rows = cursor.fetchall()
    events.jobs_changed([row[0] for row in rows], [row[1] for row in rows], JobStatus.RUNNING, 0)
    return {row[0] for row in rows}

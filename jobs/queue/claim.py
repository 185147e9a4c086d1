"""Claiming: a worker takes ready jobs, leases them, and reports when its slots start them."""

import json
import math
import uuid
from collections.abc import Iterable
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
               starting: int | None = None, controlled: Iterable[str] | None = None) -> list[ClaimedJob]:
    """Claim up to `limit` ready jobs for `worker_id` and return them, in the order to run them.

    Highest priority first, then oldest run_at. The first `starting` of
    them (all by default) are `running` at once, for slots that are free
    now; the others are `claimed`, waiting for a slot, their attempt not
    counted. One statement in one short transaction (queries.sql:
    claim_jobs). `start` (from the worker's ClaimFront) names the
    priorities to read, each with the epoch second it starts at, skipping
    jobs due before; without it, the claim reads every priority that has
    jobs (ready_priorities) from the start. `controlled` names the queues
    the caller knows to be paused or limited (a worker's FlowState), which
    the scans skip; None reads them first. A job of any queue controlled now
    is left alone either way.
    """
    if limit <= 0:
        return []
    if start is None:
        start = dict.fromkeys({*NAMED_PRIORITIES, *ready_priorities()}, -math.inf)
    priorities = sorted(start, reverse=True)
    params = {
        "priorities": priorities, "fronts": [start[p] for p in priorities], "limit": limit, "worker": worker_id,
        "lease": _lease(lease_seconds),
        "queues": queues or None, "start": limit if starting is None else max(0, starting),
        "controlled": _controlled(controlled),
    }
    with transaction.atomic(), statement_cursor() as cursor:
        cursor.execute(query("claim_jobs"), params)
        claimed = [ClaimedJob(*row) for row in cursor.fetchall()]
    _announce_claimed(claimed)
    return claimed


def _announce_claimed(claimed: list[ClaimedJob]) -> None:
    """Put `claimed` in the order to run them, decode their payloads and announce their new status."""
    # An UPDATE returns its rows in no set order: started first, then highest priority, then due time.
    claimed.sort(key=lambda job: (not job.started, -job.priority, job.due, job.id))
    for job in claimed:
        if isinstance(job.payload, str):  # Django registers jsonb as text for psycopg
            job.payload = json.loads(job.payload)
    for status, started in ((JobStatus.RUNNING, True), (JobStatus.CLAIMED, False)):
        jobs = [job for job in claimed if job.started is started]
        events.jobs_changed([job.id for job in jobs], [job.owner_id for job in jobs], status, 0)


def _lease(seconds: float | None) -> float:
    """A claim's lease in seconds: the one given, else JOBS_LEASE_SECONDS."""
    return seconds if seconds is not None else conf.get("JOBS_LEASE_SECONDS")


def _controlled(queues: Iterable[str] | None) -> list[str]:
    """The controlled queues a claim's scans skip: those given (a worker's FlowState), else read now."""
    return sorted(flow_state().controlled if queues is None else queues)


# The advisory lock limited claims take turns on (lock_limited_claims): "skipjack" in ASCII.
LIMITED_CLAIM_LOCK = 0x736B69706A61636B


@dataclass(frozen=True, slots=True)
class FlowState:
    """What flow control asks of a worker now (queries.sql: flow_state)."""

    paused: frozenset[str] = frozenset()
    # Queues with a concurrency or rate limit of their own: only the limited claim takes their jobs.
    limited: frozenset[str] = frozenset()
    # How many keys have a job waiting, counted up to WAITING_KEYS_COUNTED.
    waiting_keys: int = 0
    # Whether any key is under a rate limit (a KeyLimit row's, or a queue's key rate).
    key_rates: bool = False

    @property
    def keyed_waiting(self) -> bool:
        """Whether any job with a concurrency key waits."""
        return self.waiting_keys > 0

    @property
    def controlled(self) -> frozenset[str]:
        """The queues the plain claim leaves alone: paused, or with limits of their own."""
        return self.paused | self.limited

    def limited_work(self, queues: list[str] | None) -> bool:
        """Return whether the limited claim may find jobs for a worker serving `queues` (None: all)."""
        if self.keyed_waiting:
            return True
        return self.controls(queues)

    def controls(self, queues: list[str] | None) -> bool:
        """Return whether a queue of `queues` (None: all) has a concurrency or rate limit of its own."""
        return bool(self.limited if queues is None else self.limited.intersection(queues))

    def keyed_only(self, queues: list[str] | None) -> bool:
        """Return whether claim_keyed_jobs can serve the limited work of a worker serving `queues`.

        It takes keyed jobs under concurrency limits only: no key may be
        under a rate, and no queue of the worker's have limits of its own.
        """
        return not self.key_rates and not self.controls(queues)


# flow_state counts the waiting keys up to this many (one index probe each). Past it the
# keyed fast path cannot tell that its window held every waiting key, so the full claim serves.
WAITING_KEYS_COUNTED = 1000


def flow_state() -> FlowState:
    """Read what flow control asks of workers now: one short statement."""
    with statement_cursor() as cursor:
        cursor.execute(query("flow_state"), {"keys": WAITING_KEYS_COUNTED})
        paused, limited, waiting_keys, key_rates = cursor.fetchone()
    return FlowState(paused=frozenset(paused), limited=frozenset(limited), waiting_keys=waiting_keys,
                     key_rates=key_rates)


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
        "lease": _lease(lease_seconds),
        "start": limit if starting is None else max(0, min(starting, limit)),
    }
    with transaction.atomic(), statement_cursor() as cursor:
        if not _take_turn(cursor, wait=wait):
            return None
        cursor.execute(query("claim_limited_jobs"), params)
        claimed = [ClaimedJob(*row) for row in cursor.fetchall()]
    _announce_claimed(claimed)
    return claimed


def _take_turn(cursor, *, wait: bool) -> bool:
    """Take the limited claims' turn for this transaction; with `wait` False, give way if another has it."""
    cursor.execute(query("lock_limited_claims" if wait else "try_lock_limited_claims"), {"lock": LIMITED_CLAIM_LOCK})
    return wait or cursor.fetchone()[0]


def claim_keyed_jobs(*, worker_id: uuid.UUID, limit: int, queues: list[str] | None = None,
                     lease_seconds: float | None = None, starting: int | None = None,
                     window: int | None = None, controlled: Iterable[str] | None = None,
                     wait: bool = True) -> tuple[list[ClaimedJob], int] | None:
    """Claim up to `limit` keyed jobs under concurrency limits only, in claim order; return them and the keys read.

    The limited claim's fast path (queries.sql: claim_keyed_jobs), under the
    same advisory lock: it reads the first `window` keyed jobs (4 x `limit`
    by default) in priority and due order, and takes each while its key has
    room. It leaves rated keys and controlled queues to claim_limited_jobs,
    and so does a key with no job among those read: when fewer than `limit`
    jobs came back and it read fewer keys than wait, claim_limited_jobs may
    find more. `controlled` is as for claim_jobs. With `wait` False, return
    None at once if another limited claim holds the turn.
    """
    if limit <= 0:
        return [], 0
    params = {
        "limit": limit, "worker": worker_id, "window": window or 4 * limit, "queues": queues or None,
        "controlled": _controlled(controlled),
        "lease": _lease(lease_seconds),
        "start": limit if starting is None else max(0, min(starting, limit)),
    }
    with transaction.atomic(), statement_cursor() as cursor:
        if not _take_turn(cursor, wait=wait):
            return None
        cursor.execute(query("claim_keyed_jobs"), params)
        rows = cursor.fetchall()
    claimed = [ClaimedJob(*row[:-1]) for row in rows if row[0] is not None]
    _announce_claimed(claimed)
    return claimed, rows[0][-1]


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

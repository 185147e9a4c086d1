"""Every change of a job's state happens here.

Each transition is one guarded UPDATE: it names the statuses it may start
from (and, for a worker's writes, the lease token it holds) and treats zero
updated rows as "not allowed" or "no longer ours". Nothing reads a job,
changes it in Python and saves it back. Each transition is announced
through jobs.events once its transaction commits.

    queued/scheduled/retrying --claim--> running --complete--> completed
                                          running --fail--> retrying | dead
                                          running --release--> queued      (graceful shutdown)
                                          running --rescue--> retrying | dead  (lease expired; backs off)
    queued/scheduled/retrying --expire--> expired
    any unfinished --cancel--> cancelled
    dead/cancelled/expired --requeue--> queued
    scheduled/retrying --retry_now--> queued
"""

import functools
import json
import logging
import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from jobs import conf, events, retry
from jobs.counters import COUNTER_TABLE, finished_sql, tally_sql
from jobs.db import statement_cursor
from jobs.errors import IllegalTransition, OwnerAtCapacity
from jobs.models import ACTIVE_STATUSES, Job, JobStatus, Priority, Worker
from jobs.registry import check_owner, get_handler, staff_only_types, unstorable, validate_payload
from jobs.tracing import current_trace_id

logger = logging.getLogger("jobs.queue")

NOTIFY_CHANNEL = "skipjack_jobs"
JOB_TABLE = Job._meta.db_table
# Literals, not a parameter: only then can PostgreSQL match the partial index by owner and status.
_ACTIVE_SQL = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)

# The longest delay, timeout or TTL accepted: a year.
MAX_SECONDS = 365 * 24 * 3600.0

# Statuses from which a dead-letter style requeue is legal.
REQUEUEABLE_STATUSES = (JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED)


_PRIORITIES = {int(choice): choice for choice in Priority}
_PRIORITY_LABELS = {choice.label: choice for choice in Priority}


def parse_priority(value: Any) -> int:
    """Return the Priority for "high"/"normal"/"low", 0/1/2 or a Priority; raise ValueError otherwise."""
    if isinstance(value, str) and value.lower() in _PRIORITY_LABELS:
        return _PRIORITY_LABELS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in _PRIORITIES:
        return _PRIORITIES[value]
    raise ValueError(f"Unknown priority {value!r}; use high, normal or low.")


def _job_options(type_name, *, owner, payloads, queue, priority, max_retries, timeout, run_at, delay, ttl, now):
    handler = get_handler(type_name)
    for payload in payloads:
        check_owner(handler, owner, payload)
    if run_at is not None and delay is not None:
        raise ValueError("Give run_at or delay, not both.")
    if max_retries is not None and not 0 <= max_retries <= 100:
        raise ValueError("max_retries must be between 0 and 100.")
    for name, value, allow_zero in (("timeout", timeout, False), ("ttl", ttl, False), ("delay", delay, True)):
        if value is not None and not (math.isfinite(value) and (value > 0 or allow_zero and value == 0) and value <= MAX_SECONDS):
            raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number of seconds up to {MAX_SECONDS:g}.")
    if delay is not None:
        run_at = now + timedelta(seconds=float(delay))
    if max_retries is None:
        max_retries = handler.max_retries if handler.max_retries is not None else conf.get("JOBS_DEFAULT_MAX_RETRIES")
    options = {
        "owner": owner,
        "queue": queue or conf.get("JOBS_DEFAULT_QUEUE"),
        "priority": parse_priority(priority),
        "max_retries": max_retries,
        "timeout": timeout,
        "status": JobStatus.SCHEDULED if run_at and run_at > now else JobStatus.QUEUED,
        "expires_at": now + timedelta(seconds=float(ttl)) if ttl is not None else None,
    }
    if run_at is not None:  # otherwise the database's clock sets it
        options["run_at"] = run_at
    return options


def _check_storable(**options) -> None:
    """Raise ValueError naming the first text option that PostgreSQL cannot store."""
    for name, value in options.items():
        problem = unstorable(value) if isinstance(value, str) else None
        if problem:
            raise ValueError(f"{name} must not contain {problem}.")


def _notify(queue: str) -> None:
    # Delivered at commit, and only once per transaction and queue however
    # many jobs it inserts. NOTIFY takes a global lock at commit, so bulk
    # inserts send one.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, queue])


@functools.cache
def _insert_sql(*, single: bool, capped: bool) -> str:
    """Return the statement of _insert_jobs, for one payload or an array of them, with or without the cap.

    Separate texts rather than one with optional parts, so that what a
    caller does not need costs nothing to plan: a cap given as NULL, and so
    planned away, still cost 13 % of the insert's time.
    """
    rows = "(VALUES (%(payloads)s::text, 1)) AS u(p, n)" if single else \
        "unnest(%(payloads)s::text[]) WITH ORDINALITY AS u(p, n)"
    cap = f"""
        WHERE (
            SELECT count(*) FROM (
                SELECT 1 FROM {JOB_TABLE} WHERE owner_id = %(owner)s AND status IN ({_ACTIVE_SQL})
                LIMIT greatest(%(max_active)s::integer, 0)
            ) AS unfinished
        ) + %(adding)s::integer <= %(max_active)s::integer
    """ if capped else ""
    return f"""
        WITH inserted AS (
            INSERT INTO {JOB_TABLE} (owner_id, queue, type, payload, priority, status, attempts, max_retries,
                run_at, timeout, expires_at, unique_key, idempotency_key, trace_id, created_at, error, history,
                progress)
            SELECT %(owner)s, %(queue)s, %(type)s, p::jsonb, %(priority)s, %(status)s, 0, %(max_retries)s,
                   coalesce(%(run_at)s, statement_timestamp()), %(timeout)s, %(expires_at)s, %(unique_key)s,
                   %(idempotency_key)s, %(trace_id)s, statement_timestamp(), '', '[]'::jsonb, 0
            FROM {rows}
            {cap}
            ORDER BY n
            RETURNING id, run_at, created_at
        ), counted AS (
            INSERT INTO {COUNTER_TABLE} (name, type, queue, value)
            SELECT 'enqueued', %(type)s, %(queue)s, count(*) FROM inserted HAVING count(*) > 0
        )
        SELECT id, run_at, created_at, (SELECT pg_notify(%(channel)s, %(queue)s) WHERE %(due)s)
        FROM inserted ORDER BY id
    """


def _insert_jobs(type: str, payloads: list, o: dict, *, trace_id: str, unique_key=None,
                 idempotency_key=None, owner_max_active=None) -> list[tuple[int, datetime, datetime]]:
    """Insert one job per payload, count them and wake the workers, in one statement.

    Return (id, run_at, created_at) per job, in payload order. One statement
    is one round trip, and outside a transaction one commit: the insert, its
    count and the NOTIFY (sent at commit, only for jobs due now) stand or
    fall together. With `owner_max_active`, insert nothing (and return [])
    if the owner's unfinished jobs and these would be more than that.
    """
    single = len(payloads) == 1
    params = {
        "owner": getattr(o["owner"], "pk", o["owner"]), "queue": o["queue"], "type": type,
        "priority": o["priority"], "status": o["status"], "max_retries": o["max_retries"],
        "run_at": o.get("run_at"), "timeout": o["timeout"], "expires_at": o["expires_at"],
        "unique_key": unique_key, "idempotency_key": idempotency_key, "trace_id": trace_id,
        "payloads": json.dumps(payloads[0]) if single else [json.dumps(p) for p in payloads],
        "channel": NOTIFY_CHANNEL, "due": o["status"] == JobStatus.QUEUED,
    }
    capped = owner_max_active is not None
    if capped:
        params.update(max_active=owner_max_active, adding=len(payloads))
    # Without the cap the insert reads no table, and its prepared plan fits
    # any table (jobs.db.plan_every_run). The cap reads the owner's jobs, so
    # it is planned afresh each time, with its values in the text.
    with (connection.cursor() if capped else statement_cursor()) as cursor:
        cursor.execute(_insert_sql(single=single, capped=capped), params)
        return [row[:3] for row in cursor.fetchall()]


def _announce_enqueued(*, type: str, queue: str, status: str, ids: list[int], owner_id, trace_id: str) -> None:
    """Log the new jobs and tell the dashboards, once the insert commits."""
    events.jobs_changed(ids, [owner_id] * len(ids), status, 0, created=True)
    if not logger.isEnabledFor(logging.INFO):
        return
    fields = {"event": "submit", "type": type, "queue": queue, "attempt": 0, "trace_id": trace_id, "user_id": owner_id}
    if len(ids) == 1:
        fields["job_id"] = ids[0]
        message = f"submit {type}#{ids[0]}"
    else:  # one line for a bulk insert, not one per job
        fields.update(count=len(ids), first_job_id=ids[0])
        message = f"submit {len(ids)} {type} jobs from #{ids[0]}"
    transaction.on_commit(lambda: logger.info(message, extra=fields))


def enqueue(
    type: str,
    payload: Any = None,
    *,
    owner=None,
    queue: str | None = None,
    priority: Any = Priority.NORMAL,
    max_retries: int | None = None,
    timeout: float | None = None,
    run_at: datetime | None = None,
    delay: float | None = None,
    ttl: float | None = None,
    unique_key: str | None = None,
    idempotency_key: str | None = None,
    trace_id: str = "",
    owner_max_active: int | None = None,
) -> Job:
    """Validate and store a job; return it.

    The insert joins the caller's transaction: if that transaction rolls
    back, the job never existed. With `unique_key`, an unfinished job of the
    same owner and key is returned instead of a new one, with its attribute
    `deduplicated` set to True. With `owner_max_active`, raise
    OwnerAtCapacity instead of storing a job that would be more unfinished
    jobs of the owner than that; the count is the insert's own, so a caller
    that must keep the cap against concurrent enqueues locks something of
    the owner's first (jobs.submission does).

    Raise UnknownJobType or PayloadError for a job that must not be stored,
    and ValueError for a bad option.
    """
    payload = validate_payload(type, {} if payload is None else payload)
    _check_storable(queue=queue, unique_key=unique_key, idempotency_key=idempotency_key, trace_id=trace_id)
    now = timezone.now()
    options = _job_options(
        type, owner=owner, payloads=[payload], queue=queue, priority=priority, max_retries=max_retries,
        timeout=timeout, run_at=run_at, delay=delay, ttl=ttl, now=now,
    )
    trace_id = trace_id or current_trace_id() or uuid.uuid4().hex
    keys = {"trace_id": trace_id, "unique_key": unique_key, "idempotency_key": idempotency_key,
            "owner_max_active": owner_max_active}
    if unique_key is None:
        rows = _insert_jobs(type, [payload], options, **keys)
    else:
        try:
            # A savepoint, so a duplicate key leaves the caller's transaction usable.
            with transaction.atomic():
                rows = _insert_jobs(type, [payload], options, **keys)
        except IntegrityError:
            existing = Job.objects.active().filter(owner=owner, unique_key=unique_key).first()
            if existing is not None:
                existing.deduplicated = True
                return existing
            # It finished between the insert and this read: try once more.
            rows = _insert_jobs(type, [payload], options, **keys)
    if not rows:
        raise OwnerAtCapacity(f"The owner already has {owner_max_active} or more unfinished jobs.")
    ((job_id, run_at_db, created_at),) = rows
    options.update(run_at=run_at_db, created_at=created_at)
    job = Job(id=job_id, type=type, payload=payload, unique_key=unique_key, idempotency_key=idempotency_key,
              trace_id=trace_id, **options)
    job._state.adding = False
    job.deduplicated = False
    _announce_enqueued(type=type, queue=job.queue, status=job.status, ids=[job.pk], owner_id=job.owner_id,
                       trace_id=trace_id)
    return job


def enqueue_many(type: str, payloads: Iterable[Any], *, owner=None, queue=None, priority=Priority.NORMAL,
                 max_retries=None, timeout=None, run_at=None, delay=None, ttl=None, trace_id: str = "") -> list[int]:
    """Validate and store one job per payload, all of `type`, in one INSERT; return their ids.

    Like enqueue(), the insert joins the caller's transaction.
    """
    payloads = [validate_payload(type, {} if p is None else p) for p in payloads]
    if not payloads:
        return []
    _check_storable(queue=queue, trace_id=trace_id)
    now = timezone.now()
    o = _job_options(
        type, owner=owner, payloads=payloads, queue=queue, priority=priority, max_retries=max_retries,
        timeout=timeout, run_at=run_at, delay=delay, ttl=ttl, now=now,
    )
    trace_id = trace_id or current_trace_id() or uuid.uuid4().hex
    ids = [job_id for job_id, _, _ in _insert_jobs(type, payloads, o, trace_id=trace_id)]
    _announce_enqueued(type=type, queue=o["queue"], status=o["status"], ids=ids,
                       owner_id=getattr(o["owner"], "pk", o["owner"]), trace_id=trace_id)
    return ids


# --- The worker's side --------------------------------------------------------


@dataclass(slots=True)
class ClaimedJob:
    """A job a worker holds the lease of, as the claim returned it."""

    id: int
    type: str
    payload: Any
    attempts: int
    max_retries: int
    timeout: float | None
    trace_id: str
    queue: str
    lease_token: uuid.UUID
    owner_id: int | None
    # Seconds between when the job was due (its run_at) and this claim, by the database's clock.
    wait_seconds: float
    priority: int
    # run_at as seconds since the epoch: where ClaimFront moves to.
    due: float


_CLAIM_COLUMNS = (
    "j.id, j.type, j.payload, j.attempts, j.max_retries, j.timeout, j.trace_id, j.queue, j.lease_token, j.owner_id,"
    " extract(epoch FROM j.started_at - j.run_at)::float8, j.priority, extract(epoch FROM j.run_at)::float8"
)


class ClaimFront:
    """Where a worker's claims start reading job_claim_idx, per priority.

    The claim index keeps an entry for every job that left the ready
    statuses until VACUUM removes it, and all of them sit in front of the
    oldest ready job. A claim that reads from the start walks through them
    all: after a million jobs and no vacuum, 2,600 index pages and 10 ms per
    claim, more with every job. So a claim starts LOOKBACK seconds before
    the newest job this worker claimed so far. Every job due before that was
    claimed already, unless its transaction committed more than LOOKBACK
    after it began (a job is due from its INSERT, visible from its COMMIT).
    For those, a sweep from the very start runs every poll interval, and
    less often, up to MAX_SWEEP_INTERVAL, while sweeps find no such job.
    """

    LOOKBACK = 2.0
    MAX_SWEEP_INTERVAL = 10.0

    def __init__(self, sweep_interval: float):
        self.sweep_interval = self.base_interval = sweep_interval
        self.next_sweep = 0.0
        self.front: dict[int, float] = {}

    def start(self, now: float) -> dict[int, float] | None:
        """Return where the next claim starts per priority, or None for a sweep from the start."""
        if now >= self.next_sweep:
            return None
        return {p: self.front.get(p, -math.inf) - self.LOOKBACK for p in Priority}

    def claimed(self, jobs: list["ClaimedJob"], *, swept: bool, now: float) -> None:
        """Move the front past `jobs`; after a sweep, schedule the next one."""
        if swept:
            behind = any(job.due < self.front.get(job.priority, -math.inf) - self.LOOKBACK for job in jobs)
            self.sweep_interval = (
                self.base_interval if behind else min(self.sweep_interval * 2, self.MAX_SWEEP_INTERVAL)
            )
            self.next_sweep = now + self.sweep_interval
        for job in jobs:
            if job.due > self.front.get(job.priority, -math.inf):
                self.front[job.priority] = job.due


def _ready_filter(queues: list[str] | None) -> str:
    clause = "status IN ('queued', 'scheduled', 'retrying') AND run_at <= statement_timestamp() AND (expires_at IS NULL OR expires_at > statement_timestamp())"
    if queues:
        clause += " AND queue = ANY(%(queues)s)"
    return clause


def priority_order(rng: random.Random | None = None) -> list[int]:
    """Return the order in which one claim serves the priorities.

    The first priority is drawn with JOBS_PRIORITY_WEIGHTS (60/30/10 by
    default), the others follow in their natural order. High priority thus
    goes first in most claims, but a steady stream of high jobs cannot
    starve normal or low ones: each still leads its share of the claims.
    """
    weights = conf.get("JOBS_PRIORITY_WEIGHTS")
    first = (rng or random).choices(list(Priority), weights=weights)[0]
    return [first, *(p for p in Priority if p != first)]


def claim_jobs(*, worker_id: uuid.UUID, limit: int, queues: list[str] | None = None,
               lease_seconds: float | None = None, order: list[int] | None = None,
               start: dict[int, float] | None = None) -> list[ClaimedJob]:
    """Claim up to `limit` ready jobs for `worker_id` and return them, now running.

    One statement in one short transaction. Rows other transactions hold
    locked are skipped rather than waited for, so any number of workers can
    claim at once without blocking each other or claiming a row twice.
    `start` (from ClaimFront) skips jobs of a priority due before the given
    epoch second; by default every ready job is a candidate.
    """
    if limit <= 0:
        return []
    order = order or priority_order()
    where = _ready_filter(queues)
    # Each priority gets its own index range scan on job_claim_idx (ordered
    # by run_at), filling what the previous ones left of the limit. The
    # locking sub-selects are MATERIALIZED CTEs so Postgres evaluates each
    # exactly once: inlined into the UPDATE, a LIMITed FOR UPDATE sub-select
    # may be re-run and claim more than `limit` rows (PG bug #15715).
    # The claimed ids are matched as an array, so whatever the row estimates
    # the UPDATE finds each by its primary key. As a join it could hash the
    # whole table: a generic plan, which cannot know `limit`, guesses a tenth
    # of the queue, and with a deep queue that hash spilled to disk.
    sql = f"""
        WITH p1 AS MATERIALIZED (
            SELECT id FROM {JOB_TABLE} WHERE {where} AND priority = %(p1)s AND run_at >= to_timestamp(%(from1)s)
            ORDER BY run_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
        ), p2 AS MATERIALIZED (
            SELECT id FROM {JOB_TABLE} WHERE {where} AND priority = %(p2)s AND run_at >= to_timestamp(%(from2)s)
            ORDER BY run_at, id LIMIT %(limit)s - (SELECT count(*) FROM p1) FOR UPDATE SKIP LOCKED
        ), p3 AS MATERIALIZED (
            SELECT id FROM {JOB_TABLE} WHERE {where} AND priority = %(p3)s AND run_at >= to_timestamp(%(from3)s)
            ORDER BY run_at, id LIMIT %(limit)s - (SELECT count(*) FROM p1) - (SELECT count(*) FROM p2)
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {JOB_TABLE} AS j
        SET status = 'running', attempts = j.attempts + 1, leased_by = %(worker)s,
            lease_token = gen_random_uuid(), lease_expires_at = statement_timestamp() + make_interval(secs => %(lease)s),
            started_at = statement_timestamp(), finished_at = NULL, progress = 0
        WHERE j.id = ANY(ARRAY(SELECT id FROM p1 UNION ALL SELECT id FROM p2 UNION ALL SELECT id FROM p3))
        RETURNING {_CLAIM_COLUMNS}
    """
    params = {
        "p1": order[0], "p2": order[1], "p3": order[2], "limit": limit, "worker": worker_id,
        **{f"from{n}": (start or {}).get(p, -math.inf) for n, p in enumerate(order, 1)},
        "lease": lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS"),
        "queues": queues,
    }
    with transaction.atomic(), statement_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    claimed = [ClaimedJob(*row) for row in rows]
    for job in claimed:
        if isinstance(job.payload, str):  # Django registers jsonb as text for psycopg
            job.payload = json.loads(job.payload)
    events.jobs_changed([job.id for job in claimed], [job.owner_id for job in claimed], JobStatus.RUNNING, 0)
    return claimed


# Which rows a batched write to running jobs (complete, release, renew) may
# touch: those in the batch that are still running under the given lease.
# The status test is wrapped in IS TRUE, which means the same in a WHERE, so
# that the planner cannot match it to the partial index job_lease_idx. That
# index still holds an entry for every job that left `running` since the last
# vacuum, and the plan it invites (a bitmap scan of all of them, hashed
# against the batch) costs more with every job finished: 5 ms instead of 1 ms
# per 110 completions after 16k jobs. Each row is found by its primary key.
_HELD_BY_LEASE = "j.id = c.id AND j.lease_token = c.token AND (j.status = 'running') IS TRUE"


_HISTORY_ENTRY = """jsonb_build_array(jsonb_build_object(
    'attempt', j.attempts, 'worker', j.leased_by, 'started_at', j.started_at,
    'finished_at', statement_timestamp(), 'outcome', {outcome}, 'error', {error}, 'traceback', {traceback}))"""


def complete_jobs(completions: list[tuple]) -> set[int]:
    """Mark running jobs completed with their results, in one statement.

    `completions` holds (job_id, lease_token, result) triples, or
    (job_id, lease_token, result, run_seconds) to observe how long each
    handler ran. Return the ids that were completed; a job missing from it
    had lost its lease (rescued or cancelled) and keeps whatever state it
    has now.
    """
    if not completions:
        return set()
    # One JSON document carries the batch: encoded in C here and decoded by
    # PostgreSQL, where four parameter arrays cost psycopg a Python call per element.
    batch = json.dumps(
        [{"id": c[0], "token": str(c[1]), "result": c[2], "run_s": c[3] if len(c) > 3 else None} for c in completions],
        allow_nan=False,
    )
    history = _HISTORY_ENTRY.format(outcome="'completed'", error="''", traceback="''")
    counted = tally_sql("done", ["'completed'"])
    with statement_cursor() as cursor:
        # The counters are written by the same statement, so they count
        # exactly the jobs that were still ours.
        cursor.execute(
            f"""
            WITH done AS (
                UPDATE {JOB_TABLE} AS j
                SET status = 'completed', result = c.result, finished_at = statement_timestamp(), progress = 100,
                    leased_by = NULL, lease_token = NULL, lease_expires_at = NULL,
                    history = j.history || {history}
                FROM jsonb_to_recordset(%s::jsonb) AS c(id bigint, token uuid, result jsonb, run_s float8)
                WHERE {_HELD_BY_LEASE}
                RETURNING j.id, j.owner_id, j.status, j.type, j.queue, c.run_s,
                          extract(epoch FROM j.started_at - j.run_at)::float8 AS wait_s
            ), counted AS ({counted}), finished AS ({finished_sql("done")})
            SELECT id, owner_id FROM done
            """,
            [batch],
        )
        rows = cursor.fetchall()
    ids = [row[0] for row in rows]
    events.jobs_changed(ids, [row[1] for row in rows], JobStatus.COMPLETED, 100)
    return set(ids)


def complete_job(job: ClaimedJob, result: Any) -> bool:
    """Mark a running job completed. Return False if its lease was lost."""
    return bool(complete_jobs([(job.id, job.lease_token, result)]))


@dataclass(slots=True)
class Failure:
    """A failed attempt of a running job, as the worker reports it."""

    job: ClaimedJob
    error: str
    traceback: str = ""
    permanent: bool = False
    # How the attempt ended, as the job's history records it: failed, timeout, interrupted.
    outcome: str = "failed"
    run_seconds: float | None = None  # how long the handler ran, for the run-time histogram


def fail_jobs(failures: list[Failure]) -> dict[int, str]:
    """Record failed attempts of running jobs, in one statement; return each recorded job's new status.

    Each job goes to `retrying` after its backoff, or to `dead` (the DLQ)
    when the failure is permanent or its retries are used up, as
    jobs.retry.decide says. A job missing from the result had lost its
    lease (rescued or cancelled) and keeps whatever state it has now.
    """
    if not failures:
        return {}
    now = timezone.now()
    rows = []
    for failure in failures:
        job = failure.job
        decision = retry.decide(type_name=job.type, attempts=job.attempts, max_retries=job.max_retries,
                                permanent=failure.permanent, now=now)
        # The delay, not decision.run_at: it counts from the database's clock.
        rows.append({"id": job.id, "token": str(job.lease_token), "status": decision.status, "delay": decision.delay,
                     "error": failure.error, "traceback": failure.traceback[-20000:], "outcome": failure.outcome,
                     "run_s": failure.run_seconds, "wait_s": job.wait_seconds})
    history = _HISTORY_ENTRY.format(outcome="c.outcome", error="c.error", traceback="c.traceback")
    counted = tally_sql("failed", ["'failed'", "CASE WHEN status = 'dead' THEN 'dead' ELSE 'retried' END"])
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH failed AS (
                UPDATE {JOB_TABLE} AS j
                SET status = c.status, error = c.error,
                    run_at = CASE WHEN c.status = 'dead' THEN j.run_at
                                  ELSE statement_timestamp() + make_interval(secs => c.delay) END,
                    finished_at = CASE WHEN c.status = 'dead' THEN statement_timestamp() END,
                    leased_by = NULL, lease_token = NULL, lease_expires_at = NULL,
                    history = j.history || {history}
                FROM jsonb_to_recordset(%s::jsonb) AS c(id bigint, token uuid, status text, delay float8, error text,
                                                        traceback text, outcome text, run_s float8, wait_s float8)
                WHERE {_HELD_BY_LEASE}
                RETURNING j.id, j.type, j.queue, j.status, j.owner_id, c.run_s, c.wait_s
            ), counted AS ({counted}), finished AS ({finished_sql("failed")})
            SELECT id, status, owner_id FROM failed
            """,
            [json.dumps(rows)],
        )
        recorded = cursor.fetchall()
    for status in (JobStatus.RETRYING, JobStatus.DEAD):
        moved = [(job_id, owner_id) for job_id, new_status, owner_id in recorded if new_status == status]
        if moved:
            events.jobs_changed([m[0] for m in moved], [m[1] for m in moved], status)
    return {job_id: status for job_id, status, _ in recorded}


def fail_job(job: ClaimedJob, *, error: str, traceback: str = "", permanent: bool = False,
             outcome: str = "failed", run_seconds: float | None = None) -> str | None:
    """Record one failed attempt (see fail_jobs); return the job's new status, or None if its lease was lost."""
    statuses = fail_jobs([Failure(job, error, traceback, permanent, outcome, run_seconds)])
    return statuses.get(job.id)


def release_jobs(jobs: list[ClaimedJob]) -> int:
    """Put running jobs back in the queue without counting their attempt.

    Used by a worker that stops before it could finish them. Return how
    many were still ours to release.
    """
    if not jobs:
        return 0
    history = _HISTORY_ENTRY.format(outcome="'released'", error="'worker shut down'", traceback="''")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {JOB_TABLE} AS j
            SET status = 'queued', attempts = greatest(j.attempts - 1, 0), run_at = statement_timestamp(), progress = 0,
                leased_by = NULL, lease_token = NULL, lease_expires_at = NULL, started_at = NULL,
                history = j.history || {history}
            FROM unnest(%s::bigint[], %s::uuid[]) AS c(id, token)
            WHERE {_HELD_BY_LEASE}
            RETURNING j.id
            """,
            [[j.id for j in jobs], [j.lease_token for j in jobs]],
        )
        released = {row[0] for row in cursor.fetchall()}
    if released:
        _notify_queues({j.queue for j in jobs})
        back = [j for j in jobs if j.id in released]
        events.jobs_changed([j.id for j in back], [j.owner_id for j in back], JobStatus.QUEUED, 0)
    return len(released)


def _notify_queues(queues: Iterable[str]) -> None:
    for queue in queues:
        _notify(queue)


def set_progress(job: ClaimedJob, percent: int) -> bool:
    """Record a running job's progress (0-100). Return False if its lease was lost."""
    percent = max(0, min(100, int(percent)))
    updated = Job.objects.filter(pk=job.id, status=JobStatus.RUNNING, lease_token=job.lease_token).update(
        progress=percent
    )
    if updated:
        events.jobs_changed([job.id], [job.owner_id], JobStatus.RUNNING, percent)
    return bool(updated)


@dataclass(slots=True)
class RescuedJob:
    """A job taken back from a worker that stopped renewing its lease."""

    id: int
    status: str  # its new status: retrying or dead
    queue: str
    owner_id: int | None
    type: str
    attempts: int
    trace_id: str


def rescue_expired_leases(limit: int = 1000) -> list[RescuedJob]:
    """Take back running jobs whose worker stopped renewing their lease.

    The lost attempt counts, and the job backs off like any failed attempt
    (jobs.retry.decide): it goes to `retrying`, due after its backoff, or,
    if that was its last attempt, to `dead`. So a job that kills its worker
    is not run again at once, over and over. Its old lease token is cleared,
    so the worker that lost it, should it wake up, can no longer write to
    it. Return the rescued jobs.
    """
    history = _HISTORY_ENTRY.format(outcome="'lost'", error="'lease expired'", traceback="''")
    counted = tally_sql("rescued", ["'failed'", "CASE WHEN status = 'dead' THEN 'dead' ELSE 'retried' END"])
    with transaction.atomic(), connection.cursor() as cursor:
        # Walk job_lease_idx in order, never as a bitmap. The index keeps an
        # entry for every job that left `running` since the last vacuum, all
        # with a lease that has "expired". A plain index scan marks each one
        # dead the first time it meets it and skips it from then on; a bitmap
        # scan marks nothing and re-reads them all, every second in every
        # worker (390 ms per call after 600k jobs, with autovacuum off).
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        # SKIP LOCKED: a job being completed right now by its (late) worker
        # is left alone, and two rescuers never fight over the same row. The
        # rows stay locked until the UPDATE below, in this transaction.
        cursor.execute(
            f"""
            SELECT id, type, attempts, max_retries, extract(epoch FROM started_at - run_at)::float8
            FROM {JOB_TABLE}
            WHERE status = 'running' AND lease_expires_at < statement_timestamp()
            ORDER BY lease_expires_at LIMIT %s FOR UPDATE SKIP LOCKED
            """,
            [limit],
        )
        stale = cursor.fetchall()
        if not stale:
            return []
        now = timezone.now()
        decisions = [retry.decide(type_name=type_name, attempts=attempts, max_retries=max_retries, now=now)
                     for _, type_name, attempts, max_retries, _ in stale]
        cursor.execute(
            f"""
            WITH rescued AS (
                UPDATE {JOB_TABLE} AS j
                SET status = d.status,
                    finished_at = CASE WHEN d.status = 'dead' THEN statement_timestamp() END,
                    run_at = CASE WHEN d.status = 'dead' THEN j.run_at
                                  ELSE statement_timestamp() + make_interval(secs => d.delay) END,
                    error = 'Lease expired: worker ' || coalesce(j.leased_by::text, '?')
                            || ' stopped renewing it during attempt ' || j.attempts,
                    history = j.history || {history},
                    leased_by = NULL, lease_token = NULL, lease_expires_at = NULL
                FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::float8[]) AS d(id, status, delay, wait_s)
                WHERE j.id = d.id
                RETURNING j.id, j.status, j.queue, j.owner_id, j.type, j.attempts, j.trace_id,
                          NULL::float8 AS run_s, d.wait_s, d.delay
            ), counted AS ({counted}), finished AS ({finished_sql("rescued")})
            SELECT id, status, queue, owner_id, type, attempts, trace_id, delay FROM rescued
            """,
            [[row[0] for row in stale], [d.status for d in decisions], [d.delay for d in decisions],
             [row[4] for row in stale]],
        )
        rows = cursor.fetchall()
        rescued = [RescuedJob(*row[:7]) for row in rows]
        due_now = {row[2] for row in rows if row[1] == JobStatus.RETRYING and row[7] == 0}
        if due_now:
            _notify_queues(due_now)
        for status in (JobStatus.RETRYING, JobStatus.DEAD):
            moved = [job for job in rescued if job.status == status]
            events.jobs_changed([job.id for job in moved], [job.owner_id for job in moved], status)
    return rescued


def expire_jobs() -> int:
    """Move jobs whose TTL passed before any worker started them to `expired`."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {JOB_TABLE} SET status = 'expired', finished_at = statement_timestamp(),
                error = 'Expired before it could start.'
            WHERE status IN ('queued', 'scheduled', 'retrying') AND expires_at <= statement_timestamp()
            RETURNING id, owner_id
            """
        )
        rows = cursor.fetchall()
    events.jobs_changed([row[0] for row in rows], [row[1] for row in rows], JobStatus.EXPIRED)
    return len(rows)


PRUNE_BATCH = 5000


def prune_finished(older_than_seconds: float | None = None, *, limit: int = PRUNE_BATCH) -> int:
    """Delete up to `limit` jobs, oldest first, that finished more than `older_than_seconds` ago.

    The age defaults to JOBS_RETENTION_SECONDS. Return how many were
    deleted; a caller with more to prune calls again, so a large backlog
    goes in short transactions instead of one DELETE that holds its locks
    and its WAL for as long as it takes. Dead jobs stay until someone
    requeues or deletes them: they are the DLQ.
    """
    seconds = conf.get("JOBS_RETENTION_SECONDS") if older_than_seconds is None else older_than_seconds
    if not seconds:
        return 0
    with connection.cursor() as cursor:
        # SKIP LOCKED: two workers pruning at once take different rows.
        cursor.execute(
            f"""
            DELETE FROM {JOB_TABLE} WHERE id IN (
                SELECT id FROM {JOB_TABLE}
                WHERE finished_at < statement_timestamp() - make_interval(secs => %s)
                  AND status IN ('completed', 'cancelled', 'expired')
                ORDER BY finished_at LIMIT %s FOR UPDATE SKIP LOCKED
            )
            """,
            [float(seconds), limit],
        )
        return cursor.rowcount


# --- Workers ----------------------------------------------------------------------


def register_worker(*, hostname: str, pid: int, queues: list[str], concurrency: int) -> Worker:
    worker = Worker.objects.create(hostname=hostname, pid=pid, queues=queues, concurrency=concurrency)
    events.workers_changed()
    return worker


def heartbeat(worker_id: uuid.UUID, *, busy: int, processed: int, failed: int,
              running: list[ClaimedJob], lease_seconds: float | None = None) -> set[int]:
    """Record that the worker is alive and renew the leases of its running jobs.

    Return the ids of `running` jobs whose lease is still ours; any other
    was cancelled or rescued, and its handler should stop.
    """
    lease = lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS")
    Worker.objects.filter(pk=worker_id).update(heartbeat_at=Now(), busy=busy, processed=processed, failed=failed)
    events.workers_changed()
    if not running:
        return set()
    with statement_cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {JOB_TABLE} AS j SET lease_expires_at = statement_timestamp() + make_interval(secs => %s)
            FROM unnest(%s::bigint[], %s::uuid[]) AS c(id, token)
            WHERE {_HELD_BY_LEASE}
            RETURNING j.id
            """,
            [lease, [j.id for j in running], [j.lease_token for j in running]],
        )
        return {row[0] for row in cursor.fetchall()}


def stop_worker(worker_id: uuid.UUID, *, processed: int, failed: int) -> None:
    Worker.objects.filter(pk=worker_id).update(
        stopped_at=Now(), heartbeat_at=Now(), busy=0, processed=processed, failed=failed
    )
    events.workers_changed()


def prune_workers(older_than_seconds: float = 24 * 3600) -> int:
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    deleted, _ = Worker.objects.filter(heartbeat_at__lt=cutoff).delete()
    return deleted


# --- Operator and user actions ------------------------------------------------


def _guarded(job_id: int, allowed: tuple[str, ...], action: str, **changes) -> None:
    """Apply `changes` to one job if its status is in `allowed`; raise IllegalTransition otherwise."""
    updated = Job.objects.filter(pk=job_id, status__in=allowed).update(**changes)
    if not updated:
        current = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        if current is None:
            raise Job.DoesNotExist(f"Job {job_id} does not exist.")
        raise IllegalTransition(f"Cannot {action} job {job_id}: it is {current}.")


def _announce(job_id: int, status: str) -> str:
    """Publish the change of one job after commit; return its queue."""
    queue, owner_id = Job.objects.values_list("queue", "owner_id").get(pk=job_id)
    events.jobs_changed([job_id], [owner_id], status)
    return queue


def _requeue_changes() -> dict:
    return {
        "status": JobStatus.QUEUED, "attempts": 0, "run_at": Now(), "finished_at": None,
        "started_at": None, "result": None, "progress": 0, "expires_at": None,
        "leased_by": None, "lease_token": None, "lease_expires_at": None,
    }


def cancel_job(job_id: int) -> None:
    """Cancel a job that has not finished. A running job's worker loses its lease and stops it."""
    _guarded(job_id, ACTIVE_STATUSES, "cancel", status=JobStatus.CANCELLED, finished_at=Now(),
             leased_by=None, lease_token=None, lease_expires_at=None)
    _announce(job_id, JobStatus.CANCELLED)


def _owner_may_not_run(queryset):
    """Return the jobs in `queryset` of a type only staff may have whose owner is not staff (any more).

    Such a job, submitted while its owner was staff, must not come back
    through a retry or a requeue; the handler checks the owner again when
    it runs, for a change made after that.
    """
    return queryset.filter(type__in=staff_only_types(), owner__is_staff=False)


def retry_job(job_id: int) -> None:
    """Requeue a dead, cancelled or expired job with a fresh set of retries.

    Raise IllegalTransition for a job of a staff-only type whose owner is
    not staff, as for a job in a status that cannot be retried.
    """
    refused = _owner_may_not_run(Job.objects.filter(pk=job_id)).values_list("type", flat=True).first()
    if refused is not None:
        raise IllegalTransition(f"Cannot retry job {job_id}: only staff may run {refused} jobs, and its owner is not staff.")
    _guarded(job_id, REQUEUEABLE_STATUSES, "retry", **_requeue_changes())
    _notify(_announce(job_id, JobStatus.QUEUED))


def retry_now(job_id: int) -> None:
    """Run a scheduled or retrying job as soon as a worker is free, instead of at its run_at."""
    _guarded(job_id, (JobStatus.SCHEDULED, JobStatus.RETRYING), "run now", status=JobStatus.QUEUED, run_at=Now())
    _notify(_announce(job_id, JobStatus.QUEUED))


def cancel_jobs(queryset) -> int:
    """Cancel every unfinished job in `queryset`; return how many were cancelled."""
    with transaction.atomic():
        # Lock the unfinished rows first, so the events name exactly the jobs cancelled.
        owners = dict(
            queryset.filter(status__in=ACTIVE_STATUSES).select_for_update(of=("self",)).order_by()
            .values_list("pk", "owner_id")
        )
        updated = Job.objects.filter(pk__in=list(owners), status__in=ACTIVE_STATUSES).update(
            status=JobStatus.CANCELLED, finished_at=Now(), leased_by=None, lease_token=None, lease_expires_at=None
        )
        events.jobs_changed(list(owners), list(owners.values()), JobStatus.CANCELLED)
    return updated


def retry_jobs_now(queryset) -> int:
    """Make every scheduled or retrying job in `queryset` due now; return how many."""
    ids = list(
        queryset.filter(status__in=(JobStatus.SCHEDULED, JobStatus.RETRYING)).values_list("pk", flat=True)
    )
    updated = Job.objects.filter(pk__in=ids, status__in=(JobStatus.SCHEDULED, JobStatus.RETRYING)).update(
        status=JobStatus.QUEUED, run_at=Now()
    )
    if updated:
        rows = list(Job.objects.filter(pk__in=ids).values_list("pk", "queue", "owner_id"))
        _notify_queues({queue for _, queue, _ in rows})
        events.jobs_changed([row[0] for row in rows], [row[2] for row in rows], JobStatus.QUEUED)
    return updated


def dead_jobs(*, ids: list[int] | None = None, type: str | None = None, queue: str | None = None,
              older_than: timedelta | None = None, owner=None):
    """Return the dead jobs matching every given filter."""
    jobs = Job.objects.dead()
    if ids is not None:
        jobs = jobs.filter(pk__in=ids)
    if type:
        jobs = jobs.filter(type=type)
    if queue:
        jobs = jobs.filter(queue=queue)
    if older_than is not None:
        jobs = jobs.filter(finished_at__lt=timezone.now() - older_than)
    if owner is not None:
        jobs = jobs.filter(owner=owner)
    return jobs


def requeue_dead(queryset, *, limit: int | None = None) -> list[int]:
    """Requeue the dead jobs in `queryset` (at most `limit`); return their ids.

    Jobs in any other status are left alone, so a stale selection is safe,
    and so are jobs of a staff-only type whose owner is not staff.
    """
    candidates = (
        queryset.filter(status=JobStatus.DEAD).exclude(pk__in=_owner_may_not_run(queryset).values("pk"))
        .order_by("pk").values_list("pk", flat=True)
    )
    if limit is not None:
        candidates = candidates[:limit]
    with transaction.atomic():
        # Lock the chosen dead rows first, so two operators requeueing at
        # once each report only the jobs they actually requeued.
        ids = list(
            Job.objects.filter(pk__in=list(candidates), status=JobStatus.DEAD)
            .select_for_update(skip_locked=True).values_list("pk", flat=True)
        )
        Job.objects.filter(pk__in=ids).update(**_requeue_changes())
        if ids:
            rows = list(Job.objects.filter(pk__in=ids).values_list("pk", "queue", "owner_id"))
            _notify_queues({queue for _, queue, _ in rows})
            events.jobs_changed([row[0] for row in rows], [row[2] for row in rows], JobStatus.QUEUED, 0)
    return sorted(ids)

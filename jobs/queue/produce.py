"""Producing jobs: a validated job spec in; store, count and announce, in one statement per call."""

import json
import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction

from jobs import events
from jobs.db import statement_cursor
from jobs.errors import OwnerAtCapacity
from jobs.models import NAMED_PRIORITIES, Job, JobStatus
from jobs.queue.sql import query
from jobs.registry import check_owner
from jobs.spec import MAX_SECONDS, JobSpec, build, build_many, parse_priority

__all__ = ["CANCEL_REQUESTED", "FLOW_CHANGED", "KEYED_SUFFIX", "MAX_SECONDS", "NOTIFY_CHANNEL", "PRIORITY_SUFFIX", "enqueue", "enqueue_many", "enqueue_specs", "notify", "parse_priority", "wake_name"]

logger = logging.getLogger("jobs.queue")

# The channel a NOTIFY wakes the workers on; its payload is the queue's name,
# with KEYED_SUFFIX for jobs with a concurrency key, PRIORITY_SUFFIX and the
# number for jobs of a priority other than the named ones (which a worker
# claims only once it knows of it), FLOW_CHANGED when a queue's controls or
# a key's limits changed (jobs.queue.control), or CANCEL_REQUESTED when
# someone cancelled held jobs (jobs.queue.actions).
NOTIFY_CHANNEL = "skipjack_jobs"
KEYED_SUFFIX = ":k"
PRIORITY_SUFFIX = ":p"
FLOW_CHANGED = ":flow"
# A cancel of held jobs was asked for: their workers look at once (heartbeat).
CANCEL_REQUESTED = ":cancel"


def wake_name(queue: str, *, keyed: bool, priority: int) -> str:
    """Return what a NOTIFY names to wake the workers for a job of `queue` (see NOTIFY_CHANNEL)."""
    if keyed:
        return queue + KEYED_SUFFIX  # for the limited claim (jobs.worker.producer)
    if priority not in NAMED_PRIORITIES:
        return f"{queue}{PRIORITY_SUFFIX}{priority}"
    return queue


def notify(queues: Iterable[str]) -> None:
    """Wake the workers of `queues`, at commit (once per transaction and queue)."""
    with connection.cursor() as cursor:
        for queue in set(queues):
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, queue])


def _insert_jobs(spec: JobSpec, payloads: list, *, keys: list[str | None] | None = None,
                 owner_max_active=None) -> list[tuple[int, datetime, datetime]]:
    """Insert one job of `spec`'s options per payload, count them and wake the workers, in one statement.

    `keys` are the jobs' concurrency keys, in payload order (None: the
    spec's for every job). Return (id, run_at, created_at) per job, in
    payload order. Outside a
    transaction the statement is its own commit: the insert, its count and
    the NOTIFY stand or fall together. With `owner_max_active`, insert
    nothing (and return []) if the owner's unfinished jobs and these would
    be more than that.
    """
    if keys is None:
        keys = [spec.concurrency_key] * len(payloads)
    # The keys' limit: the spec's own when it has a key (its type's, or its
    # owner's running limit: jobs.submission), else its type's.
    key_limit = (spec.key_limit if spec.concurrency_key is not None else spec.handler.key_concurrency) if any(keys) else None
    params = {
        "owner": getattr(spec.owner, "pk", spec.owner), "queue": spec.queue, "type": spec.type,
        "priority": spec.priority, "status": spec.status, "max_retries": spec.max_retries,
        "run_at": spec.run_at, "timeout": spec.timeout, "expires_at": spec.expires_at,
        "unique_key": spec.unique_key, "idempotency_key": spec.idempotency_key, "trace_id": spec.trace_id,
        "channel": NOTIFY_CHANNEL, "key_limit": key_limit,
        "wake": wake_name(spec.queue, keyed=any(keys), priority=spec.priority),
        # Workers learn of a new priority from the NOTIFY, so it is sent for a job due later too.
        "notify": spec.status == JobStatus.QUEUED or (not any(keys) and spec.priority not in NAMED_PRIORITIES),
    }
    if owner_max_active is not None:
        name = "insert_jobs_capped"
        params.update(payloads=[json.dumps(p) for p in payloads], max_active=owner_max_active, adding=len(payloads),
                      keys=keys if any(keys) else None)
    elif len(payloads) == 1:
        name = "insert_job"
        params.update(payload=json.dumps(payloads[0]), key=keys[0])
    else:
        name = "insert_jobs"
        params.update(payloads=[json.dumps(p) for p in payloads], keys=keys if any(keys) else None)
    # The capped insert reads the owner's jobs: planned afresh each time,
    # with its values in the text. The others read no table, and their
    # prepared plan fits any table (jobs.db.plan_every_run).
    with (connection.cursor() if owner_max_active is not None else statement_cursor()) as cursor:
        cursor.execute(query(name), params)
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


def enqueue(spec: JobSpec | str, payload: Any = None, *, owner_max_active: int | None = None, **options) -> Job:
    """Store a job; return it.

    `spec` is a JobSpec from jobs.spec.build, or a type whose `payload`
    and keyword options (those of build) make one here. A spec is not
    validated again; its owner is checked (registry.check_owner) here,
    inside the caller's transaction.

    The insert joins the caller's transaction: if that transaction rolls
    back, the job never existed. With a unique key, an unfinished job of
    the same owner and key is returned instead of a new one, with its
    attribute `deduplicated` set to True. With `owner_max_active`, raise
    OwnerAtCapacity instead of storing a job that would be more unfinished
    jobs of the owner than that; the count is the insert's own, so a caller
    that must keep the cap against concurrent enqueues locks something of
    the owner's first (jobs.submission does).

    Raise UnknownJobType or PayloadError for a job that must not be stored,
    JobTypeNotAllowed for an owner who may not have it, and ValueError for
    a bad option.
    """
    if not isinstance(spec, JobSpec):
        spec = build(spec, payload, **options)
    elif payload is not None or options:
        raise TypeError("enqueue() takes a JobSpec alone, or a type with its payload and options.")
    check_owner(spec.handler, spec.owner, spec.payload)
    if spec.unique_key is None:
        rows = _insert_jobs(spec, [spec.payload], owner_max_active=owner_max_active)
    else:
        try:
            # A savepoint, so a duplicate key leaves the caller's transaction usable.
            with transaction.atomic():
                rows = _insert_jobs(spec, [spec.payload], owner_max_active=owner_max_active)
        except IntegrityError:
            existing = Job.objects.active().filter(owner=spec.owner, unique_key=spec.unique_key).first()
            if existing is not None:
                existing.deduplicated = True
                return existing
            # It finished between the insert and this read: try once more.
            rows = _insert_jobs(spec, [spec.payload], owner_max_active=owner_max_active)
    if not rows:
        raise OwnerAtCapacity(f"The owner already has {owner_max_active} or more unfinished jobs.")
    ((job_id, run_at, created_at),) = rows
    job = Job(
        id=job_id, type=spec.type, payload=spec.payload, owner=spec.owner, queue=spec.queue,
        priority=spec.priority, max_retries=spec.max_retries, timeout=spec.timeout, status=spec.status,
        expires_at=spec.expires_at, run_at=run_at, created_at=created_at, unique_key=spec.unique_key,
        idempotency_key=spec.idempotency_key, trace_id=spec.trace_id, concurrency_key=spec.concurrency_key,
        key_limit=spec.key_limit,
    )
    job._state.adding = False
    job.deduplicated = False
    _announce_enqueued(type=spec.type, queue=job.queue, status=job.status, ids=[job.pk], owner_id=job.owner_id,
                       trace_id=spec.trace_id)
    return job


def enqueue_many(specs: Iterable[JobSpec] | str, payloads: Iterable[Any] | None = None, **options) -> list[int]:
    """Store one job per spec, in one INSERT; return their ids.

    `specs` are JobSpecs of one type with the same options (as
    jobs.spec.build_many returns them), or a type whose `payloads` and
    keyword options (those of build_many) make them here. Like enqueue(),
    the insert joins the caller's transaction.
    """
    if isinstance(specs, str):
        # build_many gives every spec the same options and no keys: nothing to compare.
        specs = build_many(specs, [] if payloads is None else payloads, **options)
        if not specs:
            return []
        first = specs[0]
    else:
        if payloads is not None or options:
            raise TypeError("enqueue_many() takes JobSpecs alone, or a type with its payloads and options.")
        specs = list(specs)
        if not specs:
            return []
        first = specs[0]
        if any(spec.unique_key is not None or spec.idempotency_key is not None for spec in specs):
            raise ValueError("enqueue_many() stores no unique or idempotency keys; enqueue those jobs one by one.")
        # Keys may differ from job to job (a type derives each from its payload).
        options_of_first = replace(first, payload=None, concurrency_key=None, key_limit=None)
        if any(replace(spec, payload=None, concurrency_key=None, key_limit=None) != options_of_first for spec in specs):
            raise ValueError("enqueue_many() stores jobs of one type with the same options in one INSERT.")
    for spec in specs:
        check_owner(spec.handler, spec.owner, spec.payload)
    ids = [job_id for job_id, _, _ in _insert_jobs(first, [spec.payload for spec in specs],
                                                   keys=[spec.concurrency_key for spec in specs])]
    _announce_enqueued(type=first.type, queue=first.queue, status=first.status, ids=ids,
                       owner_id=getattr(first.owner, "pk", first.owner), trace_id=first.trace_id)
    return ids


def enqueue_specs(specs: list[JobSpec], *, ids: list[int] | None = None) -> list[int]:
    """Store one job per spec, each with options of its own, in one INSERT; return their ids in order.

    For many jobs of different types and options at once, as a scheduler's
    round enqueues them. `ids`, one per spec, are ids taken beforehand from
    the jobs' sequence. Like enqueue(), the insert joins the caller's
    transaction; unique and idempotency keys are not stored here.
    """
    if not specs:
        return []
    if ids is not None and len(ids) != len(specs):
        raise ValueError("enqueue_specs() takes one id per spec, or none.")
    if any(spec.unique_key is not None or spec.idempotency_key is not None for spec in specs):
        raise ValueError("enqueue_specs() stores no unique or idempotency keys; enqueue those jobs one by one.")
    for spec in specs:
        check_owner(spec.handler, spec.owner, spec.payload)
    batch = [
        {"n": n, "id": ids[n] if ids is not None else None, "owner": getattr(spec.owner, "pk", spec.owner), "queue": spec.queue, "type": spec.type,
         "payload": spec.payload, "priority": spec.priority, "status": spec.status, "max_retries": spec.max_retries,
         "run_at": spec.run_at.isoformat() if spec.run_at else None, "timeout": spec.timeout,
         "expires_at": spec.expires_at.isoformat() if spec.expires_at else None, "trace_id": spec.trace_id,
         "key": spec.concurrency_key, "key_limit": spec.key_limit if spec.concurrency_key else None}
        for n, spec in enumerate(specs)
    ]
    with connection.cursor() as cursor:
        cursor.execute(query("insert_job_specs"), {"batch": json.dumps(batch), "channel": NOTIFY_CHANNEL,
                                                   "keyed_suffix": KEYED_SUFFIX, "priority_suffix": PRIORITY_SUFFIX,
                                                   "named": sorted(NAMED_PRIORITIES)})
        ids = [row[0] for row in cursor.fetchall()]
    groups: dict[tuple, list[int]] = {}
    for spec, job_id in zip(specs, ids, strict=True):
        groups.setdefault((spec.type, spec.queue, spec.status, getattr(spec.owner, "pk", spec.owner)), []).append(job_id)
    for (type_name, queue, status, owner_id), group in groups.items():
        _announce_enqueued(type=type_name, queue=queue, status=status, ids=group, owner_id=owner_id, trace_id="")
    return ids

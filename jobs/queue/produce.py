"""Producing jobs: validate, store, count and announce, in one statement per call."""

import json
import logging
import math
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from jobs import conf, events
from jobs.db import statement_cursor
from jobs.errors import OwnerAtCapacity
from jobs.models import Job, JobStatus, Priority
from jobs.queue.sql import query
from jobs.registry import check_owner, get_handler, unstorable, validate_payload
from jobs.tracing import current_trace_id

logger = logging.getLogger("jobs.queue")

# The channel a NOTIFY wakes the workers on; its payload is the queue's name.
NOTIFY_CHANNEL = "skipjack_jobs"
# The longest delay, timeout or TTL accepted: a year.
MAX_SECONDS = 365 * 24 * 3600.0

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


def notify(queues: Iterable[str]) -> None:
    """Wake the workers of `queues`, at commit (once per transaction and queue)."""
    with connection.cursor() as cursor:
        for queue in set(queues):
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, queue])


def _insert_jobs(type: str, payloads: list, o: dict, *, trace_id: str, unique_key=None,
                 idempotency_key=None, owner_max_active=None) -> list[tuple[int, datetime, datetime]]:
    """Insert one job per payload, count them and wake the workers, in one statement.

    Return (id, run_at, created_at) per job, in payload order. Outside a
    transaction the statement is its own commit: the insert, its count and
    the NOTIFY stand or fall together. With `owner_max_active`, insert
    nothing (and return []) if the owner's unfinished jobs and these would
    be more than that.
    """
    params = {
        "owner": getattr(o["owner"], "pk", o["owner"]), "queue": o["queue"], "type": type,
        "priority": o["priority"], "status": o["status"], "max_retries": o["max_retries"],
        "run_at": o.get("run_at"), "timeout": o["timeout"], "expires_at": o["expires_at"],
        "unique_key": unique_key, "idempotency_key": idempotency_key, "trace_id": trace_id,
        "channel": NOTIFY_CHANNEL, "due": o["status"] == JobStatus.QUEUED,
    }
    if owner_max_active is not None:
        name = "insert_jobs_capped"
        params.update(payloads=[json.dumps(p) for p in payloads], max_active=owner_max_active, adding=len(payloads))
    elif len(payloads) == 1:
        name = "insert_job"
        params["payload"] = json.dumps(payloads[0])
    else:
        name = "insert_jobs"
        params["payloads"] = [json.dumps(p) for p in payloads]
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
    keys: dict[str, Any] = {"trace_id": trace_id, "unique_key": unique_key, "idempotency_key": idempotency_key,
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

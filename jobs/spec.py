"""The validated job spec: what a submission asks for, checked once, as it will be stored.

    spec = build("reverse_string", "hello", owner=user, delay=5)
    queue.enqueue(spec)

`build` is the one place a job is validated: it resolves the type's
handler, normalizes the payload with the type's schema and the queue's
limits, and resolves every option (delay into run_at, ttl into expires_at,
the type's default retries, the trace id). The API's serializer, the
submission path of the API and the dashboard, and enqueue() use the spec
it returns instead of validating again; what is stored is its payload, so
a worker reads back what `build` returned.

Who may have the job is not part of the spec: enqueue() checks the owner
(registry.check_owner, with the spec's handler) inside the transaction
that stores it, after an idempotent replay has had its chance.
"""

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from jobs import conf, flow
from jobs.models import JobStatus, Priority
from jobs.registry import Handler, get_handler, normalize_payload, unstorable
from jobs.tracing import current_trace_id

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


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job as it will be stored: its type's handler, its normalized payload and its resolved options."""

    type: str
    handler: Handler = field(repr=False, compare=False)
    payload: Any
    owner: Any
    queue: str
    priority: int
    max_retries: int
    # None: the type's timeout, else JOBS_DEFAULT_TIMEOUT, as they are when it runs.
    timeout: float | None
    # None: now, by the database's clock, behind every job already waiting.
    run_at: datetime | None
    # SCHEDULED for a run_at in the future, else QUEUED.
    status: str
    expires_at: datetime | None
    trace_id: str
    unique_key: str | None = None
    idempotency_key: str | None = None
    # Flow control: jobs with the same key in a queue share its limits (jobs.flow).
    concurrency_key: str | None = None
    # The key's concurrency limit its type sets; None: the queue's.
    key_limit: int | None = None

    def with_options(self, **changes) -> "JobSpec":
        """Return the spec with some resolved options changed; a run_at of None makes it due now."""
        if "run_at" in changes and changes["run_at"] is None:
            changes["status"] = JobStatus.QUEUED
        return replace(self, **changes)


def _check_storable(**options) -> None:
    """Raise ValueError naming the first text option that PostgreSQL cannot store."""
    for name, value in options.items():
        problem = unstorable(value) if isinstance(value, str) else None
        if problem:
            raise ValueError(f"{name} must not contain {problem}.")


def _concurrency_key(handler: Handler, payload: Any, given: str | None) -> tuple[str | None, int | None]:
    """Return the job's concurrency key (the one given, else its type's) and the key's limit from its type.

    Raise ValueError for a malformed key.
    """
    key: str | None
    if given is not None:
        key = flow.check_key(given)
    elif callable(handler.concurrency_key):
        key = handler.concurrency_key(payload)
        if key is not None:
            try:
                flow.check_key(key)
            except ValueError as exc:
                raise ValueError(f"The concurrency key that type {handler.name!r} made of this payload: {exc}") from None
    else:
        key = handler.concurrency_key
    return key, handler.key_concurrency if key is not None else None


def _resolve_options(handler: Handler, *, owner, queue, priority, max_retries, timeout, run_at, delay, ttl,
                     trace_id, now) -> dict:
    """Return the stored form of the options shared by every job of one build; raise ValueError for a bad one."""
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
    return {
        "type": handler.name,
        "handler": handler,
        "owner": owner,
        "queue": queue or conf.get("JOBS_DEFAULT_QUEUE"),
        "priority": parse_priority(priority),
        "max_retries": max_retries,
        "timeout": timeout,
        "run_at": run_at,
        "status": JobStatus.SCHEDULED if run_at and run_at > now else JobStatus.QUEUED,
        "expires_at": now + timedelta(seconds=float(ttl)) if ttl is not None else None,
        "trace_id": trace_id or current_trace_id() or uuid.uuid4().hex,
    }


def build(
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
    concurrency_key: str | None = None,
    trace_id: str = "",
) -> JobSpec:
    """Return the validated spec of one job of `type`.

    Raise UnknownJobType for a type that is not registered (or not
    enabled), PayloadError with every bad field of the payload, and
    ValueError for a bad option, in that order.
    """
    return build_for(get_handler(type), payload, owner=owner, queue=queue, priority=priority,
                     max_retries=max_retries, timeout=timeout, run_at=run_at, delay=delay, ttl=ttl,
                     unique_key=unique_key, idempotency_key=idempotency_key, concurrency_key=concurrency_key,
                     trace_id=trace_id)


def build_for(
    handler: Handler,
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
    concurrency_key: str | None = None,
    trace_id: str = "",
) -> JobSpec:
    """Return the validated spec of one job run by `handler`, resolved already (see build()).

    For handlers that are not in the registry: those jobs.tasks makes of a
    Django task, which code enqueues but no submission may name.
    """
    payload = normalize_payload(handler, {} if payload is None else payload)
    _check_storable(queue=queue, unique_key=unique_key, idempotency_key=idempotency_key, trace_id=trace_id)
    options = _resolve_options(
        handler, owner=owner, queue=queue, priority=priority, max_retries=max_retries, timeout=timeout,
        run_at=run_at, delay=delay, ttl=ttl, trace_id=trace_id, now=timezone.now(),
    )
    key, key_limit = _concurrency_key(handler, payload, concurrency_key)
    return JobSpec(payload=payload, unique_key=unique_key, idempotency_key=idempotency_key, concurrency_key=key,
                   key_limit=key_limit, **options)


def build_many(type: str, payloads: Iterable[Any], *, owner=None, queue: str | None = None,
               priority: Any = Priority.NORMAL, max_retries: int | None = None, timeout: float | None = None,
               run_at: datetime | None = None, delay: float | None = None, ttl: float | None = None,
               concurrency_key: str | None = None, trace_id: str = "") -> list[JobSpec]:
    """Return the validated specs of one job of `type` per payload, all with the same options.

    The handler is resolved and the options are checked once; each
    payload is normalized, and given its concurrency key (`concurrency_key`
    for all, else what the type makes of each payload). Raise as build() does.
    """
    payloads = list(payloads)
    if not payloads:
        return []
    handler = get_handler(type)
    payloads = [normalize_payload(handler, {} if p is None else p) for p in payloads]
    _check_storable(queue=queue, trace_id=trace_id)
    options = _resolve_options(
        handler, owner=owner, queue=queue, priority=priority, max_retries=max_retries, timeout=timeout,
        run_at=run_at, delay=delay, ttl=ttl, trace_id=trace_id, now=timezone.now(),
    )
    specs = []
    for payload in payloads:
        key, key_limit = _concurrency_key(handler, payload, concurrency_key)
        specs.append(JobSpec(payload=payload, concurrency_key=key, key_limit=key_limit, **options))
    return specs

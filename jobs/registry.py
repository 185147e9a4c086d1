"""Job types: stable names mapped to handler functions and payload validators.

    @job_handler("reverse_string", validate=text_payload)
    def reverse_string(job: JobContext):
        return job.payload["text"][::-1]

Names are what gets stored in the jobs table, so they must never change once
jobs of that type exist. A handler receives a JobContext and returns a JSON
value, which becomes the job's result.
"""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs import conf, flow
from jobs.errors import JobTypeNotAllowed, PayloadError, UnknownJobType


@dataclass(frozen=True)
class Handler:
    name: str
    func: Callable[["JobContext"], Any]
    # Return the normalized payload, or raise PayloadError.
    validate: Callable[[Any], Any] | None = None
    description: str = ""
    timeout: float | None = None
    max_retries: int | None = None
    backoff_base: float | None = None
    backoff_cap: float | None = None
    staff_only: bool = False
    # Name of a JOBS_* setting that must be true for the type to exist.
    enabled_by: str | None = None
    # Name of a JOBS_* setting that, while set, opens a staff_only type to
    # every user (send_email: JOBS_EMAIL_USER_RECIPIENTS).
    open_to_users_by: str | None = None
    # check_user(user, payload): for a job of a user who is not staff, raise
    # PayloadError (or jobs.submission.SubmissionRefused) for what that user
    # may not ask of this type; e.g. send_email's recipients.
    check_user: Callable[[Any, Any], None] | None = None
    # Flow control (jobs.flow): the concurrency key of each job of this type,
    # a string or a function of the normalized payload that returns one (or
    # None for no key), unless the job is given one at enqueue; and how many
    # jobs with the same key may run at once (None: the queue's key limit).
    concurrency_key: str | Callable[[Any], str | None] | None = None
    key_concurrency: int | None = None
    # A schedule that enqueues this type: a cron expression, or a dict of a
    # schedule's fields (jobs.schedules), synced to the database at start-up.
    schedule: str | dict | None = None

    @property
    def enabled(self) -> bool:
        return self.enabled_by is None or bool(conf.get(self.enabled_by))

    @property
    def requires_staff(self) -> bool:
        """Return whether only staff (and code, with no owner) may have jobs of this type now."""
        return self.staff_only and not (self.open_to_users_by and conf.get(self.open_to_users_by))


@dataclass
class JobContext:
    """What a handler sees of the job it runs."""

    job_id: int
    type: str
    payload: Any
    attempt: int
    trace_id: str = ""
    queue: str = "default"
    # Set when the job must stop early: timeout, cancellation or shutdown.
    stop_requested: threading.Event = field(default_factory=threading.Event)
    # Set once someone asked to cancel the job (with stop_requested).
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    report_progress: Callable[[int], None] | None = None

    def set_progress(self, percent: int) -> None:
        """Record progress (0-100) on the job; ignored outside a worker."""
        percent = max(0, min(100, int(percent)))
        if self.report_progress is not None:
            self.report_progress(percent)

    @property
    def cancelled(self) -> bool:
        """Whether someone asked to cancel this job: a long handler checks it and stops early."""
        return self.cancel_requested.is_set()

    def check_cancelled(self) -> None:
        """Raise JobCancelled if someone asked to cancel this job."""
        from jobs.errors import JobCancelled

        if self.cancel_requested.is_set():
            raise JobCancelled(f"Job {self.job_id} was cancelled.")

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake early and raise if the job must stop (JobCancelled when it was cancelled)."""
        from jobs.errors import JobTimeout

        if self.stop_requested.wait(seconds):
            self.check_cancelled()
            raise JobTimeout("job stopped while sleeping")

    def owner_now(self):
        """Return the job's owner as the database has them now, or None for a job without one.

        Raise PermanentError if the job or its owner is gone, as then nobody
        can be checked to be allowed to run it.
        """
        from django.contrib.auth import get_user_model

        from jobs.errors import PermanentError
        from jobs.models import Job

        try:
            owner_id = Job.objects.values_list("owner_id", flat=True).get(pk=self.job_id)
        except Job.DoesNotExist:
            raise PermanentError(f"Job {self.job_id} no longer exists.") from None
        if owner_id is None:
            return None
        owner = get_user_model().objects.filter(pk=owner_id).first()
        if owner is None:
            raise PermanentError(f"The owner of job {self.job_id} no longer exists.")
        return owner


_registry: dict[str, Handler] = {}


def job_handler(name: str, **options) -> Callable:
    """Register the decorated function as the handler for job type `name`."""

    def decorator(func):
        if name in _registry and _registry[name].func is not func:
            raise ValueError(f"Job type {name!r} is already registered")
        key = options.get("concurrency_key")
        if isinstance(key, str):
            flow.check_key(key)
        elif key is not None and not callable(key):
            raise ValueError(f"Job type {name!r}: concurrency_key must be a string or a function of the payload.")
        flow.check_limit(options.get("key_concurrency"), f"Job type {name!r}: key_concurrency")
        _registry[name] = Handler(name=name, func=func, description=(func.__doc__ or "").strip(), **options)
        return func

    return decorator


def get_handler(name: str) -> Handler:
    """Return the enabled handler for `name`, or raise UnknownJobType."""
    handler = _registry.get(name)
    if handler is None or not handler.enabled:
        raise UnknownJobType(name)
    return handler


def handlers() -> list[Handler]:
    """Return the enabled handlers, sorted by name."""
    return sorted((h for h in _registry.values() if h.enabled), key=lambda h: h.name)


def staff_only_types() -> list[str]:
    """Return the names of the registered types that only staff may have jobs of now."""
    return sorted(h.name for h in _registry.values() if h.requires_staff)


def check_owner(handler: Handler, owner, payload: Any) -> None:
    """Raise JobTypeNotAllowed, or what the type's check_user raises, if `owner` may not have this job.

    Jobs without an owner (enqueued by code or an operator) and the jobs of
    active staff may be anything; a deactivated staff member counts as not
    staff.
    """
    if owner is None or (owner.is_staff and owner.is_active):
        return
    if handler.requires_staff:
        raise JobTypeNotAllowed(f"Only staff may submit {handler.name} jobs.")
    if handler.check_user is not None:
        handler.check_user(owner, payload)


def check_owner_at_run(job: JobContext):
    """Return the owner of the job `job` runs, as they are now; raise PermanentError if they may not have it.

    An owner may have lost staff status, or a setting may have changed,
    since the job was submitted, retried or requeued, so the handlers of
    restricted types call this before doing anything.
    """
    from jobs.errors import PermanentError, SubmissionRefused

    owner = job.owner_now()
    try:
        check_owner(get_handler(job.type), owner, job.payload)
    except (JobTypeNotAllowed, PayloadError, SubmissionRefused) as exc:
        raise PermanentError(f"Not run for its owner: {exc}") from None
    return owner


def json_depth(value: Any, limit: int) -> int:
    """Return the nesting depth of `value`, stopping (without recursion) once past `limit`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def unstorable(text: str) -> str | None:
    """Return what in `text` PostgreSQL cannot store, as "NUL characters" or "the lone surrogate U+D800"; else None.

    Neither text columns nor jsonb take NUL, and a lone surrogate (half of
    a UTF-16 pair, which a JSON escape such as "\\ud800" can make) is no
    character in UTF-8 at all. Either would fail the INSERT with a 500.
    """
    if "\x00" in text:
        return "NUL characters"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            return f"the lone surrogate U+{ord(text[exc.start]):04X}"
    return None


def unstorable_fields(payload: Any) -> dict[str, list[str]]:
    """Return the fields of `payload` that hold text PostgreSQL cannot store, in keys or values at any depth.

    A field is a top-level key of an object payload; anything else (a bare
    value, a list, a bad key at the top) is reported as "payload".
    """
    errors: dict[str, list[str]] = {}
    if isinstance(payload, dict):
        stack = []
        for key, value in payload.items():
            problem = unstorable(key) if isinstance(key, str) else None
            if problem:
                errors.setdefault("payload", []).append(f"Field names must not contain {problem}.")
            else:
                stack.append((key, value))
    else:
        stack = [("payload", payload)]
    for name, value in stack:
        items = [value]
        while items and name not in errors:
            item = items.pop()
            if isinstance(item, str):
                problem = unstorable(item)
                if problem:
                    errors[name] = [f"Must not contain {problem}."]
            elif isinstance(item, dict):
                for key, child in item.items():
                    problem = unstorable(key) if isinstance(key, str) else None
                    if problem:
                        errors[name] = [f"Field names must not contain {problem}."]
                        break
                    items.append(child)
            elif isinstance(item, list):
                items.extend(item)
    return errors


def validate_payload(type_name: str, payload: Any) -> Any:
    """Return `payload` normalized for `type_name`, or raise UnknownJobType / PayloadError."""
    return normalize_payload(get_handler(type_name), payload)


def stored_payload(handler: Handler, payload: Any) -> Any:
    """Return a payload read back from the jobs table as `handler`'s schema has it; raise PayloadError.

    Only the type's schema runs: the row came out of jsonb, so it is JSON
    PostgreSQL can store, and the queue's size and depth limits were the
    limits of storing it.
    """
    return payload if handler.validate is None else handler.validate(payload)


def normalize_payload(handler: Handler, payload: Any) -> Any:
    """Return `payload` normalized by `handler`'s schema within the queue's limits, or raise PayloadError."""
    max_depth = conf.get("JOBS_MAX_PAYLOAD_DEPTH")
    if json_depth(payload, max_depth) > max_depth:
        raise PayloadError(f"Payload is nested more than {max_depth} levels deep.")
    # Before the type's validator, so that neither it nor its messages ever hold such text.
    unstorable_errors = unstorable_fields(payload)
    if unstorable_errors:
        raise PayloadError(unstorable_errors)
    if handler.validate is not None:
        payload = handler.validate(payload)
    try:
        size = len(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"Payload is not valid JSON: {exc}.") from exc
    max_bytes = conf.get("JOBS_MAX_PAYLOAD_BYTES")
    if size > max_bytes:
        raise PayloadError(f"Payload is {size} bytes; the limit is {max_bytes}.")
    return payload

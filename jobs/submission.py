"""Submitting jobs on behalf of a user, within that user's limits.

The REST API and the dashboard both submit through `submit_job`. Its limits
hold across any number of web processes because they are checked in the
database, inside the transaction that inserts the job, while the user's
SubmissionAllowance row is locked: two concurrent submissions of one user
are serialized there.
"""

import math
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from jobs import conf, queue, spec as job_spec

# The refusals live with the other errors, so the core can name them; importable from here as before.
from jobs.errors import OwnerAtCapacity, PayloadError, RateLimited, SubmissionRefused, TooManyActiveJobs  # noqa: F401
from jobs.flow import OWNER_KEY_PREFIX
from jobs.handlers.validators import PayloadSchema
from jobs.metrics import count_rate_limit_rejection
from jobs.models import Job, Priority, SubmissionAllowance
from jobs.spec import JobSpec

RATE_WINDOW = timedelta(minutes=1)
ALLOWANCE_TABLE = SubmissionAllowance._meta.db_table


class IdempotencyConflict(Exception):
    """An Idempotency-Key reused for a different request."""


class OptionNotAllowed(ValueError):
    """Options the user may not choose. `errors` maps each option to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in errors.items()))


@dataclass
class Submission:
    job: Job
    # True when an earlier request with the same Idempotency-Key made the job.
    replayed: bool = False


def limits_apply(user) -> bool:
    return not user.is_staff


# Every limited action of one user first locks the user's SubmissionAllowance
# row (making it if need be), so what it reads afterwards includes everything
# the others committed, and two of them never both see room for one more job.
# Reads must be later statements: a statement reads from the snapshot taken
# at its start, before the lock was granted, and would miss the job whose
# transaction the lock waited for.
_LOCK = f"""
    INSERT INTO {ALLOWANCE_TABLE} AS a (user_id, refilled_at) VALUES (%(user)s, statement_timestamp())
    ON CONFLICT (user_id) DO UPDATE SET refilled_at = a.refilled_at
"""  # noqa: S608 - a constant table name; values are parameters

# Lock as above and take from the user's allowance: it is full again `cost`
# seconds later than it would have been (or than now, if it is full
# already). A refusal rolls the transaction back, and gives it back.
_SPEND = f"""
    INSERT INTO {ALLOWANCE_TABLE} AS a (user_id, refilled_at)
    VALUES (%(user)s, statement_timestamp() + make_interval(secs => %(cost)s))
    ON CONFLICT (user_id) DO UPDATE
        SET refilled_at = greatest(a.refilled_at, statement_timestamp()) + make_interval(secs => %(cost)s)
    RETURNING extract(epoch FROM refilled_at - statement_timestamp())::float8 AS ahead
"""  # noqa: S608 - a constant table name; values are parameters


# How far past now the allowance is full again; 0 when it is full. Run
# after the lock, as a later statement (see _LOCK).
_AHEAD = f"""
    SELECT extract(epoch FROM greatest(refilled_at - statement_timestamp(), interval '0'))::float8
    FROM {ALLOWANCE_TABLE} WHERE user_id = %(user)s
"""  # noqa: S608 - a constant table name; values are parameters


def lock_user(user) -> None:
    """Lock the user's limits until the end of the transaction."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK, {"user": user.pk})


def count_active(user) -> int:
    """Return the user's unfinished jobs, counted up to the cap plus one."""
    return Job.objects.filter(owner=user).active()[: conf.get("JOBS_USER_MAX_ACTIVE") + 1].count()


def _submission_cost() -> float:
    """Seconds of allowance one submission takes: a minute shared by the per-minute limit."""
    limit = conf.get("JOBS_USER_SUBMISSIONS_PER_MINUTE")
    # With a limit of 0, more than the whole allowance: every submission is refused.
    return RATE_WINDOW.total_seconds() / limit if limit > 0 else 2 * RATE_WINDOW.total_seconds()


def spend_submission(user, count: int = 1) -> float:
    """Lock the user's limits and take `count` submissions from their allowance.

    Return how far past now, in seconds, the allowance is full again.
    """
    with connection.cursor() as cursor:
        cursor.execute(_SPEND, {"user": user.pk, "cost": count * _submission_cost()})
        return cursor.fetchone()[0]


def submissions_left(user) -> int:
    """Return how many submissions the allowance of `user` holds now.

    Exact only while their limits are locked: otherwise a concurrent
    submission may spend some of it at once.
    """
    with connection.cursor() as cursor:
        cursor.execute(_AHEAD, {"user": user.pk})
        row = cursor.fetchone()
    ahead = row[0] if row else 0.0
    # The epsilon keeps a share that is whole but for rounding from being lost.
    return max(0, math.floor((RATE_WINDOW.total_seconds() - ahead) / _submission_cost() + 1e-9))


def check_active_limit(active: int, adding: int = 1) -> None:
    """Raise TooManyActiveJobs if `adding` more to the user's `active` unfinished jobs would pass their cap."""
    limit = conf.get("JOBS_USER_MAX_ACTIVE")
    if active + adding > limit:
        count_rate_limit_rejection("active_jobs")
        have = f"more than {limit}" if active > limit else str(active)
        raise TooManyActiveJobs(
            f"You have {have} unfinished jobs; the limit is {limit}. "
            "Wait for some to finish or cancel them, then try again."
        )


def check_rate_limit(ahead: float) -> None:
    """Raise RateLimited if the allowance, after this submission, is full again more than a minute ahead."""
    window = RATE_WINDOW.total_seconds()
    if ahead <= window:
        return
    count_rate_limit_rejection("submissions_per_minute")
    limit = conf.get("JOBS_USER_SUBMISSIONS_PER_MINUTE")
    if limit < 1:
        raise RateLimited("Job submissions are turned off for your account.")
    wait = max(1, math.ceil(ahead - window))
    raise RateLimited(
        f"You may submit or requeue {limit} jobs a minute. Try again in {wait} seconds.", retry_after=wait
    )


def bound_spec(user, spec: JobSpec) -> JobSpec:
    """Return `spec` within what a non-staff user may choose, so that one user cannot hold the workers.

    Such a user's job runs for at most JOBS_USER_MAX_TIMEOUT seconds an
    attempt: a longer `timeout` is refused, and a type whose own timeout is
    longer gets that one. A payload that asks to run that long or longer
    (a field declared as a duration) is refused: it could only time out.
    High priority is for staff, and a `run_at` in the past, which would
    put the job ahead of every other waiting one, counts as now. With
    JOBS_USER_MAX_RUNNING set, the job's concurrency key is its owner's
    (owner_key), so workers hold at most that many of the owner's jobs at
    once and the owners waiting take turns.
    Raise OptionNotAllowed or PayloadError, naming the field. The spec is
    not validated again: this reads its handler and normalized payload.
    """
    if not limits_apply(user):
        return spec
    handler = spec.handler
    cap = conf.get("JOBS_USER_MAX_TIMEOUT")
    errors = {}
    if spec.priority == Priority.HIGH:
        errors["priority"] = ["Only staff may submit high-priority jobs; use normal or low."]
    if spec.timeout is not None and spec.timeout > cap:
        errors["timeout"] = [f"Must be at most {cap:g} seconds."]
    if errors:
        raise OptionNotAllowed(errors)
    changes = {}
    if spec.timeout is None and (handler.timeout or conf.get("JOBS_DEFAULT_TIMEOUT")) > cap:
        changes["timeout"] = cap
    if isinstance(handler.validate, PayloadSchema) and isinstance(spec.payload, dict):
        too_long = {
            field.name: [f"Must be less than {cap:g} seconds, the longest one attempt of your jobs may run."]
            for field in handler.validate.fields
            if field.duration and isinstance(spec.payload.get(field.name), (int, float))
            and spec.payload[field.name] >= cap
        }
        if too_long:
            raise PayloadError(too_long)
    if spec.run_at is not None and spec.run_at < timezone.now():
        changes["run_at"] = None  # the database's clock sets it: now, behind every job already waiting
    concurrency = owner_concurrency(user)
    # A key that its type made of the payload may name an owner's key, maybe
    # another user's, whose slots are not this user's to take: theirs instead.
    owners = spec.concurrency_key is not None and spec.concurrency_key.startswith(OWNER_KEY_PREFIX)
    if concurrency is not None and (spec.concurrency_key is None or owners):
        changes["concurrency_key"], changes["key_limit"] = concurrency
    return spec.with_options(**changes) if changes else spec


def owner_concurrency(user) -> tuple[str, int] | None:
    """Return the concurrency key and limit the jobs of `user` share, or None if no running limit applies.

    With JOBS_USER_MAX_RUNNING set, every job of a non-staff user carries
    the key "owner:<id>" with that limit, from its submission, retry or
    requeue on, so the claim holds at most that many of them at once. A
    job whose type gives it a key of its own keeps that key and its limits:
    a job has one key, and an operator's limit on a type's keys (which
    spares the service behind them) is not for a user's job to escape.
    """
    limit = conf.get("JOBS_USER_MAX_RUNNING")
    if limit is None or not limits_apply(user):
        return None
    return f"{OWNER_KEY_PREFIX}{user.pk}", limit


def submit_job(*, user, spec: JobSpec | None = None, type: str | None = None, payload=None,
               idempotency_key: str | None = None, **options) -> Submission:
    """Enqueue a job owned by `user` if their limits allow it.

    `spec` is the job's validated spec (jobs.spec.build, with `user` as
    its owner and the request's `idempotency_key`); without one, `type`,
    `payload`, `idempotency_key` and the keyword options of build make it
    here. Either way the payload is validated once.

    With an `idempotency_key`, a repeat of a request that already made a
    job returns that job (even if the limits are reached meanwhile); the
    same key with a different type or payload raises IdempotencyConflict.
    Raise RateLimited or TooManyActiveJobs when a limit is reached,
    OptionNotAllowed or PayloadError for what only staff may ask for
    (bound_spec), the errors of jobs.spec.build for an invalid job and
    those of queue.enqueue for an owner who may not have it.
    """
    if spec is None:
        if type is None:
            raise TypeError("submit_job() takes a spec, or a type with its payload and options.")
        spec = job_spec.build(type, payload, owner=user, idempotency_key=idempotency_key, **options)
    elif type is not None or payload is not None or idempotency_key is not None or options:
        raise TypeError("submit_job() takes a spec alone, or a type with its payload and options.")
    elif spec.owner != user:
        raise ValueError("The spec is of a job of another owner.")
    idempotency_key = spec.idempotency_key
    spec = bound_spec(user, spec)
    limited = limits_apply(user)
    with transaction.atomic():
        if idempotency_key:
            # Staff too: a repeat sent while the first is in flight waits for it, then replays it.
            lock_user(user)
            earlier = Job.objects.filter(owner=user, idempotency_key=idempotency_key).first()
            if earlier is not None:
                if earlier.type != spec.type or earlier.payload != spec.payload:
                    raise IdempotencyConflict(
                        "This Idempotency-Key was already used for a different request."
                    )
                return Submission(job=earlier, replayed=True)
        if limited:
            check_rate_limit(spend_submission(user))
        try:
            # The cap is checked by the insert itself, the first statement after the lock.
            job = queue.enqueue(spec, owner_max_active=conf.get("JOBS_USER_MAX_ACTIVE") if limited else None)
        except OwnerAtCapacity:
            # Counted again for the message; one may have finished since the insert.
            limit = conf.get("JOBS_USER_MAX_ACTIVE")
            check_active_limit(max(count_active(user), limit))
    return Submission(job=job)


def retry_for_user(user, job_id: int) -> None:
    """Requeue one of the user's dead, cancelled or expired jobs, within their limits.

    A requeued job runs again as a new one would, so it spends the same
    allowance as a submission, counts toward the active-job cap and shares
    its owner's running limit (owner_concurrency).
    """
    with transaction.atomic():
        lock_user(user)
        queue.retry_job(job_id, concurrency=owner_concurrency(user))
        if limits_apply(user):
            # After the retry, which a refusal rolls back, so that a job that
            # may not be retried (409) spends nothing. It is active now: the
            # cap counts the others.
            check_rate_limit(spend_submission(user))
            check_active_limit(count_active(user) - 1)


def requeue_dead_for_user(user, *, job_ids: list[int] | None = None, max_jobs: int | None = None) -> list[int]:
    """Requeue the user's dead jobs (all of them, or `job_ids`), at most `max_jobs`; return the ids.

    For users with limits, each requeued job spends one submission of their
    allowance, and the number requeued is capped by what is left of it and
    by the room under their active-job cap. With no room in one of them at
    all, raise RateLimited or TooManyActiveJobs.
    """
    dead = queue.dead_jobs(ids=job_ids, owner=None if user.is_staff else user)
    with transaction.atomic():
        lock_user(user)
        if not limits_apply(user):
            return queue.requeue_dead(dead, limit=max_jobs)
        active = count_active(user)
        room = conf.get("JOBS_USER_MAX_ACTIVE") - active
        left = submissions_left(user)
        if (room <= 0 or left <= 0) and dead.exists():
            check_active_limit(active)
            check_rate_limit(spend_submission(user))  # spends past the allowance, so it raises
        max_jobs = max(0, min(room, left) if max_jobs is None else min(max_jobs, room, left))
        ids = queue.requeue_dead(dead, limit=max_jobs, concurrency=owner_concurrency(user))
        if ids:
            check_rate_limit(spend_submission(user, len(ids)))
        return ids


def requeue_room(user) -> int | None:
    """Return how many jobs `user` could requeue now within their limits, or None for no limit.

    A reading for a confirmation page: nothing is locked, so it may be
    stale by the time the user confirms; the requeue itself checks again.
    """
    if not limits_apply(user):
        return None
    return min(max(0, conf.get("JOBS_USER_MAX_ACTIVE") - count_active(user)), submissions_left(user))

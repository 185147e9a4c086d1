"""What users and operators do to jobs: cancel, retry, run now, requeue from the DLQ.

Each is a guarded UPDATE through the ORM: it names the statuses it may
start from, and treats zero updated rows as "not allowed".
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from jobs import events
from jobs.errors import IllegalTransition
from jobs.flow import OWNER_KEY_PREFIX
from jobs.models import ACTIVE_STATUSES, READY_STATUSES, Job, JobStatus
from jobs.queue.produce import CANCEL_REQUESTED, notify, wake_name
from jobs.registry import staff_only_types

# Statuses from which a dead-letter style requeue is legal.
REQUEUEABLE_STATUSES = (JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED)
# Statuses whose wait "run now" cuts short.
WAITING_STATUSES = (JobStatus.SCHEDULED, JobStatus.RETRYING)
# A job no worker holds any more: its worker, if it still runs it, can no longer write to it.
NO_LEASE = {"leased_by": None, "lease_token": None, "lease_expires_at": None}


def _guarded(job_id: int, allowed: tuple[str, ...], action: str, **changes) -> None:
    """Apply `changes` to one job if its status is in `allowed`; raise IllegalTransition otherwise."""
    updated = Job.objects.filter(pk=job_id, status__in=allowed).update(**changes)
    if not updated:
        current = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        if current is None:
            raise Job.DoesNotExist(f"Job {job_id} does not exist.")
        raise IllegalTransition(f"Cannot {action} job {job_id}: it is {current}.")


def _wake_name(queue: str, key: str | None, priority: int) -> str:
    """Return what a NOTIFY names to wake the workers for a job of `queue`, its concurrency key and priority."""
    return wake_name(queue, keyed=key is not None, priority=priority)


def _announce(job_id: int, status: str) -> str:
    """Publish the change of one job after commit; return the name that wakes the workers for it (_wake_name)."""
    queue, key, priority, owner_id = Job.objects.values_list("queue", "concurrency_key", "priority", "owner_id").get(
        pk=job_id)
    events.jobs_changed([job_id], [owner_id], status)
    return _wake_name(queue, key, priority)


def _requeue_changes(concurrency: tuple[str, int] | None = None) -> dict:
    """Return the changes of a requeue; `concurrency` is the (key, limit) the job shares from now on, if given."""
    changes: dict[str, object] = {
        "status": JobStatus.QUEUED, "attempts": 0, "run_at": Now(), "finished_at": None,
        "started_at": None, "result": None, "progress": 0, "expires_at": None, **NO_LEASE,
    }
    if concurrency is not None:
        key, limit = concurrency
        # A job with a key of its type's keeps it; one with none, or an
        # owner's, takes this one.
        of_its_own = Q(concurrency_key__isnull=False) & ~Q(concurrency_key__startswith=OWNER_KEY_PREFIX)
        changes["concurrency_key"] = Case(When(of_its_own, then=F("concurrency_key")), default=Value(key))
        changes["key_limit"] = Case(When(of_its_own, then=F("key_limit")), default=Value(limit))
    return changes


def cancel_job(job_id: int) -> None:
    """Cancel a job that has not finished.

    One that no handler runs yet (waiting, or claimed by a worker for a
    slot) is `cancelled` at once; its worker, told at once, drops it. For a
    running one the cancel is asked for: its handler sees `job.cancelled`,
    and its worker ends it `cancelled` when the handler stops, or stops it
    after JOBS_CANCEL_GRACE seconds as a timeout does. Cancelling a job
    whose cancel was asked for already changes nothing.
    """
    with transaction.atomic():
        held = Job.objects.filter(pk=job_id, status=JobStatus.CLAIMED).exists()
        if Job.objects.filter(pk=job_id, status__in=(*READY_STATUSES, JobStatus.CLAIMED)).update(
                status=JobStatus.CANCELLED, finished_at=Now(), **NO_LEASE):
            _announce(job_id, JobStatus.CANCELLED)
            if held:
                notify([CANCEL_REQUESTED])
            return
        if Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, cancel_requested_at__isnull=True).update(
                cancel_requested_at=Now()):
            notify([CANCEL_REQUESTED])
            _announce(job_id, JobStatus.RUNNING)
            return
        if Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).exists():
            return  # asked for already
    _guarded(job_id, ACTIVE_STATUSES, "cancel")  # raises, saying why


def _owner_may_not_run(queryset):
    """Return the jobs in `queryset` of a type only staff may have whose owner is not staff (any more).

    Such a job, submitted while its owner was staff, must not come back
    through a retry or a requeue; the handler checks the owner again when
    it runs, for a change made after that.
    """
    return queryset.filter(type__in=staff_only_types(), owner__is_staff=False)


def retry_job(job_id: int, *, concurrency: tuple[str, int] | None = None) -> None:
    """Requeue a dead, cancelled or expired job with a fresh set of retries.

    With `concurrency`, a (key, limit), the job runs again under that
    concurrency key and limit. Raise IllegalTransition for a job of a
    staff-only type whose owner is not staff, as for a job in a status
    that cannot be retried.
    """
    refused = _owner_may_not_run(Job.objects.filter(pk=job_id)).values_list("type", flat=True).first()
    if refused is not None:
        raise IllegalTransition(f"Cannot retry job {job_id}: only staff may run {refused} jobs, and its owner is not staff.")
    _guarded(job_id, REQUEUEABLE_STATUSES, "retry", **_requeue_changes(concurrency))
    notify([_announce(job_id, JobStatus.QUEUED)])


def retry_now(job_id: int) -> None:
    """Run a scheduled or retrying job as soon as a worker is free, instead of at its run_at."""
    _guarded(job_id, WAITING_STATUSES, "run now", status=JobStatus.QUEUED, run_at=Now())
    notify([_announce(job_id, JobStatus.QUEUED)])


def cancel_jobs(queryset) -> int:
    """Cancel every unfinished job in `queryset` as cancel_job does; return how many were cancelled or asked to stop."""
    with transaction.atomic():
        # Lock the unfinished rows first, so the events name exactly the jobs cancelled.
        rows = list(
            queryset.filter(status__in=ACTIVE_STATUSES).select_for_update(of=("self",)).order_by()
            .values_list("pk", "owner_id", "status")
        )
        waiting = [(pk, owner) for pk, owner, status in rows if status != JobStatus.RUNNING]
        running = [(pk, owner) for pk, owner, status in rows if status == JobStatus.RUNNING]
        updated = Job.objects.filter(pk__in=[pk for pk, _ in waiting]).update(
            status=JobStatus.CANCELLED, finished_at=Now(), **NO_LEASE
        )
        asked = Job.objects.filter(pk__in=[pk for pk, _ in running], cancel_requested_at__isnull=True).update(
            cancel_requested_at=Now())
        if any(status == JobStatus.CLAIMED for _, _, status in rows) or asked:
            notify([CANCEL_REQUESTED])
        events.jobs_changed([pk for pk, _ in waiting], [owner for _, owner in waiting], JobStatus.CANCELLED)
        events.jobs_changed([pk for pk, _ in running], [owner for _, owner in running], JobStatus.RUNNING)
    return updated + len(running)


def retry_jobs_now(queryset) -> int:
    """Make every scheduled or retrying job in `queryset` due now; return how many."""
    ids = list(queryset.filter(status__in=WAITING_STATUSES).values_list("pk", flat=True))
    updated = Job.objects.filter(pk__in=ids, status__in=WAITING_STATUSES).update(status=JobStatus.QUEUED, run_at=Now())
    if updated:
        rows = list(Job.objects.filter(pk__in=ids).values_list("pk", "queue", "owner_id", "concurrency_key", "priority"))
        notify(_wake_name(queue, key, priority) for _, queue, _, key, priority in rows)
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


def requeue_dead(queryset, *, limit: int | None = None, concurrency: tuple[str, int] | None = None) -> list[int]:
    """Requeue the dead jobs in `queryset` (at most `limit`); return their ids.

    Jobs in any other status are left alone, so a stale selection is safe,
    and so are jobs of a staff-only type whose owner is not staff. With
    `concurrency`, as for retry_job, the jobs run again under that key.
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
        Job.objects.filter(pk__in=ids).update(**_requeue_changes(concurrency))
        if ids:
            rows = list(Job.objects.filter(pk__in=ids).values_list("pk", "queue", "owner_id", "concurrency_key",
                                                                  "priority"))
            notify(_wake_name(queue, key, priority) for _, queue, _, key, priority in rows)
            events.jobs_changed([row[0] for row in rows], [row[2] for row in rows], JobStatus.QUEUED, 0)
    return sorted(ids)

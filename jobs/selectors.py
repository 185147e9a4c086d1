"""Read-side queries over jobs and workers, shared by the admin, commands, API and dashboard.

Counts are GROUP BY queries run in the database; nothing here loops over
job rows in Python. Time comes from the database's now(), so "alive" means
the same thing to every caller however far its clock has drifted.
"""

from datetime import timedelta

from django.db.models import (
    Aggregate,
    Avg,
    BooleanField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Min,
    Q,
    Sum,
)
from django.db.models.functions import Extract, Now
from django.utils import timezone

from jobs import conf
from jobs.models import READY_STATUSES, Job, JobStatus, Priority, Worker


def status_counts() -> dict[str, int]:
    """Return the number of jobs in each status, with every status present."""
    counts = dict(Job.objects.order_by().values_list("status").annotate(n=Count("pk")))
    return {status: counts.get(status, 0) for status in JobStatus.values}


def queue_status_counts() -> dict[str, dict[str, int]]:
    """Return {queue: {status: count}} for every queue that holds a job, every status present."""
    rows = Job.objects.order_by().values_list("queue", "status").annotate(n=Count("pk"))
    by_queue: dict[str, dict[str, int]] = {}
    for queue, status, n in rows:  # one row per (queue, status) pair, not per job
        by_queue.setdefault(queue, dict.fromkeys(JobStatus.values, 0))[status] = n
    return dict(sorted(by_queue.items()))


def worker_alive_condition() -> Q:
    """Return the condition of a worker that has not stopped and whose heartbeat is fresh."""
    stale_after = timedelta(seconds=conf.get("JOBS_WORKER_STALE_AFTER"))
    return Q(stopped_at__isnull=True, heartbeat_at__gt=Now() - stale_after)


def with_liveness(workers=None):
    """Annotate `workers` (every worker by default) with `alive` and `heartbeat_age`, a timedelta."""
    workers = Worker.objects.all() if workers is None else workers
    return workers.annotate(
        alive=ExpressionWrapper(worker_alive_condition(), output_field=BooleanField()),
        heartbeat_age=Now() - F("heartbeat_at"),
    )


def live_workers():
    """Return the workers that are alive, by hostname and pid."""
    return with_liveness().filter(worker_alive_condition()).order_by("hostname", "pid")


def worker_capacity() -> dict[str, int]:
    """Return how many workers are alive, their handler slots, and how many were busy at the last heartbeat."""
    totals = Worker.objects.filter(worker_alive_condition()).aggregate(
        alive=Count("pk"), slots=Sum("concurrency", default=0), busy=Sum("busy", default=0)
    )
    return {name: int(value) for name, value in totals.items()}


def oldest_waiting_by_queue() -> dict[str, float]:
    """Return, per queue with a job that is due and unclaimed, the seconds since the oldest became due.

    Only ready rows are read (the claim index covers them), not the whole table.
    """
    rows = (
        Job.objects.order_by()
        .filter(status__in=READY_STATUSES, run_at__lte=Now())
        .values("queue")
        .annotate(age=ExpressionWrapper(Now() - Min("run_at"), output_field=DurationField()))
        .values_list("queue", "age")
    )
    return {queue: max(age.total_seconds(), 0.0) for queue, age in rows}  # one row per queue


def queue_overview() -> dict:
    """Return job counts per status and per queue, and the live workers, as plain data.

    The per-status totals are summed from the per-queue counts, so the jobs
    table is scanned once.
    """
    queues = queue_status_counts()
    statuses = {status: sum(counts[status] for counts in queues.values()) for status in JobStatus.values}
    workers = [
        {
            "id": str(w.id),
            "hostname": w.hostname,
            "pid": w.pid,
            "queues": w.queues,
            "concurrency": w.concurrency,
            "busy": w.busy,
            "processed": w.processed,
            "failed": w.failed,
            "started_at": w.started_at,
            "heartbeat_at": w.heartbeat_at,
            "heartbeat_age_seconds": round(max(w.heartbeat_age.total_seconds(), 0.0), 1),
        }
        for w in live_workers()
    ]
    return {"statuses": statuses, "total": sum(statuses.values()), "queues": queues, "workers": workers}


# --- Jobs as a user sees them (API and dashboard) -------------------------------
#
# A `scheduled` job whose run_at has passed is waiting like any queued job, so
# users see it as `queued`; `scheduled` means its run_at is still ahead.


def visible_status_condition(status: str) -> Q:
    """Return the condition for jobs a user sees in `status`."""
    if status == JobStatus.QUEUED:
        return Q(status=JobStatus.QUEUED) | Q(status=JobStatus.SCHEDULED, run_at__lte=Now())
    if status == JobStatus.SCHEDULED:
        return Q(status=JobStatus.SCHEDULED, run_at__gt=Now())
    return Q(status=status)


def visible_status(job: Job, now=None) -> str:
    """Return the status `job` shows to users."""
    if job.status == JobStatus.SCHEDULED and job.run_at <= (now or timezone.now()):
        return JobStatus.QUEUED
    return job.status


JOB_ORDERINGS = ("id", "created_at", "run_at", "priority", "status", "finished_at")


def job_list_for_user(user, *, statuses=(), type=None, queue=None, priorities=(), created_after=None,
                      created_before=None, ordering="-id"):
    """Return the jobs `user` may see (their own; all for staff), filtered and ordered."""
    jobs = Job.objects.for_user(user).select_related("owner")
    if statuses:
        condition = Q()
        for status in statuses:
            condition |= visible_status_condition(status)
        jobs = jobs.filter(condition)
    if type:
        jobs = jobs.filter(type=type)
    if queue:
        jobs = jobs.filter(queue=queue)
    if priorities:
        jobs = jobs.filter(priority__in=priorities)
    if created_after:
        jobs = jobs.filter(created_at__gte=created_after)
    if created_before:
        jobs = jobs.filter(created_at__lt=created_before)
    field = ordering.lstrip("-")
    if field not in JOB_ORDERINGS:
        raise ValueError(f"Cannot order by {ordering!r}.")
    descending = ordering.startswith("-")
    # id breaks ties, so pages never repeat or skip a row.
    return jobs.order_by(ordering, "-id" if descending else "id") if field != "id" else jobs.order_by(ordering)


class Percentile(Aggregate):
    """percentile_cont(fraction) over the expression: the continuous percentile."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"


def job_stats(jobs) -> dict:
    """Return counts and timings over `jobs`, in a handful of aggregate queries."""
    statuses = dict.fromkeys(JobStatus.values, 0)
    for status, due, n in (
        jobs.order_by()
        .annotate(due=ExpressionWrapper(Q(run_at__lte=Now()), output_field=BooleanField()))
        .values_list("status", "due")
        .annotate(n=Count("pk"))
    ):
        statuses[JobStatus.QUEUED if status == JobStatus.SCHEDULED and due else status] += n
    priorities = dict.fromkeys(Priority.labels, 0)
    for priority, n in jobs.order_by().values_list("priority").annotate(n=Count("pk")):
        priorities[Priority(priority).label] = n
    types = dict(jobs.order_by().values_list("type").annotate(n=Count("pk")).order_by("type"))

    finished = Q(status__in=(JobStatus.COMPLETED, JobStatus.DEAD))
    minute, hour = Now() - timedelta(minutes=1), Now() - timedelta(hours=1)
    run_seconds = Extract(F("finished_at") - F("started_at"), "epoch")
    recent = jobs.order_by().aggregate(
        finished_last_minute=Count("pk", filter=finished & Q(finished_at__gte=minute)),
        finished_last_hour=Count("pk", filter=finished & Q(finished_at__gte=hour)),
        completed=Count("pk", filter=Q(status=JobStatus.COMPLETED)),
        dead=Count("pk", filter=Q(status=JobStatus.DEAD)),
    )
    timing = jobs.order_by().filter(status=JobStatus.COMPLETED, finished_at__gte=hour, started_at__isnull=False).aggregate(
        mean=Avg(run_seconds, output_field=FloatField()),
        p95=Percentile(run_seconds, fraction=0.95, output_field=FloatField()),
    )
    done = recent["completed"] + recent["dead"]
    return {
        "by_status": statuses,
        "by_priority": priorities,
        "by_type": types,
        "finished_last_minute": recent["finished_last_minute"],
        "finished_last_hour": recent["finished_last_hour"],
        "success_rate": round(recent["completed"] / done, 4) if done else None,
        "run_time_mean_seconds": round(timing["mean"], 4) if timing["mean"] is not None else None,
        "run_time_p95_seconds": round(timing["p95"], 4) if timing["p95"] is not None else None,
    }

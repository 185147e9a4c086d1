"""Read-side queries over jobs and workers, shared by the admin, commands, API and dashboard.

Counts are GROUP BY queries or capped index scans run in the database;
nothing here loops over job rows in Python. Time comes from the database's now(), so "alive" means
the same thing to every caller however far its clock has drifted.
"""

from datetime import timedelta

from django.db import connection, transaction
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
from jobs.models import (
    HELD_STATUSES,
    READY_STATUSES,
    Job,
    JobCounter,
    JobStatus,
    KeyLimit,
    Priority,
    QueueControl,
    Schedule,
    ScheduleTick,
    Worker,
    priority_label,
)

# --- Counts by status: the one read model every reader uses ---------------------
#
# The API's stats, the dashboard's overview and worker cards, the /metrics
# gauges and `manage.py queue_status` all count through status_counts(), so
# they agree on what each status holds: the status as stored. Nothing is
# relabelled at read time; the queue's leader stages due scheduled and
# retrying jobs to `queued` itself.

# What status_counts() may count per, besides the status.
COUNT_GROUPS = ("queue", "leased_by")


def status_counts(user=None, *, statuses=None, per: str | None = None, cap: int | None = None) -> dict:
    """Return how many jobs are in each status, with every status asked for present.

    `user` narrows the count to the jobs that user may see (their own; all
    for staff); None counts every job. `statuses` limits it to those
    statuses (all by default). `per`, "queue" or "leased_by", returns
    {value: {status: count}} for each value that holds a job, sorted;
    otherwise {status: count}. `cap` stops each count at cap + 1 rows, so
    that it costs the same on a table of millions: a count past `cap` is a
    lower bound. A capped count is not kept per group.
    """
    statuses = list(JobStatus.values if statuses is None else statuses)
    if per is not None and per not in COUNT_GROUPS:
        raise ValueError(f"Cannot count per {per!r}; use one of {', '.join(COUNT_GROUPS)}.")
    if cap is not None:
        if per is not None:
            raise ValueError("A capped count is not kept per group.")
        return _capped_status_counts(user, statuses, cap)
    jobs = Job.objects.all() if user is None else Job.objects.for_user(user)
    jobs = jobs.order_by().filter(status__in=statuses)
    if per is None:
        counts = dict(jobs.values_list("status").annotate(n=Count("pk")))
        return {status: counts.get(status, 0) for status in statuses}
    groups: dict = {}
    for group, status, n in jobs.values_list(per, "status").annotate(n=Count("pk")):
        # One row per (group, status) pair, not per job.
        groups.setdefault(group, dict.fromkeys(statuses, 0))[status] = n
    return dict(sorted(groups.items(), key=lambda item: str(item[0])))


def _capped_status_counts(user, statuses: list[str], cap: int) -> dict[str, int]:
    if user is None or user.is_staff:
        where, params = "TRUE", []
    else:
        where, params = "owner_id = %s", [user.pk]
    # One capped scan per status, LIMIT stopping each at the cap instead of
    # reading every row. The statuses are written into the SQL: the status
    # indexes leave completed jobs out, and only a literal status lets the
    # planner see that it may use them. Completed jobs are found through
    # job_finished_idx (every one has finished_at).
    for status in statuses:
        JobStatus(status)  # only a status's own text is ever written into the SQL
    sql = " UNION ALL ".join(
        f"""SELECT '{status}', (
            SELECT count(*) FROM (
                SELECT 1 FROM {Job._meta.db_table}
                WHERE status = '{status}' {"AND finished_at IS NOT NULL" if status == JobStatus.COMPLETED else ""}
                  AND {where} LIMIT %s
            ) AS capped
        )"""  # noqa: S608 - table names and constants only; values are parameters
        for status in statuses
    )
    with transaction.atomic(), connection.cursor() as cursor:
        # Index scans only, which stop at the LIMIT. A bitmap scan reads every
        # matching index entry before the first row (all 100,000 queued jobs
        # for a count of 10,000), and, like a sequential scan of completed
        # jobs, costs the workers more the more jobs there are. A plain index
        # scan also marks the entries of jobs that left a status as dead, so
        # the next count skips them. Chosen here, since the planner's
        # estimates lag behind a table that churns this fast.
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(sql, [value for _ in statuses for value in (*params, cap + 1)])
        return dict(cursor.fetchall())


def held_counts_by_worker() -> dict:
    """Return {worker id: {"claimed": n, "running": n}} for every worker that holds a job.

    One grouped query over the held jobs alone (job_held_lease_idx covers
    them): they are few, at most each worker's slots and prefetch.
    """
    return status_counts(statuses=HELD_STATUSES, per="leased_by")


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
    """Return job counts per status and per queue, and the live workers with the jobs they hold, as plain data.

    The per-status totals are summed from the per-queue counts, so the jobs
    table is scanned once.
    """
    queues = status_counts(per="queue")
    statuses = {status: sum(counts[status] for counts in queues.values()) for status in JobStatus.values}
    held = held_counts_by_worker()
    workers = [
        {
            "id": str(w.id),
            "hostname": w.hostname,
            "pid": w.pid,
            "queues": w.queues,
            "concurrency": w.concurrency,
            "busy": w.busy,
            # The worker's jobs as stored: started by a slot, or waiting in its memory for one.
            "running": held.get(w.id, {}).get(JobStatus.RUNNING, 0),
            "claimed": held.get(w.id, {}).get(JobStatus.CLAIMED, 0),
            "processed": w.processed,
            "failed": w.failed,
            "started_at": w.started_at,
            "heartbeat_at": w.heartbeat_at,
            "heartbeat_age_seconds": round(max(w.heartbeat_age.total_seconds(), 0.0), 1),
        }
        for w in live_workers()
    ]
    return {"statuses": statuses, "total": sum(statuses.values()), "queues": queues, "workers": workers}


# --- Queues and their flow control (staff) ----------------------------------------


def known_queues() -> set[str]:
    """Return the queues an operator may name: configured, controlled, ever enqueued to, or served by a live worker.

    Read from small tables only (the counters keep every queue a job was
    ever enqueued to), never from the jobs table.
    """
    names = {conf.get("JOBS_DEFAULT_QUEUE"), *(conf.get("JOBS_QUEUES") or {})}
    names.update(QueueControl.objects.values_list("name", flat=True))
    names.update(JobCounter.objects.filter(name="enqueued").values_list("queue", flat=True).distinct())
    for served in Worker.objects.filter(worker_alive_condition()).values_list("queues", flat=True):
        names.update(served)
    names.discard("")
    return names


def queue_list() -> list[dict]:
    """Return each known queue with its controls (None: it has none), job counts, key limits and oldest wait."""
    counts = status_counts(per="queue")
    controls = {control.name: control for control in QueueControl.objects.all()}
    key_limits: dict[str, int] = {}
    for name in KeyLimit.objects.values_list("queue", flat=True):
        key_limits[name] = key_limits.get(name, 0) + 1
    oldest = oldest_waiting_by_queue()
    return [
        {"name": name, "control": controls.get(name), "counts": counts.get(name, dict.fromkeys(JobStatus.values, 0)),
         "key_limits": key_limits.get(name, 0), "oldest_wait_seconds": oldest.get(name)}
        for name in sorted(known_queues() | set(counts))
    ]


# --- Jobs as a user sees them (API and dashboard) -------------------------------


JOB_ORDERINGS = ("id", "created_at", "run_at", "priority", "status", "finished_at")


def job_list_for_user(user, *, statuses=(), type=None, queue=None, priorities=(), created_after=None,
                      created_before=None, ordering="-id"):
    """Return the jobs `user` may see (their own; all for staff), filtered and ordered."""
    jobs = Job.objects.for_user(user).select_related("owner")
    if statuses:
        jobs = jobs.filter(status__in=statuses)
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


def job_stats(user) -> dict:
    """Return counts and timings over the jobs `user` may see, in a handful of aggregate queries."""
    jobs = Job.objects.for_user(user)
    statuses = status_counts(user)
    priorities = dict.fromkeys(Priority.labels, 0)
    for priority, n in jobs.order_by("-priority").values_list("priority").annotate(n=Count("pk")):
        priorities[priority_label(priority)] = n
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


# --- schedules -----------------------------------------------------------------------------


def schedule_ticks(schedule_ids, *, per_schedule: int = 10) -> dict[int, list]:
    """Return each schedule's latest ticks, newest first, each with `job_status`: its job's status now.

    A job already pruned has the status "pruned"; a tick without a job, "".
    """
    ticks: dict[int, list] = {schedule_id: [] for schedule_id in schedule_ids}
    for schedule_id in ticks:
        # One short index range scan of scheduletick_once_per_tick per schedule.
        ticks[schedule_id] = list(ScheduleTick.objects.filter(schedule_id=schedule_id)
                                  .order_by("-tick_at")[:per_schedule])
    attach_tick_job_statuses([tick for rows in ticks.values() for tick in rows])
    return ticks


def attach_tick_job_statuses(ticks: list) -> None:
    """Set `job_status` on each tick: its job's status now, "pruned" once the job is gone, "" for a tick without one."""
    job_ids = [tick.job_id for tick in ticks if tick.job_id]
    statuses = dict(Job.objects.filter(pk__in=job_ids).values_list("pk", "status")) if job_ids else {}
    for tick in ticks:
        tick.job_status = statuses.get(tick.job_id, "pruned") if tick.job_id else ""


def schedule_tick_counts() -> list[tuple[str, int, int, int, int]]:
    """Return (name, enqueued, skipped, missed, paused) tick counts of every schedule."""
    return list(Schedule.objects.order_by("name").values_list(
        "name", "ticks_enqueued", "ticks_skipped", "ticks_missed", "ticks_paused"))


def overdue_schedules(now=None):
    """Return the enabled schedules whose next tick is later than the misfire grace: no scheduler fired it."""
    now = now or timezone.now()
    grace = timedelta(seconds=float(conf.get("JOBS_SCHEDULE_MISFIRE_GRACE_SECONDS")))
    return Schedule.objects.filter(enabled=True, next_fire_at__lt=now - grace)

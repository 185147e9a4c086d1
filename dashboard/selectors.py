"""Read-side queries of the dashboard, each scoped to what the user may see.

Every query here stays cheap on a jobs table of millions of rows: counts are
capped (statuses, waiting jobs) or read from per-minute counts (throughput),
lists are keyset-paginated on the primary key, and nothing loops over job
rows in Python. A non-staff user sees only their own jobs; staff see all.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max, Min, Value
from django.db.models.functions import MD5, Concat, Left, Now
from django.utils import timezone

from jobs import schedules as schedule_rules, selectors as jobs_selectors
from jobs.counters import FINISHED_BUCKET, FINISHED_TABLE
from jobs.models import (
    HELD_STATUSES,
    NAMED_PRIORITIES,
    READY_STATUSES,
    Job,
    JobStatus,
    Schedule,
    TickOutcome,
    Worker,
    priority_label,
)
from jobs.queue import ready_priorities
from jobs.selectors import job_list_for_user, live_workers, with_liveness
from jobs.waiting import REASONS, waiting_by_reason

JOB_TABLE = Job._meta.db_table

# Per-status counts stop at this many rows, so the overview costs the same
# on a table of millions: a count that reaches it is shown as "10,000+".
# Staff's counts at 100,000 cost 130 ms of database time per overview,
# taken from the workers on a small machine; at 10,000, 15 ms. Exact
# figures are in /metrics.
COUNT_CAP = 10_000
# The throughput chart: THROUGHPUT_BUCKETS intervals of THROUGHPUT_BUCKET each.
THROUGHPUT_BUCKET = FINISHED_BUCKET
THROUGHPUT_BUCKETS = 15
# How long one computed overview is reused, per user (or once for all staff):
# as long as a page waits between two refreshes (data-live-interval). The
# chart moves by the minute: it is kept longer.
OVERVIEW_CACHE_SECONDS = 2
THROUGHPUT_CACHE_SECONDS = 5
# Waiting jobs by reason read up to COUNT_CAP rows: shared this long, it costs a busy drain nothing to speak of.
WAITING_CACHE_SECONDS = 10
# DLQ groups: the error text that identifies a group, and how many groups are listed.
DLQ_ERROR_PREFIX = 500
DLQ_MAX_GROUPS = 100
# Requeueing a whole group takes at most this many jobs in one action.
DLQ_MAX_REQUEUE = 10_000

# Columns a job list shows; payload, result and history stay in the table.
LIST_COLUMNS = (
    "id", "type", "queue", "priority", "status", "attempts", "max_retries", "progress",
    "created_at", "started_at", "finished_at", "run_at", "error", "leased_by", "owner__username",
)


# Jobs waiting to run now. The statuses are literals, as job_claim_idx's condition is.
_DUE = f"status IN ({', '.join(repr(str(s)) for s in READY_STATUSES)}) AND run_at <= statement_timestamp()"


def _scope(user, alias: str = "") -> tuple[str, list]:
    """Return the SQL condition and parameters of the jobs `user` may see."""
    if user.is_staff:
        return "TRUE", []
    return f"{alias}owner_id = %s", [user.pk]


# --- Overview -------------------------------------------------------------------
#
# The counts by status are jobs.selectors.status_counts(), as everywhere
# else, capped at COUNT_CAP: one LIMITed index scan per status.


@dataclass
class Bucket:
    start: datetime
    completed: int
    failed: int


def throughput(user) -> list[Bucket]:
    """Return the jobs completed and moved to the DLQ per minute over the last 15 minutes, oldest first."""
    # The per-minute counts the finishing statements keep (jobs.counters),
    # not the jobs: a chart costs the same at any rate and survives pruning.
    where, params = _scope(user, alias="f.")
    sql = f"""
        WITH bounds AS (
            SELECT date_bin(%s, statement_timestamp(), TIMESTAMPTZ '2000-01-01') AS last_bucket
        )
        SELECT b.last_bucket, f.minute, sum(f.completed), sum(f.dead)
        FROM bounds b
        LEFT JOIN {FINISHED_TABLE} f ON f.minute >= b.last_bucket - %s AND {where}
        GROUP BY b.last_bucket, f.minute
    """  # noqa: S608 - table names and constants only; values are parameters
    span = THROUGHPUT_BUCKET * (THROUGHPUT_BUCKETS - 1)
    with connection.cursor() as cursor:
        cursor.execute(sql, [THROUGHPUT_BUCKET, span, *params])  # type: ignore[list-item]  # psycopg adapts timedelta; the stubs' parameter types leave it out
        rows = cursor.fetchall()
    last_bucket = rows[0][0]
    counts = {minute: (completed, dead) for _, minute, completed, dead in rows if minute is not None}
    buckets = []
    for index in range(THROUGHPUT_BUCKETS):
        start = last_bucket - THROUGHPUT_BUCKET * (THROUGHPUT_BUCKETS - 1 - index)
        completed, failed = counts.get(start, (0, 0))
        buckets.append(Bucket(start=start, completed=completed, failed=failed))
    return buckets


def _priorities() -> list[int]:
    """Return the priorities waiting jobs have, highest first: the named ones and those the claim index holds."""
    return sorted({*NAMED_PRIORITIES, *ready_priorities()}, reverse=True)


def queue_depth(user) -> tuple[list[dict], bool]:
    """Return the jobs due to run now per queue and priority, with the oldest run_at of each.

    For staff, of each priority, counts the COUNT_CAP + 1 jobs due first, in
    the order workers claim them, and returns whether any priority stopped
    there: the counts of that priority are then lower bounds, and a queue
    whose jobs of it are all further back is not listed. The oldest run_at
    of every listed row is exact either way, since each priority is read
    oldest first.
    """
    if user.is_staff:
        # One LIMITed range scan of job_claim_idx per priority that has
        # jobs, as a claim makes, instead of reading every waiting job (27 ms at 100,000).
        priorities = _priorities()
        sql = " UNION ALL ".join(
            f"""(SELECT queue, priority, run_at FROM {JOB_TABLE} WHERE {_DUE} AND priority = %s
                 ORDER BY run_at, id LIMIT %s)"""  # noqa: S608 - table names and constants only; values are parameters
            for _ in priorities
        )
        params = [value for p in priorities for value in (p, COUNT_CAP + 1)]
    else:
        # A user's own waiting jobs, through job_owner_status_idx; the claim
        # index would walk everyone's. A user's active jobs are few
        # (JOBS_USER_MAX_ACTIVE), and all of them are read.
        sql = f"SELECT queue, priority, run_at FROM {JOB_TABLE} WHERE owner_id = %s AND {_DUE}"  # noqa: S608 - table names and constants only; values are parameters
        params = [user.pk]
    sql = f"""
        SELECT queue, priority, count(*), min(run_at) FROM ({sql}) AS due
        GROUP BY queue, priority ORDER BY queue, priority DESC
    """  # noqa: S608 - table names and constants only; values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    sampled: Counter[int] = Counter()
    for _, priority, count, _ in rows:
        sampled[priority] += count
    capped = {priority for priority, total in sampled.items() if total > COUNT_CAP} if user.is_staff else set()
    depth = [
        {
            "queue": queue, "priority": priority, "priority_label": priority_label(priority), "count": count,
            "oldest": oldest,
            # Shown as "n+"; a count past the cap already is.
            "lower_bound": priority in capped and count <= COUNT_CAP,
        }
        for queue, priority, count, oldest in rows
    ]
    return depth, bool(capped)


def oldest_waiting(user) -> Job | None:
    """Return the job that has waited longest past its run_at, or None."""
    if user.is_staff:
        # One LIMIT 1 per priority that has jobs, each an index range scan on
        # job_claim_idx (priority, run_at, id); sorting all waiting jobs by run_at would read every one.
        params = _priorities()
        sql = " UNION ALL ".join(
            f"""(SELECT id FROM {JOB_TABLE} WHERE {_DUE} AND priority = %s
                 ORDER BY run_at, id LIMIT 1)"""  # noqa: S608 - table names and constants only; values are parameters
            for _ in params
        )
    else:
        # A user's own few waiting jobs, as in queue_depth().
        sql = f"SELECT id FROM {JOB_TABLE} WHERE owner_id = %s AND {_DUE} ORDER BY run_at, id LIMIT 1"  # noqa: S608 - table names and constants only; values are parameters
        params = [user.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()]
    return Job.objects.filter(pk__in=ids).only(*LIST_COLUMNS[:-1]).order_by("run_at", "id").first()


def _overview(user) -> dict:
    counts = jobs_selectors.status_counts(user, cap=COUNT_CAP)
    depth, depth_capped = queue_depth(user)
    return {
        "counts": counts,
        "total_capped": any(n > COUNT_CAP for n in counts.values()),
        # Held by a worker, waiting in its memory for a free slot: not in the
        # queue depth, but not done either.
        "claimed": counts[JobStatus.CLAIMED],
        "depth": depth,
        "depth_capped": depth_capped,
        "depth_cap": COUNT_CAP,
        "oldest": oldest_waiting(user),
        "workers_online": live_workers().count(),
        "dlq_size": counts[JobStatus.DEAD],
    }


def _waiting(user) -> dict:
    waiting, capped = waiting_by_reason(user, cap=COUNT_CAP)
    return {"waiting": [{"code": code, "label": REASONS[code], "count": n} for code, n in waiting.items()],
            "waiting_capped": capped}


def _cached(key: str, seconds: float, compute):
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, seconds)
    return value


def overview(user) -> dict:
    """Return everything the overview page shows, computed at most once a second per scope.

    All staff share one computation, however many dashboards they have open;
    each other user has their own.
    """
    scope = "staff" if user.is_staff else f"user:{user.pk}"
    data = _cached(f"dashboard:overview:{scope}", OVERVIEW_CACHE_SECONDS, lambda: _overview(user))
    chart = _cached(f"dashboard:throughput:{scope}", THROUGHPUT_CACHE_SECONDS, lambda: throughput(user))
    data = {**data, **_cached(f"dashboard:waiting:{scope}", WAITING_CACHE_SECONDS, lambda: _waiting(user))}
    return {**data, "throughput": chart}


# --- Job lists --------------------------------------------------------------------


@dataclass
class Page:
    jobs: list[Job]
    # Cursors for the neighbouring pages; None where there is none.
    newer: int | None
    older: int | None


def job_page(jobs, *, before: int | None = None, after: int | None = None, size: int = 50) -> Page:
    """Return one page of `jobs`, newest first, by keyset on the id.

    `before` gives the page of jobs older than that id, `after` the page of
    jobs newer than it; neither gives the newest page. Costs the same on
    page 1 and page 10,000, unlike OFFSET.
    """
    jobs = jobs.select_related("owner").only(*LIST_COLUMNS)
    if after is not None:
        rows = list(jobs.filter(pk__gt=after).order_by("id")[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        has_older = bool(rows)  # we came from there
    else:
        if before is not None:
            jobs = jobs.filter(pk__lt=before)
        rows = list(jobs.order_by("-id")[: size + 1])
        has_older = len(rows) > size
        rows = rows[:size]
        has_newer = before is not None
    attach_holders(rows)
    return Page(
        jobs=rows,
        newer=rows[0].pk if rows and has_newer else None,
        older=rows[-1].pk if rows and has_older else None,
    )


def filtered_jobs(user, *, status=None, type=None, queue=None, priority=None, since: timedelta | None = None):
    """Return the jobs `user` may see, narrowed by every filter given (the API's filters)."""
    return job_list_for_user(
        user,
        statuses=[status] if status else (),
        type=type,
        queue=queue,
        priorities=[priority] if priority is not None else (),
        created_after=timezone.now() - since if since is not None else None,
    )


def job_for_user(user, job_id: int) -> Job:
    """Return the job if `user` may see it, with its holder; raise Job.DoesNotExist otherwise."""
    job = Job.objects.for_user(user).select_related("owner").get(pk=job_id)
    attach_holders([job])
    return job


def attach_holders(jobs: list[Job]) -> None:
    """Set `holder` on each of `jobs`: the Worker holding its lease if it is claimed or running, else None.

    One query for the whole list, and none if no job on it is held. A
    holder whose row is gone (pruned) is None too; `leased_by` still names it.
    """
    held = {job.leased_by for job in jobs if job.status in HELD_STATUSES and job.leased_by}
    workers = Worker.objects.in_bulk(held) if held else {}
    for job in jobs:
        job.holder = workers.get(job.leased_by) if job.status in HELD_STATUSES else None


# --- The DLQ ------------------------------------------------------------------------


def _dead_with_group(user):
    # A group is a type and the start of its error text: errors that differ
    # only past DLQ_ERROR_PREFIX characters (a long traceback, say) are one
    # failure. The md5 of both names the group in URLs.
    return (
        Job.objects.for_user(user).dead().order_by()
        .annotate(error_head=Left("error", DLQ_ERROR_PREFIX))
        .annotate(group=MD5(Concat("type", Value("\n"), Left("error", DLQ_ERROR_PREFIX))))
    )


def dlq_groups(user) -> list[dict]:
    """Return the dead jobs grouped by type and error, largest group first."""
    rows = (
        _dead_with_group(user).values("group", "type", "error_head")
        .annotate(count=Count("pk"), first_failed=Min("finished_at"), last_failed=Max("finished_at"), newest_id=Max("pk"))
        .order_by("-count", "-last_failed")[:DLQ_MAX_GROUPS]
    )
    return list(rows)


def dlq_group(user, group: str) -> dict | None:
    """Return the summary of one DLQ group, or None if it has no dead jobs."""
    rows = list(
        _dead_with_group(user).filter(group=group).values("group", "type", "error_head")
        .annotate(count=Count("pk"), first_failed=Min("finished_at"), last_failed=Max("finished_at"))[:1]
    )
    return rows[0] if rows else None


def dlq_group_jobs(user, group: str):
    """Return the dead jobs of one group as a queryset."""
    return _dead_with_group(user).filter(group=group)


def dlq_group_ids(user, group: str, limit: int = DLQ_MAX_REQUEUE) -> list[int]:
    """Return the ids of up to `limit` dead jobs of one group, oldest first."""
    return list(_dead_with_group(user).filter(group=group).order_by("pk").values_list("pk", flat=True)[:limit])


# --- Workers ------------------------------------------------------------------------


def workers_for_dashboard(recent: timedelta = timedelta(hours=1)) -> list[Worker]:
    """Return the live workers, then those gone within `recent`, each with liveness and the jobs it holds.

    `claimed` and `running` count the worker's jobs by status as stored
    (one grouped query over the held jobs); `busy` is what its last
    heartbeat reported.
    """
    workers = list(with_liveness().filter(heartbeat_at__gte=Now() - recent).order_by("-alive", "hostname", "pid"))
    held = jobs_selectors.held_counts_by_worker() if workers else {}
    for worker in workers:
        counts = held.get(worker.id, {})
        worker.claimed = counts.get(JobStatus.CLAIMED, 0)
        worker.running = counts.get(JobStatus.RUNNING, 0)
    return workers


# --- Schedules -------------------------------------------------------------------------------


def schedules_for_dashboard(*, now=None, next_count: int = 5, tick_count: int = 5) -> list[dict]:
    """Return each schedule with its next fire times in its own zone, its last ticks and whether it is overdue.

    Overdue: enabled, and its next tick is later than the misfire grace
    without having fired, so no scheduler is running (no worker leads).
    """
    now = now or timezone.now()
    rows = list(Schedule.objects.order_by("name"))
    ticks = jobs_selectors.schedule_ticks([s.pk for s in rows], per_schedule=tick_count)
    overdue = set(jobs_selectors.overdue_schedules(now).values_list("pk", flat=True))
    result = []
    for schedule in rows:
        zone = schedule_rules.zone(schedule.timezone)
        upcoming = schedule_rules.cadence_of(schedule).next_ticks(now, next_count) if schedule.enabled else []
        recent = ticks[schedule.pk]
        result.append({
            "schedule": schedule,
            # Formatted here: a template's date filter would show them in the viewer's zone instead.
            "next_times": [tick.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z") for tick in upcoming],
            "ticks": recent,
            "missed": sum(1 for tick in recent if tick.outcome == TickOutcome.MISSED),
            "overdue": schedule.pk in overdue,
        })
    return result

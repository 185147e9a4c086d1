"""Read-side queries over jobs and workers, shared by the admin, commands, API and dashboard.

Counts are GROUP BY queries run in the database; nothing here loops over
job rows in Python. Time comes from the database's now(), so "alive" means
the same thing to every caller however far its clock has drifted.
"""

from datetime import timedelta

from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from jobs import conf
from jobs.models import Job, JobStatus, Worker


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

"""Worker rows: registration, the heartbeat that renews a worker's leases, and the end."""

import uuid
from datetime import timedelta

from django.db.models.functions import Now
from django.utils import timezone

from jobs import conf, events
from jobs.db import statement_cursor
from jobs.models import Worker
from jobs.queue.claim import ClaimedJob
from jobs.queue.sql import query


def register_worker(*, hostname: str, pid: int, queues: list[str], concurrency: int) -> Worker:
    worker = Worker.objects.create(hostname=hostname, pid=pid, queues=queues, concurrency=concurrency)
    events.workers_changed()
    return worker


def heartbeat(worker_id: uuid.UUID, *, busy: int, processed: int, failed: int,
              held: list[ClaimedJob], lease_seconds: float | None = None) -> dict[int, bool]:
    """Record that the worker is alive and renew the leases of the jobs it holds.

    Return {id: whether a cancel of it was asked for} for the `held` jobs
    that are still its own; any other was cancelled before it started or
    rescued, and its handler should stop.
    """
    lease = lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS")
    Worker.objects.filter(pk=worker_id).update(heartbeat_at=Now(), busy=busy, processed=processed, failed=failed)
    events.workers_changed()
    if not held:
        return {}
    with statement_cursor() as cursor:
        cursor.execute(query("renew_leases"), {
            "lease": lease, "ids": [j.id for j in held], "tokens": [j.lease_token for j in held],
        })
        return dict(cursor.fetchall())


def stop_worker(worker_id: uuid.UUID, *, processed: int, failed: int) -> None:
    Worker.objects.filter(pk=worker_id).update(
        stopped_at=Now(), heartbeat_at=Now(), busy=0, processed=processed, failed=failed
    )
    events.workers_changed()


def prune_workers(older_than_seconds: float = 24 * 3600) -> int:
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    deleted, _ = Worker.objects.filter(heartbeat_at__lt=cutoff).delete()
    return deleted

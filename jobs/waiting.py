"""Why is it waiting? The reason a job that is not running waits, as the API, the dashboard and the admin show it.

    reason_for(job)        # one job: WaitReason("key_limit", "Concurrency key tenant:42 is at its limit: 2 of 2 running.")
    waiting_by_reason()    # the overview: {"paused": 120, "rate_limit": 4000, ...}

A job waits for the first of these that holds, in this order:

    scheduled      its run_at is in the future (scheduled for T)
    backoff        a retry backs off until T
    paused         its queue is paused
    no_worker      no live worker serves its queue
    key_limit      its concurrency key is at its limit (n of N running)
    queue_limit    its queue is at its concurrency limit (n of N running)
    rate_limit     its queue or key started as many jobs as its rate allows; the next start at T
    next_in_line   nothing holds it back: it is claimed as soon as a worker has room

The facts are read as the claim reads them (jobs.models.QueueControl,
KeyLimit, StartLog, the held jobs), so the reason is the claim's own. It is
a reading of one moment: by the time it is shown, the job may be running.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from jobs.flow import OWNER_KEY_PREFIX
from jobs.models import HELD_STATUSES, READY_STATUSES, Job, JobStatus, KeyLimit, QueueControl, StartLog, Worker
from jobs.selectors import worker_alive_condition

REASONS = {
    "scheduled": "Scheduled",
    "backoff": "Backing off",
    "paused": "Queue paused",
    "no_worker": "No live worker serves its queue",
    "key_limit": "Concurrency key at its limit",
    "queue_limit": "Queue at its concurrency limit",
    "rate_limit": "Rate limit",
    "next_in_line": "Next in line",
}
# The overview reads at most this many waiting jobs to count them by reason.
COUNT_CAP = 50_000


@dataclass(frozen=True)
class WaitReason:
    code: str
    message: str
    # When the reason ends, where that is known: the run_at, the next start a rate allows.
    until: datetime | None = None

    @property
    def label(self) -> str:
        return REASONS[self.code]

    def as_dict(self) -> dict:
        return {"code": self.code, "label": self.label, "message": self.message, "until": self.until}


class _Facts:
    """What the claim would see now, for the given queues and (queue, key) pairs."""

    def __init__(self, queues: set[str], keys: set[tuple[str, str]]):
        self.now = timezone.now()
        self.controls = {c.name: c for c in QueueControl.objects.filter(name__in=queues)}
        self.key_limits = {(k.queue, k.key): k for k in KeyLimit.objects.filter(
            queue__in={q for q, _ in keys}, key__in={k for _, k in keys})}
        self.held_per_queue = dict(
            Job.objects.order_by().filter(status__in=HELD_STATUSES, queue__in=[
                name for name, c in self.controls.items() if c.concurrency is not None])
            .values("queue").annotate(n=Count("pk")).values_list("queue", "n"))
        self.held_per_key: dict[tuple[str, str | None], int] = {}
        if keys:
            rows = (Job.objects.order_by().filter(status__in=HELD_STATUSES, concurrency_key__in={k for _, k in keys})
                    .values("queue", "concurrency_key").annotate(n=Count("pk"))
                    .values_list("queue", "concurrency_key", "n"))
            self.held_per_key = {(q, k): n for q, k, n in rows}
        serving = Worker.objects.filter(worker_alive_condition()).values_list("queues", flat=True)
        self.all_served = any(not names for names in serving)
        self.served = {name for names in serving for name in names}

    def rate(self, scope: str, limit: int | None, period: float) -> tuple[int, datetime | None] | None:
        """Return (starts within the period, when the next start is allowed) for a scope at its limit, else None."""
        if limit is None:
            return None
        since = self.now - timedelta(seconds=period)
        starts = StartLog.objects.filter(scope=scope, started_at__gt=since)
        count = starts.count()
        if count < limit:
            return None
        oldest = starts.order_by("started_at").values_list("started_at", flat=True)[count - limit]
        return count, oldest + timedelta(seconds=period)

    def reason(self, *, queue: str, key: str | None, key_limit: int | None, status: str,
               run_at: datetime) -> WaitReason:
        if run_at > self.now:
            if status == JobStatus.RETRYING:
                return WaitReason("backoff", f"Backing off after a failed attempt until {run_at:%Y-%m-%d %H:%M:%S %Z}.",
                                  run_at)
            return WaitReason("scheduled", f"Scheduled for {run_at:%Y-%m-%d %H:%M:%S %Z}.", run_at)
        control = self.controls.get(queue)
        override = self.key_limits.get((queue, key)) if key is not None else None
        if control is not None and control.paused:
            return WaitReason("paused", f"Queue {queue} is paused; its jobs wait until it is resumed.")
        if not self.all_served and queue not in self.served:
            return WaitReason("no_worker", f"No live worker serves queue {queue}.")
        if key is not None:
            limit = override.concurrency if override is not None else None
            if limit is None:
                limit = key_limit
            if limit is None and control is not None:
                limit = control.key_concurrency
            if key.startswith(OWNER_KEY_PREFIX):  # one user's jobs, counted in every queue, as the claim counts them
                held = sum(n for (_, k), n in self.held_per_key.items() if k == key)
            else:
                held = self.held_per_key.get((queue, key), 0)
            if limit is not None and held >= limit:
                return WaitReason("key_limit", f"Concurrency key {key} is at its limit: {held} of {limit} running.")
        if control is not None and control.concurrency is not None:
            held = self.held_per_queue.get(queue, 0)
            if held >= control.concurrency:
                return WaitReason("queue_limit",
                                  f"Queue {queue} is at its concurrency limit: {held} of {control.concurrency} running.")
        rates = []
        if control is not None:
            rates.append((f"q:{queue}", f"queue {queue}", control.rate_limit, control.rate_period))
        if key is not None:
            if override is not None and override.rate_limit is not None:
                rates.append((f"k:{queue}:{key}", f"key {key}", override.rate_limit, override.rate_period))
            elif control is not None:
                rates.append((f"k:{queue}:{key}", f"key {key}", control.key_rate_limit, control.key_rate_period))
        for scope, what, limit, period in rates:
            at_limit = self.rate(scope, limit, period)
            if at_limit is not None:
                _, next_start = at_limit
                return WaitReason("rate_limit", f"The rate limit of {what} ({limit} per {period:g}s) is reached; "
                                                f"the next start is allowed at {next_start:%Y-%m-%d %H:%M:%S %Z}.",
                                  next_start)
        return WaitReason("next_in_line", "Ready: a worker claims it as soon as it has room.")


def reason_for(job: Job) -> WaitReason | None:
    """Return why `job` waits, or None for a job that does not (it is held or finished)."""
    if job.status not in READY_STATUSES:
        return None
    keys = {(job.queue, job.concurrency_key)} if job.concurrency_key else set()
    facts = _Facts({job.queue}, keys)
    return facts.reason(queue=job.queue, key=job.concurrency_key, key_limit=job.key_limit, status=job.status,
                        run_at=job.run_at)


def waiting_by_reason(user=None, *, cap: int = COUNT_CAP) -> tuple[dict[str, int], bool]:
    """Return the waiting jobs counted by reason, and whether the count stopped at `cap` jobs.

    `user` narrows it to the jobs that user may see (all for staff). One
    grouped read of at most `cap` waiting jobs (over the claim indexes),
    then the facts of each (queue, key, status) group, not of each job.
    """
    owner = user.pk if user is not None and not user.is_staff else None
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT queue, concurrency_key, status, run_at > statement_timestamp(), max(key_limit),
                       min(run_at), count(*)
                FROM (SELECT queue, concurrency_key, status, run_at, key_limit FROM {Job._meta.db_table}
                      WHERE status = ANY(%s) AND (%s::integer IS NULL OR owner_id = %s) LIMIT %s) AS w
                GROUP BY 1, 2, 3, 4""",  # noqa: S608 - the table's name; values are parameters
            [list(READY_STATUSES), owner, owner, cap + 1],
        )
        groups = cursor.fetchall()
    facts = _Facts({g[0] for g in groups}, {(g[0], g[1]) for g in groups if g[1] is not None})
    counts: dict[str, int] = defaultdict(int)
    for queue, key, status, future, key_limit, run_at, count in groups:
        if future:  # not due yet: scheduled or backing off, whatever else holds
            counts["backoff" if status == JobStatus.RETRYING else "scheduled"] += count
            continue
        counts[facts.reason(queue=queue, key=key, key_limit=key_limit, status=status, run_at=run_at).code] += count
    total = sum(counts.values())
    return {code: counts[code] for code in REASONS if counts.get(code)}, total > cap


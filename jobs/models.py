"""The jobs table is the queue.

Rows are read here; every change of a job's state is made by jobs.queue,
always as a guarded UPDATE.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class JobStatus(models.TextChoices):
    # Waiting to run; its run_at has passed or was never in the future.
    QUEUED = "queued"
    # Waiting for a run_at in the future. Once it is due, the queue's leader
    # relabels it `queued` (a worker may claim it before that).
    SCHEDULED = "scheduled"
    # Held by a worker (it holds the lease) and waiting for one of its slots:
    # no attempt is counted and no start time set until a slot starts it.
    CLAIMED = "claimed"
    # A worker's slot runs its handler now; the attempt counts.
    RUNNING = "running"
    # Failed and waiting out its backoff before the next attempt; relabelled
    # `queued` by the leader once the backoff has passed.
    RETRYING = "retrying"
    # Finished; `result` holds what the handler returned.
    COMPLETED = "completed"
    # In the dead-letter queue: retries ran out or the failure was permanent.
    DEAD = "dead"
    # Cancelled before it finished.
    CANCELLED = "cancelled"
    # Its TTL passed before a worker could start it.
    EXPIRED = "expired"


# Statuses a worker may claim from (once run_at has passed).
READY_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING)
# Statuses of a job a worker holds the lease of.
HELD_STATUSES = (JobStatus.CLAIMED, JobStatus.RUNNING)
# Statuses of a job that has not finished.
ACTIVE_STATUSES = (*READY_STATUSES, *HELD_STATUSES)
FINISHED_STATUSES = (JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED)


class Priority(models.IntegerChoices):
    # A job's priority is Django's task priority: a whole number from
    # MIN_PRIORITY to MAX_PRIORITY, higher served first (jobs.queue.claim_jobs).
    # These are its named points; any other number on the scale is a
    # priority too, between or beyond them.
    HIGH = 50, "high"
    NORMAL = 0, "normal"
    LOW = -50, "low"


MIN_PRIORITY, MAX_PRIORITY = -100, 100
NAMED_PRIORITIES = frozenset(Priority.values)


def priority_label(priority: int) -> str:
    """Return "high", "normal" or "low" for a named priority, else the number written out ("10")."""
    return Priority(priority).label if priority in Priority.values else str(priority)


class JobQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def dead(self):
        return self.filter(status=JobStatus.DEAD)

    def for_user(self, user):
        """Return the jobs `user` may see: their own, or every job for staff."""
        if user.is_staff:
            return self
        return self.filter(owner=user)


class Job(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs",
        db_index=False,  # job_owner_created_idx leads with owner_id
    )
    queue = models.CharField(max_length=64, default="default")
    type = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    # Higher first, from MIN_PRIORITY to MAX_PRIORITY; the choices are its named points.
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)

    # `attempts` counts starts: it is incremented when a worker's slot starts
    # the job (not when it is claimed), so a job with max_retries=3 runs at
    # most 4 times.
    attempts = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=3)
    run_at = models.DateTimeField(db_default=Now())
    # Seconds a single attempt may run; null takes the handler's or the global default.
    timeout = models.FloatField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Not started by then: expired.")
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: no key, left out of the unique constraint
    # From the API's Idempotency-Key header: a retried request finds its job here.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - as unique_key
    # Flow control (jobs.flow): jobs with the same key in a queue share its
    # limits, and keys take turns. NULL: no key, and no key limit applies.
    concurrency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 - NULL: no key
    # The key's concurrency limit as the job's type (or the owner rule) set it;
    # a KeyLimit row for the key overrides it, and it overrides the queue's.
    key_limit = models.PositiveIntegerField(null=True, blank=True)
    # When someone asked to cancel the job while it ran: its handler sees
    # job.cancelled and has JOBS_CANCEL_GRACE seconds to stop (jobs.queue.actions).
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    # The lease of a running job. Every write a worker makes carries the
    # token, so a worker that lost its lease to a rescue changes nothing.
    leased_by = models.UUIDField(null=True, blank=True, help_text="Worker holding the lease.")
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # One entry per finished attempt: attempt, worker, started_at,
    # finished_at, outcome, error, traceback.
    history = models.JSONField(default=list, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    trace_id = models.CharField(max_length=64, blank=True, default="")

    created_at = models.DateTimeField(db_default=Now(), editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    # Set by jobs.queue.enqueue on the job it returns: True when that is an
    # unfinished job with the same unique_key, returned instead of a new one.
    deduplicated: bool
    # Set by dashboard.selectors.attach_holders on listed jobs: the Worker holding the lease, if any.
    holder: "Worker | None"

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The claim: one index range scan per priority, oldest run_at first;
            # read in this order (highest priority first), it is also the
            # order the limited claim takes a limited queue's jobs in. Jobs
            # with a concurrency key are claimed through the next index.
            models.Index(
                fields=["-priority", "run_at", "id"],
                name="job_claim_idx",
                condition=Q(status__in=READY_STATUSES, concurrency_key__isnull=True),
            ),
            # The claim of keyed jobs: a skip scan finds each key, then each
            # key's jobs in their order. Only keyed jobs pay for these two.
            models.Index(
                fields=["queue", "concurrency_key", "-priority", "run_at", "id"],
                name="job_key_claim_idx",
                condition=Q(status__in=READY_STATUSES, concurrency_key__isnull=False),
            ),
            # The keyed claim's fast path (claim_keyed_jobs): keyed jobs in claim order.
            models.Index(
                fields=["-priority", "run_at", "id"],
                name="job_keyed_claim_idx",
                condition=Q(status__in=READY_STATUSES, concurrency_key__isnull=False),
            ),
            # How many jobs of each key are held now (the key's limit counts them).
            models.Index(
                fields=["queue", "concurrency_key"], name="job_key_held_idx",
                condition=Q(status__in=HELD_STATUSES, concurrency_key__isnull=False),
            ),
            # The rescuer looks only at held jobs whose lease ran out.
            models.Index(
                fields=["lease_expires_at"], name="job_held_lease_idx", condition=Q(status__in=HELD_STATUSES)
            ),
            # The leader relabels scheduled and retrying jobs once due: only they are in it.
            models.Index(
                fields=["run_at"], name="job_due_idx",
                condition=Q(status__in=(JobStatus.SCHEDULED, JobStatus.RETRYING)),
            ),
            # Every claim and completion changes `status`, so it is never a HOT
            # update: each index on the table gets a new entry. The lists by
            # status skip completed jobs, the bulk of the table, which a scan
            # of the primary key finds quickly anyway; completing a job then
            # touches three indexes (primary key, owner/created, finished).
            models.Index(
                fields=["owner", "status", "-id"], name="job_owner_status_idx",
                condition=~Q(status=JobStatus.COMPLETED),
            ),
            models.Index(fields=["status", "-id"], name="job_status_idx", condition=~Q(status=JobStatus.COMPLETED)),
            # Only jobs with a TTL that have not started: expire_jobs() reads nothing else.
            models.Index(
                fields=["expires_at"], name="job_expiry_idx",
                condition=Q(expires_at__isnull=False, status__in=READY_STATUSES),
            ),
            # A user's jobs: their lists and counts, and deleting the user.
            models.Index(fields=["owner", "created_at"], name="job_owner_created_idx"),
            models.Index(
                fields=["finished_at"], name="job_finished_idx", condition=Q(finished_at__isnull=False)
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "unique_key"],
                condition=Q(unique_key__isnull=False, status__in=ACTIVE_STATUSES),
                nulls_distinct=False,
                name="job_unique_active_key",
            ),
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_unique_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="job_progress_lte_100"),
            models.CheckConstraint(condition=Q(priority__gte=MIN_PRIORITY, priority__lte=MAX_PRIORITY),
                                   name="job_priority_in_range"),
        ]

    def __str__(self):
        return f"{self.type}#{self.pk} ({self.status})"

    @property
    def priority_label(self) -> str:
        return priority_label(self.priority)


class QueueControl(models.Model):
    """A queue's run-time controls: paused or not, and its limits (jobs.flow).

    A queue without a row has none. Limits count held jobs (claimed or
    running), across every worker, and are enforced by the claim itself.
    """

    name = models.CharField(primary_key=True, max_length=64)
    paused = models.BooleanField(default=False, help_text="Workers claim none of its jobs; running ones finish.")
    paused_at = models.DateTimeField(null=True, blank=True)
    concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many of its jobs held by workers at once. Empty: no limit.")
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many of its jobs started per rate period. Empty: no limit.")
    rate_period = models.FloatField(default=60.0, help_text="Seconds.")
    key_concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="Default limit of each concurrency key in this queue. Empty: no limit.")
    key_rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many starts per key per key rate period. Empty: no limit.")
    key_rate_period = models.FloatField(default=60.0, help_text="Seconds.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(rate_period__gt=0, key_rate_period__gt=0),
                                   name="queuecontrol_period_positive"),
        ]

    def __str__(self):
        return self.name


class KeyLimit(models.Model):
    """Limits of one concurrency key in one queue, overriding the type's and the queue's."""

    queue = models.CharField(max_length=64)
    key = models.CharField(max_length=200)
    concurrency = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the type's or queue's limit.")
    rate_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the queue's key rate.")
    rate_period = models.FloatField(default=60.0, help_text="Seconds.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["queue", "key"]
        constraints = [
            models.UniqueConstraint(fields=["queue", "key"], name="keylimit_unique_queue_key"),
            models.CheckConstraint(condition=Q(rate_period__gt=0), name="keylimit_period_positive"),
        ]

    def __str__(self):
        return f"{self.queue}/{self.key}"


class StartLog(models.Model):
    """One start of a job under a rate limit: the claim counts these to stay within it.

    `scope` is "q:<queue>" or "k:<queue>:<key>". Inserted by the claim that
    starts the job, only for scopes with a rate limit; the leader drops
    entries older than the longest rate period.
    """

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=270)
    started_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["scope", "started_at"], name="startlog_scope_idx")]

    def __str__(self):
        return f"{self.scope} @ {self.started_at}"


class Worker(models.Model):
    """A running `runworker` process, kept fresh by its heartbeat."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list, help_text="Queues served; empty means all.")
    concurrency = models.PositiveIntegerField()
    busy = models.PositiveIntegerField(default=0, help_text="Slots running a job at the last heartbeat.")
    processed = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    started_at = models.DateTimeField(db_default=Now())
    heartbeat_at = models.DateTimeField(db_default=Now())
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-heartbeat_at"]

    def __str__(self):
        return f"{self.hostname}:{self.pid}"


class Leadership(models.Model):
    """Which worker leads a role, such as the queue's maintenance, and until when (jobs.leader)."""

    role = models.CharField(primary_key=True, max_length=50)
    worker_id = models.UUIDField()
    # The leader renews this every poll; once it passes, any worker may take over.
    expires_at = models.DateTimeField()

    def __str__(self):
        return f"{self.role}: {self.worker_id}"


class JobCounter(models.Model):
    """An increment of one of the queue's Prometheus counters or histograms.

    Rows are only ever inserted, by the same statement that makes the change
    they count, so concurrent writers never wait on each other's rows. A
    metric's value is the sum of its rows; jobs.counters.roll_up() folds
    them into one row per metric and labels now and then. Pruning jobs does
    not touch these rows, so the counters never go down.
    """

    # "enqueued", "completed", "failed", "retried", "dead", or a histogram's
    # "<name>_bucket" / "<name>_sum".
    name = models.CharField(max_length=40)
    type = models.CharField(max_length=100, blank=True, default="")
    queue = models.CharField(max_length=64, blank=True, default="")
    # The upper bound of a histogram bucket (not cumulative; infinity for the last); null otherwise.
    le = models.FloatField(null=True, blank=True)
    value = models.FloatField()

    def __str__(self):
        return f"{self.name}{{type={self.type!r}, queue={self.queue!r}, le={self.le}}} += {self.value:g}"


class FinishedCount(models.Model):
    """Jobs that completed or went to the DLQ in one minute, per owner: the throughput chart's data.

    Like JobCounter, rows are only inserted, by the statement that finishes
    the jobs (one row per owner and statement), and jobs.counters.roll_up()
    folds each minute and owner into one row and drops minutes older than
    an hour. Counting the jobs table instead would read every job finished
    in the chart's 15 minutes on each refresh: 23 million rows at 26,000
    jobs a second, for staff or for any user (the owner is not in the
    finished-at index). Pruning jobs leaves these rows alone.
    """

    minute = models.DateTimeField()
    # No foreign key: checking it would cost every finishing statement, and a
    # deleted user's rows expire within the hour. None: jobs with no owner.
    owner_id = models.BigIntegerField(null=True, blank=True)
    completed = models.PositiveIntegerField(default=0)
    dead = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["minute"], name="finished_minute_idx"),
            models.Index(fields=["owner_id", "minute"], name="finished_owner_minute_idx"),
        ]

    def __str__(self):
        return f"{self.minute:%Y-%m-%d %H:%M} owner {self.owner_id}: {self.completed} completed, {self.dead} dead"


class SubmissionAllowance(models.Model):
    """A user's allowance of job submissions: a bucket of JOBS_USER_SUBMISSIONS_PER_MINUTE.

    A submission takes one; they come back at that many a minute. Kept as the
    one moment the bucket is full again (GCRA): each submission moves it a
    1/limit-th of a minute past the later of itself and now, and a submission
    that would move it more than a minute past now is refused. One row per
    user, updated under the user's lock. Counting the user's jobs of the last
    minute instead would read a row per job: the more a user submitted, the
    slower each submission.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    refilled_at = models.DateTimeField()

    def __str__(self):
        return f"{self.user_id}: full again at {self.refilled_at:%H:%M:%S}"


class EmailAllowance(models.Model):
    """How many recipients a user's send_email jobs have sent to today (UTC), against JOBS_EMAIL_RECIPIENTS_PER_DAY.

    One row per user, written by one statement per sending attempt
    (jobs.handlers.mail), which adds the attempt's recipients only if the
    day's sum stays within the limit, and starts again from zero on a new
    day. Concurrent attempts of one user, from any worker process, wait for
    each other on the row, so the limit holds exactly.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    day = models.DateField()
    recipients = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"{self.user_id}: {self.recipients} recipients on {self.day}"


class Misfire(models.TextChoices):
    """What a schedule does with ticks missed while no scheduler ran (later than JOBS_SCHEDULE_MISFIRE_GRACE_SECONDS)."""

    # Each missed tick enqueues nothing; it is recorded as missed.
    SKIP = "skip"
    # The missed ticks enqueue one job between them, for the latest; none if a tick on time fires in the same round.
    ONCE = "once"
    # The latest `catch_up_limit` missed ticks each enqueue a job, oldest first; older ones are recorded as missed.
    CATCH_UP = "catch_up"


class Overlap(models.TextChoices):
    """What a tick does while the job of the schedule's previous tick has not finished."""

    # Enqueue anyway.
    ALLOW = "allow"
    # Enqueue nothing; the tick is recorded as skipped.
    SKIP = "skip"
    # Cancel the previous job, then enqueue.
    REPLACE = "replace"


class ScheduleSource(models.TextChoices):
    # Declared with @job_handler(..., schedule=...).
    CODE = "code"
    # Declared in the JOBS_SCHEDULES setting.
    SETTINGS = "settings"
    # Added at run time: the admin, the API, the dashboard or `manage.py schedules add`.
    RUNTIME = "runtime"


class TickOutcome(models.TextChoices):
    # The tick's job was enqueued.
    ENQUEUED = "enqueued"
    # Later than the misfire grace, and the misfire policy enqueued nothing for it.
    MISSED = "missed"
    # The overlap policy enqueued nothing: the previous job had not finished, or a later tick replaced it.
    SKIPPED = "skipped"
    # The schedule was paused, by someone or because its job could no longer be built.
    PAUSED = "paused"


class Schedule(models.Model):
    """A cron expression or an interval that enqueues a job at each tick (jobs.schedules, jobs.queue.schedules).

    The leader fires due ticks. A tick is a ScheduleTick row, unique per
    (schedule, tick time) and inserted in the transaction that enqueues its
    job, so no tick ever has two jobs.
    """

    name = models.CharField(max_length=100, unique=True)
    # Exactly one of cron (5 fields, or 6 with seconds first) and interval_seconds.
    cron = models.CharField(max_length=200, blank=True, default="")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    # The IANA zone the cron expression reads its wall clock in.
    timezone = models.CharField(max_length=64, default="UTC")

    # The job each tick enqueues.
    type = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=64, blank=True, default="", help_text="Empty: JOBS_DEFAULT_QUEUE.")
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    max_retries = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the type's.")
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds per attempt. Empty: the type's.")
    ttl = models.FloatField(null=True, blank=True, help_text="Seconds the job may wait to start before it expires.")

    enabled = models.BooleanField(default=True)
    # Why the scheduler paused it (its type is gone, its payload no longer
    # valid); empty when paused by someone, or not paused.
    paused_reason = models.TextField(blank=True, default="")
    misfire = models.CharField(max_length=16, choices=Misfire.choices, default=Misfire.ONCE)
    catch_up_limit = models.PositiveIntegerField(default=10, help_text="Missed ticks a catch_up misfire fires, at most.")
    overlap = models.CharField(max_length=16, choices=Overlap.choices, default=Overlap.ALLOW)
    jitter_seconds = models.FloatField(default=0.0, help_text="Each job runs up to this many seconds after its tick.")

    # The first tick not handled yet: the leader fires the schedule once this has passed.
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fire_at = models.DateTimeField(null=True, blank=True)
    last_job_id = models.BigIntegerField(null=True, blank=True)  # no foreign key: jobs are pruned on their own
    # Interval ticks fall at anchor_at + k * interval_seconds.
    anchor_at = models.DateTimeField(db_default=Now())

    # Ticks by outcome since the schedule was created: the metrics' counters,
    # added to by the round that records the ticks (kept here, not as
    # JobCounter rows, so that 10,000 schedules cost no 10,000 rows a minute).
    ticks_enqueued = models.PositiveBigIntegerField(default=0)
    ticks_skipped = models.PositiveBigIntegerField(default=0)
    ticks_missed = models.PositiveBigIntegerField(default=0)
    ticks_paused = models.PositiveBigIntegerField(default=0)

    source = models.CharField(max_length=16, choices=ScheduleSource.choices, default=ScheduleSource.RUNTIME)
    # A declared schedule's declaration as the last start-up synced it.
    declaration = models.JSONField(null=True, blank=True)
    # Set by any run-time change of a declared schedule: from then on the
    # start-up sync leaves it as it is (jobs.queue.schedules.sync_declared).
    edited_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # The leader's round reads the due schedules, soonest first.
            models.Index(fields=["next_fire_at"], name="schedule_due_idx", condition=Q(next_fire_at__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval_seconds__gte=1)) | (~Q(cron="") & Q(interval_seconds__isnull=True)),
                name="schedule_cron_xor_interval",
            ),
            models.CheckConstraint(condition=Q(jitter_seconds__gte=0), name="schedule_jitter_non_negative"),
        ]

    def __str__(self):
        return self.name

    @property
    def when(self) -> str:
        """Return the schedule's cadence as written: its cron expression, or "every N s"."""
        return self.cron or f"every {self.interval_seconds} s"


class ScheduleTick(models.Model):
    """One tick of a schedule and what it did: the job it enqueued, or why none.

    Unique per (schedule, tick_at): the guarantee that a tick enqueues at
    most one job, whatever runs the scheduler, twice or at once. Kept for
    JOBS_SCHEDULE_TICK_RETENTION_SECONDS.
    """

    id = models.BigAutoField(primary_key=True)
    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="ticks", db_index=False)
    tick_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=TickOutcome.choices)
    job_id = models.BigIntegerField(null=True, blank=True)  # no foreign key: jobs are pruned on their own
    detail = models.TextField(blank=True, default="")
    # Run now: a tick of its own, at the moment someone asked.
    manual = models.BooleanField(default=False)
    recorded_at = models.DateTimeField(db_default=Now())

    # Set by jobs.selectors.schedule_ticks: the status of the tick's job now ("pruned" once it is gone).
    job_status: str

    class Meta:
        ordering = ["-tick_at"]
        indexes = [models.Index(fields=["recorded_at"], name="scheduletick_recorded_idx")]
        constraints = [
            # Leads with schedule_id: also the index of a schedule's history, newest first.
            models.UniqueConstraint(fields=["schedule", "tick_at"], name="scheduletick_once_per_tick"),
        ]

    def __str__(self):
        return f"{self.schedule_id} @ {self.tick_at:%Y-%m-%d %H:%M:%S}: {self.outcome}"

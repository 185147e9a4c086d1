import copy

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs import flow, schedules, spec as job_spec
from jobs.errors import PayloadError, UnknownJobType
from jobs.flow import KEY_MESSAGE, KEY_PATTERN, QUEUE_NAME_MESSAGE, QUEUE_NAME_PATTERN
from jobs.models import JobStatus, Misfire, Overlap, Priority, ScheduleSource, TickOutcome, priority_label
from jobs.queue import MAX_SECONDS
from jobs.selectors import JOB_ORDERINGS
from jobs.waiting import REASONS, reason_for

PRIORITY_CHOICES = Priority.labels


class LeanSerializer(serializers.Serializer):
    """A serializer that gives each instance shallow copies of its declared fields.

    DRF deep-copies every declared field for each serializer instance, which
    builds each field anew: for POST /api/jobs/, input and answer, a sixth
    of the request's CPU (bench/PROFILE.md). A shallow copy still gets its own binding (name,
    parent), and shares what no request changes: validators, error
    messages, choices. A nested serializer is shared as it is, so this is
    only for serializers whose fields never read the context.
    """

    def get_fields(self):
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}


def printable(text: str) -> str:
    """Return `text` with any lone surrogate written as an escape (\\ud800), so that a response can carry it."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


class StrictSerializer(LeanSerializer):
    """Refuse fields it does not declare, so nothing unexpected is silently ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError(
                    {printable(name): ["This field cannot be set."] for name in sorted(unknown)}
                )
        return super().to_internal_value(data)


class JobCreateSerializer(StrictSerializer):
    type = serializers.CharField(max_length=100)
    payload = serializers.JSONField(required=False, default=dict)
    # The message does not repeat the input, which may be text no response can carry.
    priority = serializers.ChoiceField(
        choices=PRIORITY_CHOICES, default="normal", error_messages={"invalid_choice": "Use high, normal or low."}
    )
    queue = serializers.RegexField(QUEUE_NAME_PATTERN, required=False, error_messages={"invalid": QUEUE_NAME_MESSAGE})
    max_retries = serializers.IntegerField(min_value=0, max_value=100, required=False)
    timeout = serializers.FloatField(min_value=0.001, max_value=MAX_SECONDS, required=False)
    run_at = serializers.DateTimeField(required=False)
    delay = serializers.FloatField(min_value=0, max_value=MAX_SECONDS, required=False)
    ttl = serializers.FloatField(min_value=0.001, max_value=MAX_SECONDS, required=False)
    unique_key = serializers.CharField(max_length=255, required=False)
    # Staff only: every job with the same key in a queue shares its limits,
    # so a user who chose one could hold back other users' jobs.
    concurrency_key = serializers.RegexField(KEY_PATTERN, required=False, error_messages={"invalid": KEY_MESSAGE})
    # The job's spec once the input is valid: what submit_job takes.
    spec: job_spec.JobSpec | None = None

    def validate(self, data):
        """Build the job's spec (`self.spec`), the one validation of its payload on the way to the worker.

        The spec's owner and Idempotency-Key come from the context ("owner",
        "idempotency_key"); without them, the spec is of a job without.
        """
        if "run_at" in data and "delay" in data:
            raise serializers.ValidationError({"delay": ["Give run_at or delay, not both."]})
        owner = self.context.get("owner")
        if "concurrency_key" in data and owner is not None and not owner.is_staff:
            raise serializers.ValidationError({"concurrency_key": [
                "Only staff may choose a concurrency key: every job with that key in the queue shares its limits."]})
        data["priority"] = Priority[data["priority"].upper()]
        try:
            self.spec = job_spec.build(
                owner=self.context.get("owner"), idempotency_key=self.context.get("idempotency_key"), **data
            )
        except UnknownJobType as exc:
            raise serializers.ValidationError({"type": [str(exc)]}) from exc
        except PayloadError as exc:
            raise serializers.ValidationError({"payload": exc.errors}) from exc
        except ValueError as exc:  # an option the fields above let through, such as text PostgreSQL cannot store
            raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from exc
        data["payload"] = self.spec.payload
        return data


class AttemptSerializer(LeanSerializer):
    attempt = serializers.IntegerField()
    worker = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    outcome = serializers.CharField()
    error = serializers.CharField(allow_blank=True)
    traceback = serializers.CharField(allow_blank=True)


class JobSerializer(LeanSerializer):
    """A job as lists show it: without its result and attempt history, which can be large."""

    # The columns no list reads; JobDetailSerializer adds them back.
    LIST_DEFERS = ("result", "history")

    id = serializers.IntegerField()
    type = serializers.CharField()
    payload = serializers.JSONField()
    # As stored; the README says what each status means.
    status = serializers.ChoiceField(choices=JobStatus.choices)
    priority = serializers.CharField(source="priority_label")
    queue = serializers.CharField()
    attempts = serializers.IntegerField()
    max_retries = serializers.IntegerField()
    run_at = serializers.DateTimeField()
    timeout = serializers.FloatField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    unique_key = serializers.CharField(allow_null=True)
    concurrency_key = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    progress = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    cancel_requested_at = serializers.DateTimeField(
        allow_null=True, help_text="When a cancel of the job was asked for while it ran; it ends cancelled.")
    trace_id = serializers.CharField()


class WaitReasonSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=list(REASONS))
    label = serializers.CharField()  # type: ignore[assignment]  # a field named label: DRF's metaclass takes it out of the class
    message = serializers.CharField()
    until = serializers.DateTimeField(allow_null=True, help_text="When the reason ends, where that is known.")


class JobDetailSerializer(JobSerializer):
    """A job on its own: with its whole result and every attempt."""

    result = serializers.JSONField(allow_null=True)
    history = AttemptSerializer(many=True)


class JobInspectSerializer(JobDetailSerializer):
    """A job as GET /api/jobs/{id}/ shows it: its detail, and why it waits (a few small reads, so not on writes)."""

    waiting = serializers.SerializerMethodField(
        help_text="Why a job that is not running waits (jobs.waiting); null for a held or finished job.")

    @extend_schema_field(WaitReasonSerializer(allow_null=True))
    def get_waiting(self, job) -> dict | None:
        reason = reason_for(job)
        return None if reason is None else WaitReasonSerializer(reason.as_dict()).data


class DeadJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.CharField()
    queue = serializers.CharField()
    payload = serializers.JSONField()
    attempts = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class JobFilterSerializer(StrictSerializer):
    """The query parameters of the job list."""

    status = serializers.CharField(
        required=False, help_text=f"One status, or several separated by commas: {', '.join(JobStatus.values)}."
    )
    type = serializers.CharField(required=False, max_length=100)
    queue = serializers.CharField(required=False, max_length=64)
    priority = serializers.CharField(required=False, help_text="high, normal or low; several separated by commas.")
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    ordering = serializers.ChoiceField(
        choices=[*JOB_ORDERINGS, *(f"-{field}" for field in JOB_ORDERINGS)], default="-id", required=False
    )
    page = serializers.IntegerField(min_value=1, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=200, required=False)

    def validate_status(self, value):
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in JobStatus.values]
        if unknown:
            raise serializers.ValidationError(f"Unknown status {', '.join(unknown)}; use {', '.join(JobStatus.values)}.")
        return statuses

    def validate_priority(self, value):
        labels = [p.strip() for p in value.split(",") if p.strip()]
        unknown = [p for p in labels if p not in PRIORITY_CHOICES]
        if unknown:
            raise serializers.ValidationError(f"Unknown priority {', '.join(unknown)}; use high, normal or low.")
        return [Priority[p.upper()] for p in labels]


class StatsSerializer(serializers.Serializer):
    by_status = serializers.DictField(child=serializers.IntegerField())
    by_priority = serializers.DictField(child=serializers.IntegerField())
    by_type = serializers.DictField(child=serializers.IntegerField())
    finished_last_minute = serializers.IntegerField()
    finished_last_hour = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    run_time_mean_seconds = serializers.FloatField(allow_null=True)
    run_time_p95_seconds = serializers.FloatField(allow_null=True)


class RequeueSerializer(StrictSerializer):
    job_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=1000)
    max_jobs = serializers.IntegerField(min_value=1, max_value=10000, required=False)


class RequeueResultSerializer(serializers.Serializer):
    requeued = serializers.IntegerField()
    job_ids = serializers.ListField(child=serializers.IntegerField())


class WorkerSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    hostname = serializers.CharField()
    pid = serializers.IntegerField()
    queues = serializers.ListField(child=serializers.CharField())
    concurrency = serializers.IntegerField()
    busy = serializers.IntegerField()
    processed = serializers.IntegerField()
    failed = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    heartbeat_at = serializers.DateTimeField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class RateLimitSerializer(ErrorSerializer):
    retry_after = serializers.IntegerField(required=False)


def paginated(serializer_class):
    """Return the serializer of one page of `serializer_class` items, for the schema."""

    class Page(serializers.Serializer):
        count = serializers.IntegerField()
        next = serializers.URLField(allow_null=True)
        previous = serializers.URLField(allow_null=True)
        results = serializer_class(many=True)

    Page.__name__ = f"Paginated{serializer_class.__name__.removesuffix('Serializer')}List"
    return Page


# --- Queues and flow control (staff) -----------------------------------------------


def _limit_field(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=flow.MAX_LIMIT, allow_null=True, required=False,
                                    help_text=f"{help_text} null: no limit.")


def _period_field() -> serializers.FloatField:
    return serializers.FloatField(min_value=0.001, max_value=flow.MAX_PERIOD, required=False, help_text="Seconds.")


class QueueControlsSerializer(StrictSerializer):
    """A queue's controls as they are set: every field optional, and each change all or nothing."""

    paused = serializers.BooleanField(required=False, help_text="Workers claim none of its jobs; running ones finish.")
    concurrency = _limit_field("At most this many of its jobs held by workers at once, across all of them.")
    rate_limit = _limit_field("At most this many of its jobs started per rate_period, across all workers.")
    rate_period = _period_field()
    key_concurrency = _limit_field("The default limit of each concurrency key in this queue.")
    key_rate_limit = _limit_field("At most this many starts per concurrency key per key_rate_period.")
    key_rate_period = _period_field()

    def to_internal_value(self, data):
        if isinstance(data, dict) and "paused" in data and not isinstance(data["paused"], bool):
            # DRF's BooleanField takes "yes", 1, "on": a control takes true or false only.
            raise serializers.ValidationError({"paused": ["Must be true or false."]})
        return super().to_internal_value(data)


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    paused = serializers.BooleanField(source="control.paused", default=False)
    paused_at = serializers.DateTimeField(source="control.paused_at", default=None, allow_null=True)
    concurrency = serializers.IntegerField(source="control.concurrency", default=None, allow_null=True)
    rate_limit = serializers.IntegerField(source="control.rate_limit", default=None, allow_null=True)
    rate_period = serializers.FloatField(source="control.rate_period", default=60.0)
    key_concurrency = serializers.IntegerField(source="control.key_concurrency", default=None, allow_null=True)
    key_rate_limit = serializers.IntegerField(source="control.key_rate_limit", default=None, allow_null=True)
    key_rate_period = serializers.FloatField(source="control.key_rate_period", default=60.0)
    key_limits = serializers.IntegerField(help_text="How many concurrency keys of this queue have limits of their own.")
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Jobs per status.")
    oldest_wait_seconds = serializers.FloatField(allow_null=True, help_text="How long its oldest due job has waited.")


class KeyLimitSerializer(StrictSerializer):
    key = serializers.CharField(read_only=True)
    concurrency = _limit_field("At most this many jobs with this key held at once, across all workers.")
    rate_limit = _limit_field("At most this many starts of jobs with this key per rate_period.")
    rate_period = _period_field()
    updated_at = serializers.DateTimeField(read_only=True)

# --- schedules -------------------------------------------------------------------------------


class ScheduleInputSerializer(StrictSerializer):
    """A schedule to create, or (with partial=True) the fields of one to change.

    The fields check their own types; jobs.schedules.clean then checks the
    whole definition, as the command, the admin and the dashboard do, and
    its refusals are this serializer's field errors.
    """

    name = serializers.CharField(max_length=100)
    cron = serializers.CharField(
        max_length=200, required=False, allow_blank=True,
        help_text='A cron expression, 5 fields or 6 with seconds first ("*/5 * * * *"). Give it or interval_seconds.')
    interval_seconds = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="Seconds between ticks. Give it or cron.")
    timezone = serializers.CharField(max_length=64, required=False,
                                     help_text="The IANA zone the cron expression reads (default UTC).")
    type = serializers.CharField(max_length=100, help_text="The job type each tick enqueues.")
    payload = serializers.JSONField(required=False)
    queue = serializers.RegexField(QUEUE_NAME_PATTERN, required=False, allow_blank=True,
                                   error_messages={"invalid": QUEUE_NAME_MESSAGE})
    priority = serializers.ChoiceField(choices=PRIORITY_CHOICES, required=False,
                                       error_messages={"invalid_choice": "Use high, normal or low."})
    max_retries = serializers.IntegerField(min_value=0, max_value=100, required=False, allow_null=True)
    timeout = serializers.FloatField(min_value=0.001, max_value=MAX_SECONDS, required=False, allow_null=True)
    ttl = serializers.FloatField(min_value=0.001, max_value=MAX_SECONDS, required=False, allow_null=True)
    enabled = serializers.BooleanField(required=False)
    misfire = serializers.ChoiceField(
        choices=Misfire.values, required=False, error_messages={"invalid_choice": "Use skip, once or catch_up."},
        help_text="Ticks missed while no scheduler ran: skip them, fire once for them, or catch_up (the latest "
                  "catch_up_limit of them each fire).")
    catch_up_limit = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    overlap = serializers.ChoiceField(
        choices=Overlap.values, required=False, error_messages={"invalid_choice": "Use allow, skip or replace."},
        help_text="While the previous tick's job is unfinished: allow another, skip the tick, or replace "
                  "(cancel) the previous job.")
    jitter_seconds = serializers.FloatField(min_value=0, max_value=3600, required=False,
                                            help_text="Each job is due up to this many seconds after its tick.")

    def validate(self, data):
        """Check the whole definition (jobs.schedules.clean), over `self.instance`'s for a change."""
        if "priority" in data:
            data["priority"] = Priority[data["priority"].upper()]
        if self.instance is not None:
            return data  # the service checks it over the stored definition, under the schedule's lock
        try:
            return schedules.clean(data)
        except schedules.ScheduleInvalid as exc:
            raise serializers.ValidationError(exc.errors) from exc


class ScheduleSerializer(LeanSerializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    cron = serializers.CharField(allow_blank=True)
    interval_seconds = serializers.IntegerField(allow_null=True)
    timezone = serializers.CharField()
    type = serializers.CharField()
    payload = serializers.JSONField()
    queue = serializers.CharField(allow_blank=True, help_text="Empty: JOBS_DEFAULT_QUEUE.")
    priority = serializers.SerializerMethodField()
    max_retries = serializers.IntegerField(allow_null=True)
    timeout = serializers.FloatField(allow_null=True)
    ttl = serializers.FloatField(allow_null=True)
    enabled = serializers.BooleanField()
    paused_reason = serializers.CharField(allow_blank=True, help_text="Why the scheduler paused it, if it did.")
    misfire = serializers.ChoiceField(choices=Misfire.values)
    catch_up_limit = serializers.IntegerField()
    overlap = serializers.ChoiceField(choices=Overlap.values)
    jitter_seconds = serializers.FloatField()
    next_fire_at = serializers.DateTimeField(allow_null=True, help_text="Its next tick; read-only.")
    last_fire_at = serializers.DateTimeField(allow_null=True, help_text="Its last tick that enqueued a job; read-only.")
    last_job_id = serializers.IntegerField(allow_null=True)
    # Not `source`, which is every serializer field's own attribute.
    origin = serializers.ChoiceField(source="source", choices=ScheduleSource.values,
                                     help_text="code or settings: declared, synced at start-up; runtime: added at run time.")
    edited_at = serializers.DateTimeField(
        allow_null=True, help_text="When a declared schedule was last changed at run time: start-ups leave it alone.")

    @extend_schema_field(serializers.ChoiceField(choices=PRIORITY_CHOICES))
    def get_priority(self, schedule) -> str:
        return priority_label(schedule.priority)


class ScheduleTickSerializer(LeanSerializer):
    id = serializers.IntegerField()
    tick_at = serializers.DateTimeField()
    outcome = serializers.ChoiceField(choices=TickOutcome.values)
    detail = serializers.CharField(allow_blank=True)
    manual = serializers.BooleanField(help_text="Run now, not a tick of the schedule's cadence.")
    job_id = serializers.IntegerField(allow_null=True)
    job_status = serializers.CharField(allow_blank=True,
                                       help_text='The job\'s status now; "pruned" once it is gone, "" for no job.')
    recorded_at = serializers.DateTimeField()


class ScheduleRunSerializer(serializers.Serializer):
    job_id = serializers.IntegerField(allow_null=True)

"""Every write of a schedule and its ticks: the leader's rounds, the start-up sync, and what people do.

A tick and its job are inserted in one transaction, and the tick is unique
per (schedule, tick time) (ScheduleTick's scheduletick_once_per_tick), so
a tick enqueues one job at most, whatever runs the scheduler: two leaders
overlapping during a failover, a maintainer started by hand, a leader
killed in the middle of a round (its transaction rolls back, tick and job
alike, and the next leader does the round again). What jobs.schedules
decides is applied here; see it for when ticks fall and what the policies
mean.
"""

import json
import logging
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from django.core.signals import setting_changed
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.dispatch import receiver
from django.utils import timezone

from jobs import conf
from jobs.counters import BUCKETS
from jobs.errors import PayloadError, UnknownJobType
from jobs.models import Job, JobStatus, Overlap, Schedule, ScheduleSource, TickOutcome
from jobs.queue.actions import cancel_jobs
from jobs.queue.maintenance import prune_older
from jobs.queue.produce import enqueue_specs
from jobs.queue.sql import query
from jobs.schedules import (
    FIELDS,
    Cadence,
    Declaration,
    Plan,
    ScheduleInvalid,
    cadence_of,
    clean,
    declared,
    definition_of,
    jitter,
    job_spec,
    plan_round,
)
from jobs.spec import JobSpec

logger = logging.getLogger("jobs.schedules")

# Most schedules one transaction of a round takes; a round goes on batch by
# batch while schedules are due.
SCHEDULE_BATCH = 1000
# Most batches in one round: a round ends even if schedules keep coming due.
MAX_BATCHES = 100
# Connections a round with more than one batch fires them on, at once.
ROUND_THREADS = 2
TICK_PRUNE_BATCH = 5000
# Key of the advisory lock the start-up sync holds: workers starting at once sync one at a time.
SYNC_LOCK = 0x736B6A6B_0002
# What lock_due_schedules returns of each schedule.
LOCKED_COLUMNS = ("id", "name", "cron", "interval_seconds", "timezone", "anchor_at", "type", "payload", "queue",
                  "priority", "max_retries", "timeout", "ttl", "enabled", "paused_reason", "misfire",
                  "catch_up_limit", "overlap", "jitter_seconds", "next_fire_at", "last_job_id")
# The fields whose change moves a schedule's next tick.
CADENCE_FIELDS = ("cron", "interval_seconds", "timezone")


@dataclass(slots=True)
class RoundResult:
    """What one round of the scheduler did, by tick outcome."""

    schedules: int = 0
    enqueued: int = 0
    skipped: int = 0
    missed: int = 0
    paused: int = 0
    # Ticks another scheduler had recorded first: nothing was done for them here.
    duplicates: int = 0

    def add(self, other: "RoundResult") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# --- the leader's round ----------------------------------------------------------------


def fire_due_schedules(*, now: datetime | None = None, limit: int = SCHEDULE_BATCH,
                       rng: random.Random | None = None, threads: int = ROUND_THREADS) -> RoundResult:
    """Fire every due tick of every schedule, in transactions of up to `limit` schedules; return what was done.

    The clock is the database's unless `now` is given. When the first batch
    is full, the rest go in `threads` at once, each with a connection of its
    own, taking batches the way two schedulers do (SKIP LOCKED): a batch's
    statements are mostly the database's work, which runs in parallel.
    Inside a caller's transaction, which the other connections cannot see,
    the batches go one by one.
    """
    rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
    total = RoundResult()
    first = _fire_batch(now=now, limit=limit, rng=rng)
    total.add(first)
    if first.schedules < limit:
        return total
    if threads <= 1 or connection.in_atomic_block:
        total.add(_fire_batches(now=now, limit=limit, rng=rng, most=MAX_BATCHES - 1))
        return total
    with ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="skipjack-scheduler") as pool:
        helpers = [pool.submit(_fire_batches_in_thread, now=now, limit=limit, most=MAX_BATCHES // threads)
                   for _ in range(threads - 1)]
        total.add(_fire_batches(now=now, limit=limit, rng=rng, most=MAX_BATCHES // threads))
        for helper in helpers:
            total.add(helper.result())
    return total


def _fire_batches(*, now: datetime | None, limit: int, rng: random.Random, most: int) -> RoundResult:
    """Fire batches until one is not full, or `most` of them; return what they did."""
    total = RoundResult()
    for _ in range(most):
        done = _fire_batch(now=now, limit=limit, rng=rng)
        total.add(done)
        if done.schedules < limit:
            break
    return total


def _fire_batches_in_thread(*, now: datetime | None, limit: int, most: int) -> RoundResult:
    try:
        return _fire_batches(now=now, limit=limit, rng=random.Random(), most=most)  # noqa: S311 - jitter
    finally:
        connection.close()  # this thread's own


def seconds_to_next_tick() -> float | None:
    """Return the seconds from now (the database's) to the soonest next tick of any schedule; None without any."""
    with connection.cursor() as cursor:
        cursor.execute(query("next_tick_due"))
        return cursor.fetchone()[0]


def _fire_batch(*, now: datetime | None, limit: int, rng: random.Random) -> RoundResult:
    """Fire the due ticks of up to `limit` schedules, in one transaction; return what was done."""
    result = RoundResult()
    grace = float(conf.get("JOBS_SCHEDULE_MISFIRE_GRACE_SECONDS"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(query("round_now"), {"now": now})
        db_now = cursor.fetchone()[0]
        cursor.execute(query("lock_due_schedules"), {"now": db_now, "limit": limit})
        rows = [dict(zip(LOCKED_COLUMNS, row, strict=True)) for row in cursor.fetchall()]
        if not rows:
            return result
        for row in rows:  # Django's cursors hand jsonb over as its text
            text = row["payload"]
            row["payload_text"] = text if isinstance(text, str) else json.dumps(text)
            row["payload"] = json.loads(text) if isinstance(text, str) else text
        result.schedules = len(rows)
        previous = [r["last_job_id"] for r in rows if r["overlap"] != Overlap.ALLOW and r["last_job_id"]]
        unfinished: set[int] = set()
        if previous:
            cursor.execute(query("unfinished_jobs"), {"ids": previous})
            unfinished = {row[0] for row in cursor.fetchall()}

        ticks: list[dict] = []
        specs = {}  # (schedule id, tick) -> the spec of its job
        to_cancel: dict[int, int] = {}  # schedule id -> the unfinished job its tick replaces
        states: dict[int, dict] = {}
        plans: dict[tuple, Plan] = {}  # schedules of one cadence, due at one moment, share their plan
        for row in rows:
            state = {"id": row["id"], "enabled": row["enabled"], "paused_reason": row["paused_reason"],
                     "last_fire_at": None, "last_job_id": None, "enqueued": 0, "skipped": 0, "missed": 0,
                     "paused": 0}
            states[row["id"]] = state
            paused_reason = None if row["enabled"] else row["paused_reason"]
            plan_key = (row["cron"], row["interval_seconds"], row["timezone"], row["anchor_at"],
                        row["next_fire_at"], row["misfire"], row["catch_up_limit"], paused_reason)
            plan = plans.get(plan_key)
            if plan is None:
                plan = plans[plan_key] = plan_round(
                    Cadence(cron=row["cron"], interval_seconds=row["interval_seconds"], timezone=row["timezone"],
                            anchor_at=row["anchor_at"]),
                    due_from=row["next_fire_at"], now=db_now, misfire=row["misfire"],
                    catch_up_limit=row["catch_up_limit"], grace=grace, paused_reason=paused_reason,
                )
            state["next_fire_at"] = _iso(plan.next_fire_at)
            planned, row_specs, replaces = _apply_policies(row, plan, state, unfinished=unfinished, now=db_now,
                                                            rng=rng)
            specs.update(row_specs)
            if replaces is not None:
                to_cancel[row["id"]] = replaces
            ticks.extend({"schedule_id": row["id"], "tick_at": at, "outcome": outcome, "detail": detail,
                          "manual": False} for at, outcome, detail in planned)

        # Each tick that fires is recorded with its job's id, taken now; only
        # the ticks this round records get their job.
        firing_ticks = [tick for tick in ticks if (tick["schedule_id"], tick["tick_at"]) in specs]
        for tick, new_id in zip(firing_ticks, _allocate_job_ids(cursor, len(firing_ticks)), strict=True):
            tick["job_id"] = new_id
        inserted = _insert_ticks(cursor, ticks)
        result.duplicates = len(ticks) - len(inserted)
        by_job = {tick["job_id"]: tick for tick in firing_ticks}
        recorded = []
        for schedule_id, outcome, job_id in inserted:
            counted = OUTCOME_COUNTS[outcome]
            setattr(result, counted, getattr(result, counted) + 1)
            states[schedule_id][counted] += 1
            if job_id is not None:
                recorded.append(by_job[job_id])
        recorded.sort(key=lambda tick: tick["tick_at"])
        enqueue_specs([specs[(t["schedule_id"], t["tick_at"])] for t in recorded], ids=[t["job_id"] for t in recorded])
        for tick in recorded:
            states[tick["schedule_id"]].update(last_fire_at=_iso(tick["tick_at"]), last_job_id=tick["job_id"])
        replaced = [job_id for schedule_id, job_id in to_cancel.items() if states[schedule_id]["last_job_id"]]
        if replaced:
            cancel_jobs(Job.objects.filter(pk__in=replaced))
        cursor.execute(query("advance_schedules"), {"batch": json.dumps(list(states.values()))})
    return result


def _apply_policies(row: dict, plan: Plan, state: dict, *, unfinished: set[int], now: datetime,
                    rng: random.Random) -> tuple[list[tuple[datetime, str, str]], dict, int | None]:
    """Return a schedule's ticks this round, each (time, outcome, detail), the specs of the jobs of those that
    fire, by (schedule id, time), and the unfinished job its firing tick replaces, if any.

    `plan` says which ticks fire by the misfire policy; here a schedule
    whose job can no longer be built is paused (in `state`), and the
    overlap policy and the jitter are applied.
    """
    planned = [(tick.at, tick.outcome, tick.detail) for tick in plan.ticks]
    firing = [i for i, (_, outcome, _) in enumerate(planned) if outcome == TickOutcome.ENQUEUED]
    if not firing:
        return planned, {}, None
    try:
        spec = _spec_of(row)
    except (UnknownJobType, PayloadError, ValueError) as exc:
        # Checked when the schedule was saved, so something changed since:
        # a deploy dropped its type or changed its schema.
        reason = f"Paused by the scheduler: its job can no longer be built ({exc})"
        logger.error("schedule %s paused: %s", row["name"], exc,
                     extra={"event": "schedule_paused", "schedule": row["name"]})
        state.update(enabled=False, paused_reason=reason)
        for i in firing:
            planned[i] = (planned[i][0], TickOutcome.PAUSED, reason)
        return planned, {}, None
    replaces = None
    if row["overlap"] == Overlap.SKIP:
        busy = row["last_job_id"] in unfinished
        for i in firing:
            if busy:
                planned[i] = (planned[i][0], TickOutcome.SKIPPED, "The previous tick's job had not finished.")
            busy = True  # this tick's job, or the one it waited for, has not finished either
        firing = [i for i in firing if planned[i][1] == TickOutcome.ENQUEUED]
    elif row["overlap"] == Overlap.REPLACE:
        last = firing[-1]
        for i in firing[:-1]:
            planned[i] = (planned[i][0], TickOutcome.SKIPPED,
                          f"Replaced by the tick at {planned[last][0].isoformat(timespec='seconds')}.")
        firing = [last]
        if row["last_job_id"] in unfinished:
            replaces = row["last_job_id"]
    specs = {}
    for i in firing:
        at = planned[i][0]
        delay = jitter(row["jitter_seconds"], rng)
        options: dict = {"trace_id": uuid.uuid4().hex}
        run_at = at + timedelta(seconds=delay) if delay else None
        if run_at is not None and run_at > now:
            options.update(run_at=run_at, status=JobStatus.SCHEDULED)
        specs[(row["id"], at)] = spec.with_options(**options)
    return planned, specs, replaces


# A tick's outcome -> the RoundResult field and Schedule counter (ticks_<name>) that count it.
OUTCOME_COUNTS: dict[str, str] = {TickOutcome.ENQUEUED: "enqueued", TickOutcome.SKIPPED: "skipped", TickOutcome.MISSED: "missed",
                  TickOutcome.PAUSED: "paused"}
# Job specs by what builds them. The registry and the payload schemas are
# this process's code, fixed until it restarts (a deploy), so a definition
# that built once builds the same way until then; each tick still gets its
# own trace id and expiry.
_SPECS: dict[tuple, JobSpec] = {}
MAX_CACHED_SPECS = 100_000


@receiver(setting_changed)
def _forget_specs(**kwargs) -> None:
    _SPECS.clear()  # a setting may enable or disable a type


def _spec_key(row: dict) -> tuple:
    return (row["type"], row["payload_text"], row["queue"], row["priority"], row["max_retries"], row["timeout"],
            row["ttl"])


def _spec_of(row: dict) -> JobSpec:
    """Return the spec of the job a tick of the schedule `row` enqueues now (jobs.schedules.job_spec)."""
    key = _spec_key(row)
    spec = _SPECS.get(key)
    if spec is None:
        spec = job_spec(row)
        if len(_SPECS) >= MAX_CACHED_SPECS:
            _SPECS.clear()
        _SPECS[key] = spec
    if spec.expires_at is not None:
        return spec.with_options(expires_at=timezone.now() + timedelta(seconds=float(row["ttl"])))
    return spec


def _allocate_job_ids(cursor, count: int) -> list[int]:
    if not count:
        return []
    cursor.execute(query("allocate_job_ids"), {"count": count})
    return [row[0] for row in cursor.fetchall()]


def prepare_specs() -> int:
    """Build the job specs of the enabled schedules ahead of their ticks; return how many were built.

    Run by a worker when it takes the lead, so that its first round
    (10,000 schedules due at once, after a failover) costs what every later
    one does. A schedule whose job cannot be built is left to its round,
    which pauses it.
    """
    built = 0
    rows = (Schedule.objects.filter(enabled=True).annotate(payload_text=Cast("payload", TextField()))
            .values("type", "payload", "payload_text", "queue", "priority", "max_retries", "timeout", "ttl"))
    for values in rows[:MAX_CACHED_SPECS]:
        row = dict(values)
        key = _spec_key(row)
        if key in _SPECS:
            continue
        try:
            _SPECS[key] = job_spec(row)
        except (UnknownJobType, PayloadError, ValueError):
            continue
        built += 1
    return built


def _insert_ticks(cursor, ticks: list[dict]) -> list[tuple[int, str, int | None]]:
    """Record the `ticks` not recorded yet; return (schedule id, outcome, job id) of each recorded now."""
    if not ticks:
        return []
    batch = [{**tick, "tick_at": _iso(tick["tick_at"])} for tick in ticks]
    cursor.execute(query("insert_ticks"), {"batch": json.dumps(batch), "buckets": list(BUCKETS)})
    return cursor.fetchall()


def prune_ticks(older_than_seconds: float | None = None, *, limit: int = TICK_PRUNE_BATCH) -> int:
    """Delete up to `limit` ticks recorded more than JOBS_SCHEDULE_TICK_RETENTION_SECONDS ago; return how many."""
    return prune_older("prune_ticks", "JOBS_SCHEDULE_TICK_RETENTION_SECONDS", older_than_seconds, limit)


# --- what people do -------------------------------------------------------------------


def _now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


def create_schedule(data: dict, *, source: str = ScheduleSource.RUNTIME, declaration: dict | None = None,
                    now: datetime | None = None) -> Schedule:
    """Validate `data` (jobs.schedules.clean) and store it as a new schedule; raise ScheduleInvalid."""
    definition = clean(data)
    now = now or _now()
    schedule = Schedule(**definition, source=source, declaration=declaration, anchor_at=now.replace(microsecond=0))
    schedule.next_fire_at = cadence_of(schedule).after(now)
    try:
        with transaction.atomic():
            schedule.save()
    except IntegrityError:
        raise ScheduleInvalid({"name": [f"A schedule named {definition['name']!r} exists already."]}) from None
    return schedule


def _apply(schedule: Schedule, definition: dict, now: datetime) -> None:
    """Set `definition` on the locked `schedule`, moving its next tick if its cadence changed or it resumed."""
    moved = any(getattr(schedule, name) != definition[name] for name in CADENCE_FIELDS)
    resumed = definition["enabled"] and not schedule.enabled
    for name, value in definition.items():
        setattr(schedule, name, value)
    if definition["enabled"]:
        schedule.paused_reason = ""
    if moved:
        schedule.anchor_at = now.replace(microsecond=0)
    if moved or resumed or schedule.next_fire_at is None:
        # Ticks of the old cadence are no longer due; a resumed schedule's
        # ticks while paused were recorded as paused by the rounds, and any
        # left are not missed: it was paused.
        schedule.next_fire_at = cadence_of(schedule).after(now)


def update_schedule(schedule_id: int, changes: dict, *, now: datetime | None = None) -> Schedule:
    """Apply `changes` (some of a definition's fields) to a schedule; raise ScheduleInvalid or Schedule.DoesNotExist.

    A run-time change of a declared schedule sets its `edited_at`, and the
    start-up sync leaves it alone from then on.
    """
    with transaction.atomic():
        # Locked against a round of the scheduler, which would otherwise move its next tick meanwhile.
        schedule = Schedule.objects.select_for_update().get(pk=schedule_id)
        if "name" in changes and changes["name"] != schedule.name and schedule.source != ScheduleSource.RUNTIME:
            raise ScheduleInvalid({"name": ["A schedule declared in code or settings keeps its name."]})
        definition = clean(changes, base=definition_of(schedule))
        now = now or _now()
        _apply(schedule, definition, now)
        if schedule.source != ScheduleSource.RUNTIME:
            schedule.edited_at = now
        try:
            with transaction.atomic():
                schedule.save()
        except IntegrityError:
            raise ScheduleInvalid({"name": [f"A schedule named {definition['name']!r} exists already."]}) from None
    return schedule


def pause_schedule(schedule_id: int) -> Schedule:
    """Pause a schedule: its ticks enqueue nothing (they are recorded as paused) until it is resumed.

    Not checked like an edit, so that a schedule whose job can no longer be built can still be paused.
    """
    with transaction.atomic():
        schedule = Schedule.objects.select_for_update().get(pk=schedule_id)
        schedule.enabled = False
        fields = ["enabled", "updated_at"]
        if schedule.source != ScheduleSource.RUNTIME:
            schedule.edited_at = _now()
            fields.append("edited_at")
        schedule.save(update_fields=fields)
    return schedule


def resume_schedule(schedule_id: int) -> Schedule:
    """Resume a schedule from its next tick on; raise ScheduleInvalid if its job can no longer be built."""
    return update_schedule(schedule_id, {"enabled": True})


def delete_schedule(schedule_id: int) -> None:
    """Delete a schedule and its tick history. A declared one comes back at the next start-up."""
    deleted, _ = Schedule.objects.filter(pk=schedule_id).delete()
    if not deleted:
        raise Schedule.DoesNotExist(f"Schedule {schedule_id} does not exist.")


def run_schedule_now(schedule_id: int) -> int | None:
    """Enqueue a schedule's job now, as a manual tick; return the job's id.

    Neither the overlap policy nor a pause applies: someone asked for it.
    Raise ScheduleInvalid if the job can no longer be built.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        schedule = Schedule.objects.select_for_update().get(pk=schedule_id)
        try:
            spec = job_spec(definition_of(schedule))
        except (UnknownJobType, PayloadError, ValueError) as exc:
            raise ScheduleInvalid({"type": [f"Its job can no longer be built: {exc}"]}) from None
        now = _now()
        (job_id,) = _allocate_job_ids(cursor, 1)
        inserted = _insert_ticks(cursor, [{"schedule_id": schedule.pk, "tick_at": now, "detail": "Run now.",
                                           "outcome": TickOutcome.ENQUEUED, "manual": True, "job_id": job_id}])
        if not inserted:  # a tick at this very microsecond exists
            return None
        enqueue_specs([spec.with_options(trace_id=uuid.uuid4().hex)], ids=[job_id])
        cursor.execute(query("advance_schedules"), {
            "batch": json.dumps([{"id": schedule.pk, "next_fire_at": _iso(schedule.next_fire_at),
                                  "last_fire_at": _iso(now), "last_job_id": job_id, "enabled": schedule.enabled,
                                  "paused_reason": schedule.paused_reason, "enqueued": 1}]),
        })
    return job_id


# --- the start-up sync ------------------------------------------------------------------


@dataclass(slots=True)
class SyncReport:
    created: list[str]
    updated: list[str]
    # Declared, but changed at run time: left as they are.
    kept: list[str]
    # Declared no longer: paused.
    retired: list[str]
    # Paused by the scheduler, and their job can be built again: resumed.
    restored: list[str]
    invalid: dict[str, str]


def sync_declared(declarations: list[Declaration] | None = None, invalid: dict[str, str] | None = None, *,
                  now: datetime | None = None) -> SyncReport:
    """Bring the schedules declared in code and settings into the database, by the deploy rule.

    - A declared schedule missing from the database is created.
    - One never changed at run time (`edited_at` unset) takes the declaration.
    - One changed at run time (edited from the admin, the API, the
      dashboard or the command, paused or resumed included) keeps its
      run-time values; only its `declaration` is updated, to show what the
      code says now. Deleting it returns it to the declaration at the next
      start-up.
    - A schedule added at run time is never touched, even if code declares
      one of the same name (which is then reported as invalid).
    - A declared schedule that code and settings no longer declare is
      paused, unless it was changed at run time; declared again, it takes
      the declaration again.
    - Any schedule the scheduler paused because its job could no longer be
      built is resumed if it can be built now.
    """
    if declarations is None:
        declarations, invalid = declared()
    invalid = dict(invalid or {})
    report = SyncReport([], [], [], [], [], invalid)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SYNC_LOCK])
        now = now or _now()
        wanted = {d.name: d for d in declarations}
        # Only what the sync may change is locked: the declared schedules and
        # those of a declared name. The others fire meanwhile.
        existing = {s.name: s for s in Schedule.objects.select_for_update().filter(
            Q(source__in=(ScheduleSource.CODE, ScheduleSource.SETTINGS)) | Q(name__in=list(wanted)))}
        for name, declaration in wanted.items():
            stored = _declaration_json(declaration.definition)
            schedule = existing.get(name)
            if schedule is None:
                create_schedule(declaration.definition, source=declaration.source, declaration=stored, now=now)
                report.created.append(name)
            elif schedule.source == ScheduleSource.RUNTIME:
                invalid[name] = "A schedule of this name was added at run time; it is left as it is."
            elif schedule.edited_at is not None:
                if schedule.declaration != stored:
                    Schedule.objects.filter(pk=schedule.pk).update(declaration=stored)
                report.kept.append(name)
            elif definition_of(schedule) != declaration.definition or schedule.source != declaration.source or \
                    schedule.declaration != stored or schedule.paused_reason:
                _apply(schedule, declaration.definition, now)
                schedule.source, schedule.declaration, schedule.paused_reason = declaration.source, stored, ""
                schedule.save()
                report.updated.append(name)
        for name, schedule in existing.items():
            if name in wanted or name in invalid or schedule.source == ScheduleSource.RUNTIME:
                continue
            if schedule.edited_at is None and schedule.enabled:
                Schedule.objects.filter(pk=schedule.pk).update(
                    enabled=False, paused_reason="No longer declared in code or settings.")
                report.retired.append(name)
        for schedule in Schedule.objects.select_for_update().filter(enabled=False).exclude(paused_reason=""):
            if schedule.name not in wanted and schedule.source != ScheduleSource.RUNTIME:
                continue  # retired above, or earlier
            try:
                job_spec(definition_of(schedule))
            except (UnknownJobType, PayloadError, ValueError):
                continue
            _apply(schedule, {**definition_of(schedule), "enabled": True}, now)
            schedule.save(update_fields=["enabled", "paused_reason", "next_fire_at", "anchor_at", "updated_at"])
            report.restored.append(schedule.name)
    for name, reason in invalid.items():
        logger.error("schedule %s not synced: %s", name, reason, extra={"event": "schedule_invalid", "schedule": name})
    if report.created or report.updated or report.retired or report.restored:
        logger.info("schedules synced: %d created, %d updated, %d kept as edited, %d retired, %d resumed",
                    len(report.created), len(report.updated), len(report.kept), len(report.retired),
                    len(report.restored), extra={"event": "schedules_synced"})
    return report


def _declaration_json(definition: dict) -> dict:
    """Return a definition as JSON stores it (the declaration column), so that two can be compared."""
    return json.loads(json.dumps({name: definition[name] for name in FIELDS if name in definition}))


__all__ = [
    "SCHEDULE_BATCH", "RoundResult", "ScheduleInvalid", "SyncReport", "create_schedule", "delete_schedule",
    "fire_due_schedules", "pause_schedule", "prepare_specs", "prune_ticks", "resume_schedule", "run_schedule_now",
    "seconds_to_next_tick", "sync_declared",
    "update_schedule",
]

"""Schedules: when their ticks fall, what a definition must hold, and what a round of the scheduler does.

Pure functions, with time passed in; the writes are jobs.queue.schedules,
and the leader's maintainer calls them (jobs.worker.maintainer).

When ticks fall
---------------
An interval schedule ticks at `anchor_at + k * interval_seconds`, on the
absolute timeline: its zone is only how its times are shown, and daylight
saving time never moves it.

A cron schedule reads its expression on the wall clock of its zone
(`timezone`, an IANA name, UTC by default), as Debian's cron does; cronsim
evaluates it, and zoneinfo knows the zone's rules. Across a daylight-saving
transition:

- An expression of 5 fields with a fixed minute and a fixed hour (neither
  field starts with `*`, as in `30 2 * * *` or `0 9,17 * * 1-5`) fires once for each
  wall-clock time it names. A time that does not exist that day (the hour
  skipped when clocks go forward) fires at the first minute that does
  (03:00 for 02:30 in Europe/Berlin); several such times fire once between
  them. A time that happens twice (the hour repeated when clocks go back)
  fires at its first occurrence only.
- Any other expression (`*/15 * * * *`, `0 * * * *`, and every expression
  of 6 fields, such as `*/10 * * * * *`) is matched against the wall clock,
  second by second, on the absolute
  timeline: the skipped hour has no minutes to match, and the repeated
  hour's minutes match again, so an hourly or every-15-minutes schedule
  keeps ticking each real hour or quarter through both transitions.

So no tick is skipped or doubled beyond what the expression means: a daily
job runs once every day, and a frequent one keeps its real-time rhythm.

A round
-------
The leader's round takes each schedule whose `next_fire_at` has passed
and plans the ticks from there to the database's now (`plan_round`).
Ticks later than JOBS_SCHEDULE_MISFIRE_GRACE_SECONDS were missed (no
scheduler ran: every worker was down, or leadership was changing hands)
and go by the misfire policy; the others fire. The overlap policy then
decides, per tick that fires, against the previous tick's job (the queue
layer reads it).
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobs import conf
from jobs.errors import PayloadError, UnknownJobType
from jobs.models import Misfire, Overlap, Priority, ScheduleSource, TickOutcome
from jobs.registry import handlers, unstorable
from jobs.spec import MAX_SECONDS, JobSpec, build

# The longest interval: a year.
MAX_INTERVAL = int(MAX_SECONDS)
# Most ticks of one schedule a round records one by one, on time or missed;
# a schedule further behind has its older missed ticks counted in the
# detail of the oldest one recorded.
MAX_TICKS_PER_ROUND = 1000
# How many missed ticks a round records, beyond those a catch_up fires.
MISSED_RECORDED = 100
MAX_CATCH_UP = 1000


class ScheduleInvalid(ValueError):
    """A schedule definition the scheduler could not always fire. `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items()))


@lru_cache(maxsize=512)
def zone(name: str):
    """Return the tzinfo of the IANA zone `name`; raise ValueError for one zoneinfo does not know."""
    if name == "UTC":
        return UTC  # cronsim applies no DST handling to it, and it has none
    if not isinstance(name, str) or not name or unstorable(name) or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"Unknown time zone {name!r}.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"Unknown time zone {name!r}; use an IANA name such as Europe/Berlin.") from None


def check_cron(expression: str) -> str:
    """Return the expression normalized (single spaces); raise ValueError with cronsim's reason for a bad one."""
    if not isinstance(expression, str) or unstorable(expression):
        raise ValueError("Not a cron expression.")
    parts = expression.split()
    if len(parts) not in (5, 6):
        raise ValueError("A cron expression has 5 fields (minute hour day month weekday), or 6 with seconds first.")
    normalized = " ".join(parts)
    try:
        it = CronSim(normalized, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"Invalid cron expression: {str(exc).rstrip('.')}.") from None
    except (ValueError, IndexError, KeyError):  # what cronsim does not word itself
        raise ValueError("Invalid cron expression.") from None
    try:
        next(it)
    except StopIteration:
        raise ValueError("This cron expression never fires.") from None
    return normalized


@dataclass(frozen=True, slots=True)
class Cadence:
    """When a schedule ticks: a cron expression in a zone, or an interval from an anchor."""

    cron: str = ""
    interval_seconds: int | None = None
    timezone: str = "UTC"
    anchor_at: datetime | None = None

    def _cron(self, start: datetime, reverse: bool = False) -> Iterator[datetime]:
        it = CronSim(self.cron, start.astimezone(zone(self.timezone)), reverse=reverse)
        try:
            for tick in it:
                yield tick.astimezone(UTC)
        except StopIteration:  # cronsim gives up after 50 years without a match
            return

    def after(self, moment: datetime) -> datetime | None:
        """Return the first tick strictly after `moment`, or None if there is none (within 50 years)."""
        return next(self.iter_from(moment, inclusive=False), None)

    def iter_from(self, moment: datetime, *, inclusive: bool = True) -> Iterator[datetime]:
        """Yield the ticks from `moment` on (at `moment` too, if `inclusive`), in order, as UTC datetimes."""
        if self.interval_seconds:
            anchor = self.anchor_at or moment
            step = self.interval_seconds
            k = math.floor((moment - anchor).total_seconds() / step)
            tick = anchor + timedelta(seconds=k * step)
            while tick < moment or (tick == moment and not inclusive):
                k += 1
                tick = anchor + timedelta(seconds=k * step)
            while True:
                yield tick.astimezone(UTC)
                k += 1
                tick = anchor + timedelta(seconds=k * step)
        # cronsim yields strictly after its start, which it truncates to the second.
        start = moment - timedelta(seconds=1) if inclusive else moment
        for tick in self._cron(start):
            if tick > moment or (inclusive and tick == moment):
                yield tick

    def iter_before(self, moment: datetime) -> Iterator[datetime]:
        """Yield the ticks strictly before `moment`, newest first, as UTC datetimes."""
        if self.interval_seconds:
            anchor = self.anchor_at or moment
            step = self.interval_seconds
            k = math.ceil((moment - anchor).total_seconds() / step)
            while True:
                tick = anchor + timedelta(seconds=k * step)
                if tick < moment:
                    yield tick.astimezone(UTC)
                k -= 1
        # cronsim yields strictly before its start, which it truncates to the
        # second: from a second later, a tick in the same second as `moment` is found too.
        for tick in self._cron(moment + timedelta(seconds=1), reverse=True):
            if tick < moment:
                yield tick

    def next_ticks(self, moment: datetime, count: int) -> list[datetime]:
        """Return the next `count` ticks strictly after `moment`."""
        ticks = []
        for tick in self.iter_from(moment, inclusive=False):
            ticks.append(tick)
            if len(ticks) >= count:
                break
        return ticks


# --- definitions ------------------------------------------------------------------------

# The fields of a schedule definition, and their defaults.
DEFAULTS: dict[str, Any] = {
    "cron": "", "interval_seconds": None, "timezone": "UTC", "type": None, "payload": {}, "queue": "",
    "priority": Priority.NORMAL, "max_retries": None, "timeout": None, "ttl": None, "enabled": True,
    "misfire": Misfire.ONCE, "catch_up_limit": 10, "overlap": Overlap.ALLOW, "jitter_seconds": 0.0,
}
FIELDS = ("name", *DEFAULTS)


def _number(errors, name, value, *, integer=False, low=0.0, high=MAX_SECONDS, allow_low=True):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        errors[name] = [f"Must be {'a whole number' if integer else 'a number'}."]
        return None
    if not math.isfinite(value) or value < low or (value == low and not allow_low) or value > high:
        errors[name] = [f"Must be {'more than' if not allow_low else 'at least'} {low:g} and at most {high:g}."]
        return None
    return int(value) if integer else float(value)


def job_spec(definition: dict) -> JobSpec:
    """Return the spec of the job a tick of `definition` enqueues now; raise UnknownJobType, PayloadError or ValueError."""
    return build(
        definition["type"], definition["payload"], queue=definition["queue"] or None,
        priority=definition["priority"], max_retries=definition["max_retries"], timeout=definition["timeout"],
        ttl=definition["ttl"],
    )


def clean(data: dict, *, base: dict | None = None) -> dict:
    """Return the complete, normalized definition that `data` gives (over `base`, for an edit); raise ScheduleInvalid.

    Checked here, once, so that the scheduler never meets a bad one: the
    name, exactly one of cron and interval_seconds, the cron expression
    (cronsim), the zone (zoneinfo), the job's type, payload and options
    (jobs.spec.build, as a submission is) and the policies.
    """
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(FIELDS))
    for name in unknown:
        errors[str(name)] = ["Not a field of a schedule."]
    merged = {**DEFAULTS, **(base or {}), **{k: v for k, v in data.items() if k in FIELDS}}
    if base is not None and "cron" in data and data["cron"] and "interval_seconds" not in data:
        merged["interval_seconds"] = None  # an edit that gives a cron expression replaces an interval
    if base is not None and data.get("interval_seconds") is not None and "cron" not in data:
        merged["cron"] = ""
    out: dict[str, Any] = {}

    name = merged.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["Give the schedule a name."]
    elif len(name) > 100 or unstorable(name) or name != name.strip():
        errors["name"] = ["At most 100 characters, with no leading or trailing spaces."]
    else:
        out["name"] = name

    cron = merged.get("cron") or ""
    interval = merged.get("interval_seconds")
    if bool(cron) == (interval is not None):
        message = "Give exactly one of cron and interval_seconds."
        errors["cron" if cron or interval is None else "interval_seconds"] = [message]
    elif cron:
        try:
            out["cron"] = check_cron(cron)
        except ValueError as exc:
            errors["cron"] = [str(exc)]
        out["interval_seconds"] = None
    else:
        out["interval_seconds"] = _number(errors, "interval_seconds", interval, integer=True, low=1, high=MAX_INTERVAL)
        out["cron"] = ""
    try:
        zone(merged["timezone"])
        out["timezone"] = merged["timezone"]
    except ValueError as exc:
        errors["timezone"] = [str(exc)]

    try:
        out["priority"] = int(Priority[merged["priority"].upper()]) if isinstance(merged["priority"], str) else \
            int(Priority(merged["priority"]))
    except (KeyError, ValueError, TypeError):
        errors["priority"] = ["Use high, normal or low."]
    for choice_name, choices in (("misfire", Misfire), ("overlap", Overlap)):
        value = merged[choice_name]
        if value not in choices.values:
            errors[choice_name] = [f"Use {', '.join(choices.values[:-1])} or {choices.values[-1]}."]
        else:
            out[choice_name] = str(value)
    if not isinstance(merged["enabled"], bool):
        errors["enabled"] = ["Must be true or false."]
    out["enabled"] = merged["enabled"]
    out["catch_up_limit"] = _number(errors, "catch_up_limit", merged["catch_up_limit"], integer=True, low=1,
                                    high=MAX_CATCH_UP)
    out["jitter_seconds"] = _number(errors, "jitter_seconds", merged["jitter_seconds"] or 0.0, high=3600.0) or 0.0
    out["max_retries"] = _number(errors, "max_retries", merged["max_retries"], integer=True, high=100)
    out["timeout"] = _number(errors, "timeout", merged["timeout"], low=0, allow_low=False)
    out["ttl"] = _number(errors, "ttl", merged["ttl"], low=0, allow_low=False)
    queue = merged["queue"] or ""
    if not isinstance(queue, str) or len(queue) > 64 or unstorable(queue):
        errors["queue"] = ["At most 64 characters."]
    out["queue"] = queue

    type_name = merged.get("type")
    if not isinstance(type_name, str) or not type_name:
        errors["type"] = ["Give the job type each tick enqueues."]
    elif not any(field in errors for field in ("priority", "max_retries", "timeout", "ttl", "queue")):
        candidate = {**out, "type": type_name, "payload": merged["payload"]}
        try:
            spec = job_spec(candidate)
        except UnknownJobType as exc:
            errors["type"] = [str(exc)]
        except PayloadError as exc:
            errors["payload"] = [f"{key}: {' '.join(messages)}" if key != "payload" else " ".join(messages)
                                 for key, messages in exc.errors.items()]
        except ValueError as exc:
            errors.setdefault("non_field_errors", []).append(str(exc))
        else:
            out["type"], out["payload"] = spec.type, spec.payload
    if errors:
        raise ScheduleInvalid(errors)
    return out


def definition_of(schedule) -> dict:
    """Return a Schedule row's definition, as clean() returns one."""
    return {name: getattr(schedule, name) for name in FIELDS}


def cadence_of(schedule) -> Cadence:
    return Cadence(cron=schedule.cron, interval_seconds=schedule.interval_seconds, timezone=schedule.timezone,
                   anchor_at=schedule.anchor_at)


# --- declarations -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Declaration:
    """A schedule declared in code (@job_handler(..., schedule=...)) or in the JOBS_SCHEDULES setting."""

    name: str
    source: str
    definition: dict = field(hash=False)


def declared() -> tuple[list[Declaration], dict[str, str]]:
    """Return the schedules code and settings declare, and {name: reason} for the declarations that are invalid.

    A handler's `schedule` is a cron expression, or a dict of a definition's
    fields; its schedule is named after the type and enqueues it. Settings
    win over code for the same name.
    """
    raw: dict[str, tuple[str, dict]] = {}
    for handler in handlers():
        if handler.schedule is None:
            continue
        options = {"cron": handler.schedule} if isinstance(handler.schedule, str) else dict(handler.schedule)
        raw[handler.name] = (ScheduleSource.CODE, {"type": handler.name, **options})
    for name, options in dict(conf.get("JOBS_SCHEDULES")).items():
        raw[name] = (ScheduleSource.SETTINGS, dict(options))
    found, invalid = [], {}
    for name, (source, options) in sorted(raw.items()):
        try:
            found.append(Declaration(name, source, clean({**options, "name": name})))
        except ScheduleInvalid as exc:
            invalid[name] = str(exc)
    return found, invalid


# --- a round ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedTick:
    at: datetime
    # ENQUEUED for a tick that fires (the overlap policy may still skip it), else why it does not.
    outcome: str
    detail: str = ""


@dataclass(slots=True)
class Plan:
    ticks: list[PlannedTick]
    next_fire_at: datetime | None


def plan_round(cadence: Cadence, *, due_from: datetime, now: datetime, misfire: str, catch_up_limit: int,
               grace: float, paused_reason: str | None = None) -> Plan:
    """Return the ticks from `due_from` (the first tick not handled) to `now`, each with what it does, and the next tick.

    `paused_reason` is None for an enabled schedule; for a paused one every
    tick is PAUSED, with the reason as its detail.
    """
    cutoff = now - timedelta(seconds=grace)
    on_time: list[datetime] = []
    next_fire_at = None
    for tick in cadence.iter_from(max(due_from, cutoff)):
        if tick > now:
            next_fire_at = tick
            break
        if len(on_time) >= MAX_TICKS_PER_ROUND:  # more on time than a round records: the rest pass
            next_fire_at = cadence.after(now)
            break
        on_time.append(tick)
    wanted = MISSED_RECORDED + (catch_up_limit if misfire == Misfire.CATCH_UP else 0)
    missed: list[datetime] = []  # newest first
    more_missed = False
    if due_from < cutoff:
        for tick in cadence.iter_before(cutoff):
            if tick < due_from:
                break
            if len(missed) >= wanted:
                more_missed = True
                break
            missed.append(tick)
    missed.reverse()
    earlier = f"; earlier ticks from {due_from.isoformat(timespec='seconds')} were missed too" if more_missed else ""

    if paused_reason is not None:
        detail = paused_reason or "Paused."
        return Plan([PlannedTick(t, TickOutcome.PAUSED, detail) for t in [*missed, *on_time]], next_fire_at)

    fired_missed: set[datetime] = set()
    if missed and misfire == Misfire.CATCH_UP:
        fired_missed = set(missed[-catch_up_limit:])
    elif missed and misfire == Misfire.ONCE and not on_time:
        fired_missed = {missed[-1]}
    ticks = []
    for position, tick in enumerate(missed):
        if tick in fired_missed:
            ticks.append(PlannedTick(tick, TickOutcome.ENQUEUED, "Late: fired by the misfire policy."))
        else:
            detail = "Missed: no scheduler ran in time"
            if misfire == Misfire.ONCE:
                cover = min(fired_missed) if fired_missed else on_time[0]
                detail += f"; covered by the tick at {cover.isoformat(timespec='seconds')}"
            ticks.append(PlannedTick(tick, TickOutcome.MISSED, detail + (earlier if position == 0 else "") + "."))
    ticks.extend(PlannedTick(tick, TickOutcome.ENQUEUED) for tick in on_time)
    return Plan(ticks, next_fire_at)


def jitter(seconds: float, rng) -> float:
    """Return a delay within [0, seconds) drawn from `rng` (a random.Random)."""
    return rng.uniform(0.0, seconds) if seconds > 0 else 0.0

"""Schedules, pure: when ticks fall (daylight-saving transitions in two zones), what a round does with missed
ticks, and which definitions are refused."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from jobs.models import Misfire, Priority, TickOutcome
from jobs.schedules import Cadence, ScheduleInvalid, check_cron, clean, jitter, plan_round, zone


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ticks(cadence: Cadence, after: datetime, count: int) -> list[datetime]:
    return cadence.next_ticks(after, count)


# --- cron and interval ------------------------------------------------------------------


def test_a_five_field_expression_ticks_on_the_minute_and_six_fields_on_the_second():
    assert ticks(Cadence(cron="*/5 * * * *"), utc(2026, 1, 1, 10, 2, 30), 3) == [
        utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 10, 10), utc(2026, 1, 1, 10, 15)]
    assert ticks(Cadence(cron="*/15 * * * * *"), utc(2026, 1, 1, 10, 0, 1), 3) == [
        utc(2026, 1, 1, 10, 0, 15), utc(2026, 1, 1, 10, 0, 30), utc(2026, 1, 1, 10, 0, 45)]


def test_ticks_are_strictly_after_the_moment_and_iter_from_includes_it():
    cadence = Cadence(cron="0 * * * *")
    assert cadence.after(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)
    assert next(cadence.iter_from(utc(2026, 1, 1, 10))) == utc(2026, 1, 1, 10)
    assert next(cadence.iter_before(utc(2026, 1, 1, 10))) == utc(2026, 1, 1, 9)


def test_an_interval_counts_from_its_anchor_on_the_absolute_timeline():
    cadence = Cadence(interval_seconds=90, anchor_at=utc(2026, 1, 1, 0, 0, 0))
    assert ticks(cadence, utc(2026, 1, 1, 0, 2), 2) == [utc(2026, 1, 1, 0, 3), utc(2026, 1, 1, 0, 4, 30)]
    assert next(cadence.iter_before(utc(2026, 1, 1, 0, 3))) == utc(2026, 1, 1, 0, 1, 30)


def test_a_cron_expression_reads_the_wall_clock_of_its_zone():
    # 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
    cadence = Cadence(cron="0 9 * * *", timezone="Europe/Berlin")
    assert cadence.after(utc(2026, 1, 10)) == utc(2026, 1, 10, 8)
    assert cadence.after(utc(2026, 7, 10)) == utc(2026, 7, 10, 7)


# --- daylight saving ----------------------------------------------------------------------
# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.


@pytest.mark.parametrize(("zone_name", "day_before", "ticks_utc"), [
    # 02:30 does not exist on the 29th: it fires at 03:00 CEST (01:00 UTC), once; then 02:30 CEST again.
    ("Europe/Berlin", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
    ("America/New_York", utc(2026, 3, 7, 12), [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
])
def test_a_daily_time_skipped_by_spring_forward_fires_once_at_the_first_minute_that_exists(zone_name, day_before, ticks_utc):
    assert ticks(Cadence(cron="30 2 * * *", timezone=zone_name), day_before, 2) == ticks_utc


@pytest.mark.parametrize(("zone_name", "expression", "day_before", "ticks_utc"), [
    # 02:30 happens twice on 2026-10-25 in Berlin (00:30 and 01:30 UTC): it fires at the first only.
    ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 24, 12), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    # 01:00 happens twice on 2026-11-01 in New York (05:00 and 06:00 UTC).
    ("America/New_York", "0 1 * * *", utc(2026, 10, 31, 12), [utc(2026, 11, 1, 5, 0), utc(2026, 11, 2, 6, 0)]),
])
def test_a_daily_time_repeated_by_fall_back_fires_once(zone_name, expression, day_before, ticks_utc):
    assert ticks(Cadence(cron=expression, timezone=zone_name), day_before, 2) == ticks_utc


@pytest.mark.parametrize(("zone_name", "start", "count"), [
    ("Europe/Berlin", utc(2026, 3, 28, 23, 0), 8),     # spring forward
    ("Europe/Berlin", utc(2026, 10, 24, 23, 0), 8),    # fall back
    ("America/New_York", utc(2026, 3, 8, 5, 0), 8),    # spring forward
    ("America/New_York", utc(2026, 11, 1, 4, 0), 8),   # fall back
])
def test_a_frequent_expression_keeps_its_real_time_rhythm_through_both_transitions(zone_name, start, count):
    """Every 30 minutes of wall clock is every 30 real minutes: the skipped hour has none, the repeated hour
    has its own."""
    found = ticks(Cadence(cron="*/30 * * * *", timezone=zone_name), start, count)
    assert [b - a for a, b in zip(found, found[1:], strict=False)] == [timedelta(minutes=30)] * (count - 1)


def test_hourly_in_new_york_fires_in_both_one_oclock_hours_of_fall_back():
    found = ticks(Cadence(cron="0 * * * *", timezone="America/New_York"), utc(2026, 11, 1, 3, 30), 4)
    assert found == [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]
    local = [t.astimezone(zone("America/New_York")).strftime("%H:%M %Z") for t in found]
    assert local == ["00:00 EDT", "01:00 EDT", "01:00 EST", "02:00 EST"]


def test_an_interval_ignores_daylight_saving():
    cadence = Cadence(interval_seconds=3600, timezone="Europe/Berlin", anchor_at=utc(2026, 3, 28, 0))
    found = ticks(cadence, utc(2026, 3, 28, 23, 30), 4)
    assert found == [utc(2026, 3, 29, h) for h in range(0, 4)]


# --- a round: misfire policies ----------------------------------------------------------------

T0 = utc(2026, 5, 1, 12, 0, 0)


def outcomes(plan) -> list[tuple[int, str]]:
    return [(int((t.at - T0).total_seconds()), t.outcome) for t in plan.ticks]


def test_ticks_within_the_grace_fire_and_older_ones_go_by_the_misfire_policy_skip():
    cadence = Cadence(interval_seconds=10, anchor_at=T0)
    plan = plan_round(cadence, due_from=T0, now=T0 + timedelta(seconds=100), misfire=Misfire.SKIP,
                      catch_up_limit=10, grace=30)
    assert outcomes(plan) == [(s, TickOutcome.MISSED) for s in range(0, 70, 10)] + \
        [(s, TickOutcome.ENQUEUED) for s in range(70, 101, 10)]
    assert plan.next_fire_at == T0 + timedelta(seconds=110)


def test_misfire_once_fires_the_latest_missed_tick_when_none_is_on_time():
    cadence = Cadence(interval_seconds=60, anchor_at=T0)
    plan = plan_round(cadence, due_from=T0, now=T0 + timedelta(seconds=200), misfire=Misfire.ONCE,
                      catch_up_limit=10, grace=5)
    assert outcomes(plan) == [(0, "missed"), (60, "missed"), (120, "missed"), (180, "enqueued")]
    assert "covered by the tick at" in plan.ticks[0].detail


def test_misfire_once_fires_nothing_late_when_a_tick_on_time_fires():
    cadence = Cadence(interval_seconds=60, anchor_at=T0)
    plan = plan_round(cadence, due_from=T0, now=T0 + timedelta(seconds=190), misfire=Misfire.ONCE,
                      catch_up_limit=10, grace=15)
    assert outcomes(plan) == [(0, "missed"), (60, "missed"), (120, "missed"), (180, "enqueued")]


def test_misfire_catch_up_fires_the_latest_n_missed_ticks_in_order():
    cadence = Cadence(interval_seconds=60, anchor_at=T0)
    plan = plan_round(cadence, due_from=T0, now=T0 + timedelta(seconds=200), misfire=Misfire.CATCH_UP,
                      catch_up_limit=2, grace=5)
    assert outcomes(plan) == [(0, "missed"), (60, "missed"), (120, "enqueued"), (180, "enqueued")]


def test_a_schedule_far_behind_records_a_bounded_number_of_missed_ticks():
    cadence = Cadence(interval_seconds=1, anchor_at=T0)
    plan = plan_round(cadence, due_from=T0, now=T0 + timedelta(days=1), misfire=Misfire.SKIP, catch_up_limit=10,
                      grace=30)
    missed = [t for t in plan.ticks if t.outcome == TickOutcome.MISSED]
    assert len(missed) == 100 and "earlier ticks" in missed[0].detail
    assert len([t for t in plan.ticks if t.outcome == TickOutcome.ENQUEUED]) == 31
    assert plan.next_fire_at == T0 + timedelta(days=1, seconds=1)


def test_a_paused_schedule_records_its_ticks_as_paused():
    cadence = Cadence(interval_seconds=10, anchor_at=T0)
    plan = plan_round(cadence, due_from=T0, now=T0 + timedelta(seconds=20), misfire=Misfire.CATCH_UP,
                      catch_up_limit=10, grace=30, paused_reason="")
    assert outcomes(plan) == [(0, "paused"), (10, "paused"), (20, "paused")]


def test_jitter_stays_within_its_bound():
    rng = random.Random(7)
    draws = [jitter(5.0, rng) for _ in range(200)]
    assert all(0 <= d < 5 for d in draws) and max(draws) > 4
    assert jitter(0, rng) == 0


# --- definitions -----------------------------------------------------------------------------


def errors(**data) -> dict:
    with pytest.raises(ScheduleInvalid) as caught:
        clean({"name": "n", "type": "reverse_string", "payload": "x", **data})
    return caught.value.errors


def test_a_valid_definition_is_normalized():
    definition = clean({"name": "nightly", "cron": "0  3 * * *", "type": "reverse_string", "payload": "hi",
                        "timezone": "Europe/Berlin", "priority": "high"})
    assert definition["cron"] == "0 3 * * *"
    assert definition["payload"] == {"text": "hi"}
    assert definition["priority"] == Priority.HIGH and definition["interval_seconds"] is None


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"cron": "61 * * * *"}, "cron", "Invalid cron expression"),
    ({"cron": "* * *"}, "cron", "5 fields"),
    ({"cron": "0 0 30 2 *"}, "cron", "Invalid cron expression"),
    ({"cron": "* * * * *", "interval_seconds": 60}, "cron", "exactly one"),
    ({}, "cron", "exactly one"),
    ({"interval_seconds": 0}, "interval_seconds", "at least 1"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
    ({"cron": "* * * * *", "timezone": "../../etc/passwd"}, "timezone", "Unknown time zone"),
    ({"cron": "* * * * *", "type": "no_such_type"}, "type", "Unknown job type"),
    ({"cron": "* * * * *", "type": "fibonacci_calc", "payload": {"n": "ten"}}, "payload", "n:"),
    ({"cron": "* * * * *", "misfire": "sometimes"}, "misfire", "skip, once or catch_up"),
    ({"cron": "* * * * *", "overlap": "never"}, "overlap", "allow, skip or replace"),
    ({"cron": "* * * * *", "jitter_seconds": -1}, "jitter_seconds", "at least 0"),
    ({"cron": "* * * * *", "name": " padded"}, "name", "spaces"),
])
def test_a_bad_definition_is_refused_naming_its_field(data, field, message):
    found = errors(**data)
    assert field in found, found
    assert message in " ".join(found[field])


def test_a_cron_expression_is_checked_by_cronsim():
    assert check_cron("*/5 * * * *") == "*/5 * * * *"
    with pytest.raises(ValueError, match="Invalid cron expression"):
        check_cron("* * * * MON#9")

"""Schedules on real PostgreSQL: one job per tick, whoever fires it and however often; the misfire and overlap
policies; pauses; the start-up sync and its deploy rule; the REST API, the command, the admin and the dashboard
page, with good and bad input. Time is passed in: nothing sleeps through a tick."""

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from jobs import queue, registry
from jobs.models import Job, JobStatus, Schedule, ScheduleSource, ScheduleTick, TickOutcome
from jobs.schedules import Declaration, clean, declared
from tests.factories import UserFactory

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make(name="every-10s", *, now=T0, **data) -> Schedule:
    if "cron" not in data:
        data.setdefault("interval_seconds", 10)
    return queue.create_schedule({"name": name, "type": "reverse_string", "payload": "x", **data}, now=now)


def fire(seconds: float, **options) -> queue.RoundResult:
    return queue.fire_due_schedules(now=at(seconds), **options)


def tick_outcomes(schedule) -> list[tuple[int, str]]:
    return [(int((t.tick_at - T0).total_seconds()), t.outcome)
            for t in ScheduleTick.objects.filter(schedule=schedule).order_by("tick_at")]


def jobs_of(schedule) -> list[int]:
    return sorted(ScheduleTick.objects.filter(schedule=schedule, job_id__isnull=False).values_list("job_id", flat=True))


# --- firing ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_due_tick_enqueues_one_job_and_a_second_round_enqueues_none():
    schedule = make()
    assert schedule.next_fire_at == at(10)
    done = fire(35)
    assert (done.schedules, done.enqueued) == (1, 3)
    assert tick_outcomes(schedule) == [(10, "enqueued"), (20, "enqueued"), (30, "enqueued")]
    job_ids = jobs_of(schedule)
    jobs = Job.objects.filter(pk__in=job_ids)
    assert len(job_ids) == 3 and {j.type for j in jobs} == {"reverse_string"} and {j.payload["text"] for j in jobs} == {"x"}
    assert fire(35).enqueued == 0
    schedule.refresh_from_db()
    assert schedule.next_fire_at == at(40) and schedule.last_fire_at == at(30) and schedule.last_job_id == max(job_ids)
    assert Job.objects.count() == 3


@pytest.mark.django_db
def test_a_tick_another_scheduler_recorded_first_gets_no_second_job():
    """The unique tick is the guarantee: a leader that read the schedule before the other's round committed
    (so it still sees the old next tick) enqueues nothing for it."""
    schedule = make()
    fire(15)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=at(10))  # the stale view of a second leader
    done = fire(15)
    assert (done.enqueued, done.duplicates) == (0, 1)
    assert Job.objects.count() == 1 and ScheduleTick.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_running_at_once_enqueue_each_tick_once():
    schedules = [make(f"s{n}", interval_seconds=1) for n in range(30)]
    errors: list[Exception] = []

    def run(barrier, moment):
        try:
            barrier.wait()
            queue.fire_due_schedules(now=moment, limit=7)
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    for step in range(1, 11):
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=run, args=(barrier, at(step))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors
    for schedule in schedules:
        assert tick_outcomes(schedule) == [(s, "enqueued") for s in range(1, 11)]
    assert Job.objects.count() == 300
    assert len(set(ScheduleTick.objects.values_list("job_id", flat=True))) == 300


@pytest.mark.django_db(transaction=True)
def test_a_leader_killed_in_the_middle_of_a_round_leaves_nothing_and_the_next_round_fires_each_tick_once(monkeypatch):
    """The round's connection is cut (as by kill -9 of its process) after its ticks are inserted and before it
    commits: ticks and jobs roll back together, and the next leader's round fires each tick once."""
    import jobs.queue.schedules as queue_schedules

    schedules = [make(f"s{n}") for n in range(5)]
    inserted, release = threading.Event(), threading.Event()
    real_enqueue = queue_schedules.enqueue_specs
    backend = {}

    def enqueue_then_hang(specs, **options):
        ids = real_enqueue(specs, **options)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend["pid"] = cursor.fetchone()[0]
        inserted.set()
        release.wait(10)
        return ids

    monkeypatch.setattr(queue_schedules, "enqueue_specs", enqueue_then_hang)
    failures = []

    def doomed_leader():
        try:
            queue.fire_due_schedules(now=at(25))
        except Exception as exc:  # the connection was cut under it
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=doomed_leader)
    thread.start()
    assert inserted.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend["pid"]])
    release.set()
    thread.join(10)
    assert failures, "the round could not commit"
    assert ScheduleTick.objects.count() == 0 and Job.objects.count() == 0
    monkeypatch.setattr(queue_schedules, "enqueue_specs", real_enqueue)
    assert fire(25).enqueued == 10
    for schedule in schedules:
        assert tick_outcomes(schedule) == [(10, "enqueued"), (20, "enqueued")]
    assert Job.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_a_round_of_many_batches_on_several_connections_fires_each_tick_once():
    from jobs.models import Schedule as Row
    from jobs.schedules import Cadence

    definition = clean({"name": "x", "interval_seconds": 10, "type": "reverse_string", "payload": "p"})
    Row.objects.bulk_create([Row(**{**definition, "name": f"bulk-{n}"}, anchor_at=T0,
                                 next_fire_at=Cadence(interval_seconds=10, anchor_at=T0).after(T0))
                             for n in range(2500)])
    done = queue.fire_due_schedules(now=at(15), limit=300, threads=3)
    assert (done.schedules, done.enqueued, done.duplicates) == (2500, 2500, 0)
    assert queue.fire_due_schedules(now=at(15), limit=300, threads=3).schedules == 0
    assert Job.objects.count() == ScheduleTick.objects.count() == 2500
    assert ScheduleTick.objects.values("schedule_id").distinct().count() == 2500


@pytest.mark.django_db
@pytest.mark.parametrize(("misfire", "fired"), [
    ("skip", [300]),
    ("once", [300]),
    ("catch_up", [180, 240, 300]),
])
def test_ticks_missed_while_no_scheduler_ran_go_by_the_misfire_policy(misfire, fired):
    schedule = make(interval_seconds=60, misfire=misfire, catch_up_limit=2)
    fire(310)  # the default grace is 30 s: 60 to 240 were missed
    outcomes = tick_outcomes(schedule)
    assert [s for s, outcome in outcomes if outcome == "enqueued"] == fired
    assert [s for s, outcome in outcomes if outcome == "missed"] == [s for s in (60, 120, 180, 240) if s not in fired]
    assert Job.objects.count() == len(fired)


@pytest.mark.django_db
def test_misfire_once_fires_one_job_for_the_ticks_missed_when_none_is_on_time():
    schedule = make(interval_seconds=60, misfire="once")
    fire(290)
    assert tick_outcomes(schedule) == [(60, "missed"), (120, "missed"), (180, "missed"), (240, "enqueued")]


@pytest.mark.django_db
def test_overlap_skip_enqueues_nothing_while_the_previous_job_is_unfinished():
    schedule = make(overlap="skip")
    fire(10)
    fire(20)
    assert tick_outcomes(schedule) == [(10, "enqueued"), (20, "skipped")]
    queue.cancel_job(jobs_of(schedule)[0])  # finished
    fire(30)
    assert tick_outcomes(schedule)[-1] == (30, "enqueued")
    assert "had not finished" in ScheduleTick.objects.get(schedule=schedule, tick_at=at(20)).detail


@pytest.mark.django_db
def test_overlap_skip_fires_one_of_several_ticks_due_in_one_round():
    schedule = make(overlap="skip")
    fire(35)
    assert tick_outcomes(schedule) == [(10, "enqueued"), (20, "skipped"), (30, "skipped")]


@pytest.mark.django_db
def test_overlap_replace_cancels_the_previous_unfinished_job():
    schedule = make(overlap="replace")
    fire(10)
    (first,) = jobs_of(schedule)
    fire(20)
    assert Job.objects.get(pk=first).status == JobStatus.CANCELLED
    second = [j for j in jobs_of(schedule) if j != first]
    assert len(second) == 1 and Job.objects.get(pk=second[0]).status == JobStatus.QUEUED
    fire(45)  # 30 and 40 due at once: the latest replaces the other
    assert tick_outcomes(schedule)[-2:] == [(30, "skipped"), (40, "enqueued")]
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 1


@pytest.mark.django_db
def test_a_scheduled_job_carries_the_concurrency_key_its_type_gives_it():
    def keyed(job):
        """Keyed."""

    registry.job_handler("keyed_by_type", concurrency_key=lambda p: f"tenant:{p['t']}", key_concurrency=2)(keyed)
    try:
        schedule = make(type="keyed_by_type", payload={"t": 7})
        fire(10)
        job = Job.objects.get(pk=jobs_of(schedule)[0])
        assert (job.concurrency_key, job.key_limit) == ("tenant:7", 2)
    finally:
        registry._registry.pop("keyed_by_type")


@pytest.mark.django_db
def test_overlap_allow_enqueues_at_every_tick():
    schedule = make(overlap="allow")
    fire(10)
    fire(20)
    assert tick_outcomes(schedule) == [(10, "enqueued"), (20, "enqueued")]


@pytest.mark.django_db
def test_jitter_delays_each_job_within_its_bound_after_the_tick():
    for n in range(20):
        make(f"jittered-{n}", jitter_seconds=30)
    fire(10)
    ticks = list(ScheduleTick.objects.all())
    delays = []
    for tick in ticks:
        job = Job.objects.get(pk=tick.job_id)
        assert job.status == JobStatus.SCHEDULED
        delays.append((job.run_at - tick.tick_at).total_seconds())
    assert len(ticks) == 20 and all(0 < d < 30 for d in delays) and len(set(delays)) == 20


@pytest.mark.django_db
def test_a_paused_schedule_records_its_ticks_as_paused_and_resumes_from_its_next_tick():
    schedule = make()
    queue.pause_schedule(schedule.pk)
    fire(25)
    assert tick_outcomes(schedule) == [(10, "paused"), (20, "paused")]
    assert Job.objects.count() == 0
    queue.update_schedule(schedule.pk, {"enabled": True}, now=at(25))
    fire(31)
    assert tick_outcomes(schedule)[-1] == (30, "enqueued")


@pytest.mark.django_db
def test_a_schedule_whose_job_type_disappeared_is_paused_with_its_reason_and_the_round_goes_on():
    gone = make("gone")
    fine = make("fine")
    Schedule.objects.filter(pk=gone.pk).update(type="vanished_after_a_deploy")
    done = fire(10)
    gone.refresh_from_db()
    assert not gone.enabled and "vanished_after_a_deploy" in gone.paused_reason
    assert tick_outcomes(gone) == [(10, "paused")] and tick_outcomes(fine) == [(10, "enqueued")]
    assert done.enqueued == 1
    # The type is back after the next deploy: the start-up resumes it.
    Schedule.objects.filter(pk=gone.pk).update(type="reverse_string")
    report = queue.sync_declared([], {})
    gone.refresh_from_db()
    assert report.restored == ["gone"] and gone.enabled and gone.paused_reason == ""


@pytest.mark.django_db
def test_the_specs_built_ahead_on_taking_the_lead_are_the_ones_the_round_uses(monkeypatch):
    import jobs.queue.schedules as queue_schedules

    monkeypatch.setattr(queue_schedules, "_SPECS", {})
    for n in range(3):
        make(f"s{n}", payload=f"text {n}")
    Schedule.objects.filter(name="s2").update(type="gone_since_the_deploy")  # left to its round, which pauses it
    assert queue.prepare_specs() == 2
    built = []
    real_job_spec = queue_schedules.job_spec
    monkeypatch.setattr(queue_schedules, "job_spec", lambda row: built.append(row["type"]) or real_job_spec(row))
    fire(10)
    assert Job.objects.count() == 2 and built == ["gone_since_the_deploy"], "the others were ready"
    assert not Schedule.objects.get(name="s2").enabled


@pytest.mark.django_db
def test_the_round_reads_the_database_clock_not_the_hosts(monkeypatch):
    """A host whose clock runs an hour ahead fires nothing early."""
    from django.utils import timezone

    schedule = queue.create_schedule({"name": "hourly", "cron": "0 * * * *", "type": "reverse_string",
                                      "payload": "x"})
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))
    assert queue.fire_due_schedules().schedules == 0
    assert not ScheduleTick.objects.filter(schedule=schedule).exists()


@pytest.mark.django_db
def test_run_now_enqueues_a_manual_tick_whatever_the_pause():
    schedule = make()
    queue.pause_schedule(schedule.pk)
    job_id = queue.run_schedule_now(schedule.pk)
    tick = ScheduleTick.objects.get(schedule=schedule)
    assert tick.manual and tick.job_id == job_id and tick.outcome == TickOutcome.ENQUEUED
    schedule.refresh_from_db()
    assert schedule.last_job_id == job_id and not schedule.enabled


@pytest.mark.django_db
def test_ticks_older_than_the_retention_are_pruned(settings):
    schedule = make()
    fire(35)
    ScheduleTick.objects.filter(tick_at__lt=at(30)).update(recorded_at=T0 - timedelta(days=30))
    settings.JOBS_SCHEDULE_TICK_RETENTION_SECONDS = 7 * 24 * 3600
    assert queue.prune_ticks() == 2
    assert tick_outcomes(schedule) == [(30, "enqueued")]


@pytest.mark.django_db
def test_metrics_count_each_schedules_ticks_by_outcome_and_the_lag_to_enqueue(settings):
    from prometheus_client.parser import text_string_to_metric_families

    settings.METRICS_CACHE_SECONDS = 0
    make(interval_seconds=60, misfire="skip")
    fire(310)
    response = Client().get("/metrics")
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}
    ticks = "skipjack_schedule_ticks_total"
    assert samples[(ticks, (("outcome", "enqueued"), ("schedule", "every-10s")))] == 1
    assert samples[(ticks, (("outcome", "missed"), ("schedule", "every-10s")))] == 4
    assert samples[("skipjack_schedule_lag_seconds_count", ())] == 1
    assert samples[("skipjack_schedule_lag_seconds_sum", ())] > 0


# --- the start-up sync: the deploy rule ----------------------------------------------------


def declaration(name="nightly", source=ScheduleSource.SETTINGS, **data) -> Declaration:
    return Declaration(name, source, clean({"name": name, "cron": "0 3 * * *", "type": "reverse_string",
                                            "payload": "x", **data}))


@pytest.mark.django_db
def test_a_declared_schedule_is_created_and_follows_its_declaration_while_unedited():
    report = queue.sync_declared([declaration()], {}, now=T0)
    assert report.created == ["nightly"]
    schedule = Schedule.objects.get(name="nightly")
    assert schedule.source == ScheduleSource.SETTINGS and schedule.next_fire_at == datetime(2026, 5, 2, 3, tzinfo=UTC)
    report = queue.sync_declared([declaration(cron="0 5 * * *")], {}, now=T0)
    schedule.refresh_from_db()
    assert report.updated == ["nightly"] and schedule.cron == "0 5 * * *"
    assert schedule.next_fire_at == datetime(2026, 5, 2, 5, tzinfo=UTC)
    assert queue.sync_declared([declaration(cron="0 5 * * *")], {}, now=T0).updated == []


@pytest.mark.django_db
def test_a_run_time_edit_of_a_declared_schedule_is_not_overwritten_by_the_next_deploy():
    queue.sync_declared([declaration()], {}, now=T0)
    schedule = Schedule.objects.get(name="nightly")
    queue.update_schedule(schedule.pk, {"cron": "0 4 * * *"}, now=T0)
    queue.pause_schedule(schedule.pk)
    # The next deploy declares it differently again.
    report = queue.sync_declared([declaration(cron="0 6 * * *", payload="y")], {}, now=T0)
    schedule.refresh_from_db()
    assert report.kept == ["nightly"]
    assert schedule.cron == "0 4 * * *" and not schedule.enabled and schedule.payload == {"text": "x"}
    assert schedule.declaration["cron"] == "0 6 * * *", "what the code says now is shown"
    # Removing it returns it to the declaration at the next start-up.
    queue.delete_schedule(schedule.pk)
    queue.sync_declared([declaration(cron="0 6 * * *")], {}, now=T0)
    assert Schedule.objects.get(name="nightly").cron == "0 6 * * *"


@pytest.mark.django_db
def test_a_schedule_no_longer_declared_is_paused_and_declared_again_resumes():
    queue.sync_declared([declaration()], {}, now=T0)
    report = queue.sync_declared([], {}, now=T0)
    schedule = Schedule.objects.get(name="nightly")
    assert report.retired == ["nightly"] and not schedule.enabled and "No longer declared" in schedule.paused_reason
    queue.sync_declared([declaration()], {}, now=T0)
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.paused_reason == ""


@pytest.mark.django_db
def test_a_schedule_added_at_run_time_is_never_touched_by_a_declaration_of_its_name():
    make("nightly")
    report = queue.sync_declared([declaration()], {}, now=T0)
    schedule = Schedule.objects.get(name="nightly")
    assert schedule.source == ScheduleSource.RUNTIME and schedule.interval_seconds == 10
    assert "nightly" in report.invalid


@pytest.mark.django_db
def test_schedules_are_declared_in_settings_and_on_handlers(settings):
    def tidy(job):
        """Tidy up."""

    registry.job_handler("tidy_up", schedule="*/5 * * * *")(tidy)
    try:
        settings.JOBS_SCHEDULES = {
            "report": {"cron": "0 8 * * 1-5", "timezone": "Europe/Berlin", "type": "uppercase_text", "payload": "r"},
            "broken": {"cron": "99 * * * *", "type": "uppercase_text"},
        }
        found, invalid = declared()
        assert {d.name: d.source for d in found} == {"report": "settings", "tidy_up": "code"}
        assert "cron" in invalid["broken"]
        report = queue.sync_declared()
        assert sorted(report.created) == ["report", "tidy_up"]
        assert Schedule.objects.get(name="tidy_up").type == "tidy_up"
    finally:
        registry._registry.pop("tidy_up")


# --- the REST API -------------------------------------------------------------------------------


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def staff_api(db):
    return api_for(UserFactory(username="ops", is_staff=True))


GOOD = {"name": "hourly-report", "cron": "0 * * * *", "timezone": "Europe/Berlin", "type": "uppercase_text",
        "payload": {"text": "hi"}, "misfire": "catch_up", "catch_up_limit": 3, "overlap": "skip", "jitter_seconds": 2}


@pytest.mark.django_db
def test_the_schedules_api_is_for_staff_only():
    schedule = make()
    urls = ["/api/schedules/", f"/api/schedules/{schedule.pk}/", f"/api/schedules/{schedule.pk}/ticks/"]
    for url in urls:
        assert APIClient().get(url).status_code == 401
        assert api_for(UserFactory()).get(url).status_code == 403
    for action in ("pause", "resume", "run"):
        assert api_for(UserFactory()).post(f"/api/schedules/{schedule.pk}/{action}/").status_code == 403
        assert APIClient().post(f"/api/schedules/{schedule.pk}/{action}/").status_code == 401
    assert api_for(UserFactory()).post("/api/schedules/", GOOD, format="json").status_code == 403
    assert api_for(UserFactory()).delete(f"/api/schedules/{schedule.pk}/").status_code == 403
    assert Schedule.objects.count() == 1 and Job.objects.count() == 0


@pytest.mark.django_db
def test_staff_create_list_change_and_delete_schedules(staff_api):
    created = staff_api.post("/api/schedules/", GOOD, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert {k: body[k] for k in GOOD} == {**GOOD, "jitter_seconds": 2.0}
    assert body["interval_seconds"] is None and body["next_fire_at"] and body["last_fire_at"] is None
    assert body["priority"] == "normal" and body["enabled"] is True
    listed = staff_api.get("/api/schedules/").json()
    assert [s["name"] for s in listed["results"]] == ["hourly-report"]
    changed = staff_api.patch(f"/api/schedules/{body['id']}/", {"interval_seconds": 600, "cron": ""}, format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["interval_seconds"] == 600 and changed.json()["cron"] == ""
    assert staff_api.delete(f"/api/schedules/{body['id']}/").status_code == 204
    assert not Schedule.objects.exists()
    assert staff_api.get(f"/api/schedules/{body['id']}/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field"), [
    ({"cron": "every day"}, "cron"),
    ({"cron": "0 25 * * *"}, "cron"),
    ({"timezone": "Europe/Atlantis"}, "timezone"),
    ({"type": "no_such_type"}, "type"),
    ({"payload": {"text": 5}}, "payload"),
    ({"interval_seconds": 60}, "cron"),
    ({"misfire": "later"}, "misfire"),
    ({"priority": "urgent"}, "priority"),
    ({"unknown": 1}, "unknown"),
])
def test_a_bad_schedule_is_a_400_naming_its_field(staff_api, change, field):
    response = staff_api.post("/api/schedules/", {**GOOD, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_a_bad_change_is_a_400_naming_its_field_and_changes_nothing(staff_api):
    schedule = make()
    for change, field in (({"cron": "61 * * * *", "interval_seconds": None}, "cron"),
                          ({"timezone": "Nowhere/Else"}, "timezone"), ({"type": "gone"}, "type")):
        response = staff_api.patch(f"/api/schedules/{schedule.pk}/", change, format="json")
        assert response.status_code == 400 and field in response.json(), response.json()
    schedule.refresh_from_db()
    assert schedule.interval_seconds == 10 and schedule.timezone == "UTC"
    taken = staff_api.post("/api/schedules/", {**GOOD, "name": "every-10s"}, format="json")
    assert taken.status_code == 400 and "exists already" in taken.json()["name"][0]


@pytest.mark.django_db
def test_staff_pause_resume_and_run_a_schedule_and_read_its_ticks(staff_api):
    schedule = make()
    paused = staff_api.post(f"/api/schedules/{schedule.pk}/pause/")
    assert paused.status_code == 200 and paused.json()["enabled"] is False
    run = staff_api.post(f"/api/schedules/{schedule.pk}/run/")
    assert run.status_code == 200 and Job.objects.filter(pk=run.json()["job_id"]).exists()
    assert staff_api.post(f"/api/schedules/{schedule.pk}/resume/").json()["enabled"] is True
    ticks = staff_api.get(f"/api/schedules/{schedule.pk}/ticks/").json()
    assert ticks["count"] == 1
    (tick,) = ticks["results"]
    assert tick["manual"] and tick["outcome"] == "enqueued" and tick["job_status"] == "queued"
    assert tick["job_id"] == run.json()["job_id"]


@pytest.mark.django_db
def test_the_openapi_schema_documents_the_schedule_fields(staff_api):
    schema = json.loads(Client().get("/api/schema/", HTTP_ACCEPT="application/json").content)
    fields = schema["components"]["schemas"]["Schedule"]["properties"]
    for name in ("name", "cron", "interval_seconds", "timezone", "type", "payload", "queue", "priority",
                 "max_retries", "timeout", "ttl", "enabled", "misfire", "overlap", "jitter_seconds",
                 "next_fire_at", "last_fire_at"):
        assert name in fields, name
    assert "/api/schedules/{schedule_id}/ticks/" in schema["paths"]


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_adds_lists_pauses_resumes_runs_and_removes(capsys):
    call_command("schedules", "add", "cleanup", "reverse_string", "--every", "15m", "--payload", '"x"',
                 "--misfire", "skip")
    schedule = Schedule.objects.get(name="cleanup")
    assert schedule.interval_seconds == 900 and schedule.misfire == "skip"
    call_command("schedules", "add", "nightly", "uppercase_text", "--cron", "0 3 * * *", "--timezone",
                 "America/New_York", "--payload", '{"text": "n"}')
    call_command("schedules", "list")
    out = capsys.readouterr().out
    assert "cleanup  every 900 s (UTC)" in out and "nightly  0 3 * * * (America/New_York)" in out
    call_command("schedules", "pause", "cleanup")
    assert not Schedule.objects.get(name="cleanup").enabled
    call_command("schedules", "resume", "cleanup")
    assert Schedule.objects.get(name="cleanup").enabled
    call_command("schedules", "run", "cleanup")
    assert Job.objects.filter(type="reverse_string").count() == 1
    call_command("schedules", "remove", "cleanup")
    assert not Schedule.objects.filter(name="cleanup").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("argv", "message"), [
    (["add", "bad", "reverse_string", "--cron", "61 * * * *"], "cron: Invalid cron expression"),
    (["add", "bad", "reverse_string", "--cron", "* * * * *", "--timezone", "Moon/Base"], "timezone: Unknown time zone"),
    (["add", "bad", "no_such_type", "--cron", "* * * * *"], "type: Unknown job type"),
    (["add", "bad", "fibonacci_calc", "--cron", "* * * * *", "--payload", '{"n": -1}'], "payload:"),
    (["add", "bad", "reverse_string", "--cron", "* * * * *", "--payload", "{nope"], "not valid JSON"),
    (["add", "bad", "reverse_string"], "exactly one of cron and interval_seconds"),
    (["add", "bad", "reverse_string", "--every", "soon"], "--every"),
    (["pause", "nobody"], "No schedule named 'nobody'"),
    (["run", "nobody"], "No schedule named 'nobody'"),
])
def test_the_command_refuses_bad_input_with_a_one_line_reason(argv, message):
    with pytest.raises(CommandError) as caught:
        call_command("schedules", *argv)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not Schedule.objects.exists()


# --- the admin -----------------------------------------------------------------------------------


ADMIN_FORM = {"name": "admin-made", "cron": "*/5 * * * *", "interval_seconds": "", "timezone": "UTC",
              "type": "reverse_string", "payload": '"x"', "queue": "", "priority": "0", "max_retries": "",
              "timeout": "", "ttl": "", "enabled": "on", "misfire": "once", "catch_up_limit": "10",
              "overlap": "allow", "jitter_seconds": "0"}


@pytest.fixture
def admin_client(db):
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.django_db
def test_the_admin_adds_a_schedule_and_refuses_a_bad_one_with_a_form_error(admin_client):
    url = reverse("admin:jobs_schedule_add")
    bad = admin_client.post(url, {**ADMIN_FORM, "cron": "*/5 * *", "timezone": "Nowhere"})
    assert bad.status_code == 200
    errors = bad.context["adminform"].form.errors
    assert "cron" in errors and "timezone" in errors
    assert not Schedule.objects.exists()
    good = admin_client.post(url, ADMIN_FORM)
    assert good.status_code == 302, good.context and good.context["adminform"].form.errors
    schedule = Schedule.objects.get(name="admin-made")
    assert schedule.next_fire_at is not None and schedule.source == ScheduleSource.RUNTIME
    changed = admin_client.post(reverse("admin:jobs_schedule_change", args=[schedule.pk]),
                                {**ADMIN_FORM, "type": "no_such_type"})
    assert changed.status_code == 200 and "type" in changed.context["adminform"].form.errors
    page = admin_client.get(reverse("admin:jobs_schedule_changelist"))
    assert page.status_code == 200 and b"admin-made" in page.content


# --- the dashboard page --------------------------------------------------------------------------


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(UserFactory(username="staff", is_staff=True))
    return client


DASHBOARD_FORM = {k: v for k, v in ADMIN_FORM.items() if k != "priority"} | {"priority": "normal", "name": "dash"}


@pytest.mark.django_db
def test_the_schedules_page_is_for_staff_and_shows_next_fire_times_in_the_zone_and_the_last_ticks(staff_client):
    schedule = make("berlin-nine", cron="0 9 * * *", timezone="Europe/Berlin", now=T0)
    queue.run_schedule_now(schedule.pk)
    url = reverse("dashboard:schedules")
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    user = Client()
    user.force_login(UserFactory(username="plain"))
    assert user.get(url).status_code == 403
    page = staff_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "berlin-nine" in html and html.count("data-next") == 5
    assert "09:00:00 CEST" in html or "09:00:00 CET" in html
    assert 'data-tick="enqueued"' in html and "(run now)" in html
    fragment = staff_client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="live")
    assert fragment.status_code == 200 and b"<html" not in fragment.content and b"berlin-nine" in fragment.content


@pytest.mark.django_db
def test_the_schedules_page_warns_of_a_tick_no_scheduler_fired(staff_client):
    make("late", now=T0)  # its next tick, in 2026-05, is long past by the real clock
    html = staff_client.get(reverse("dashboard:schedules")).content.decode()
    assert 'data-warning="overdue"' in html


@pytest.mark.django_db
def test_the_schedules_page_adds_a_schedule_and_refuses_a_bad_one_with_form_errors(staff_client):
    url = reverse("dashboard:schedules")
    bad = staff_client.post(url, {**DASHBOARD_FORM, "cron": "0 0 31 2 *", "payload": "{"})
    assert bad.status_code == 400
    html = bad.content.decode()
    assert 'data-field="payload"' in html
    bad = staff_client.post(url, {**DASHBOARD_FORM, "cron": "0 0 31 2 *"})
    assert bad.status_code == 400 and 'data-field="cron"' in bad.content.decode()
    assert not Schedule.objects.exists()
    assert staff_client.post(url, DASHBOARD_FORM).status_code == 302
    schedule = Schedule.objects.get(name="dash")
    edit = reverse("dashboard:schedule-edit", args=[schedule.pk])
    assert staff_client.post(edit, {**DASHBOARD_FORM, "timezone": "Not/AZone"}).status_code == 400
    assert staff_client.post(edit, {**DASHBOARD_FORM, "cron": "0 12 * * *"}).status_code == 302
    assert Schedule.objects.get(pk=schedule.pk).cron == "0 12 * * *"


@pytest.mark.django_db
def test_the_schedules_page_pauses_resumes_runs_and_removes(staff_client):
    schedule = make()
    action = lambda name: staff_client.post(reverse("dashboard:schedule-action", args=[schedule.pk, name]))  # noqa: E731
    assert action("pause").status_code == 302 and not Schedule.objects.get(pk=schedule.pk).enabled
    assert action("resume").status_code == 302 and Schedule.objects.get(pk=schedule.pk).enabled
    assert action("run").status_code == 302 and Job.objects.count() == 1
    assert action("explode").status_code == 404
    assert action("remove").status_code == 302 and not Schedule.objects.exists()
    plain = Client()
    plain.force_login(UserFactory(username="plain2"))
    assert plain.post(reverse("dashboard:schedule-action", args=[1, "run"])).status_code == 403


# --- in a worker ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_syncs_the_declared_schedules_at_start_up_and_its_leader_round_fires_due_ticks(settings):
    from django.db import connections
    from django.utils import timezone

    from jobs.worker import Worker

    settings.JOBS_SCHEDULES = {"declared": {"cron": "0 0 1 1 *", "type": "reverse_string", "payload": "d"}}
    due = make("due", interval_seconds=3600, now=timezone.now() - timedelta(seconds=3602))
    worker = Worker(burst=True, concurrency=2, poll_interval=0.1, install_signal_handlers=False)
    try:
        assert worker.run() == 0
    finally:
        worker.stop()
        for thread in threading.enumerate():
            if thread.name == "skipjack-listen":
                thread.join(timeout=5)
        connections.close_all()
        connection.close_pool()
    assert Schedule.objects.get(name="declared").source == ScheduleSource.SETTINGS
    (tick,) = ScheduleTick.objects.filter(schedule=due)
    assert tick.outcome == TickOutcome.ENQUEUED
    assert Job.objects.get(pk=tick.job_id).status == JobStatus.COMPLETED

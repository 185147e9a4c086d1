import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobs import selectors
from jobs.durations import parse_duration
from jobs.models import Job, JobStatus, Priority, Worker
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def statuses(*jobs) -> list[str]:
    return [Job.objects.get(pk=job.pk).status for job in jobs]


# --- durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        (" 1.5H ", timedelta(minutes=90)),
    ],
)
def test_parse_duration_reads_a_number_and_a_unit(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "3x", "h", "-5m", "1d2", "5 days", "999999999999d"])
def test_parse_duration_rejects_anything_else_with_a_reason(text):
    with pytest.raises(ValueError, match="(?i)duration"):
        parse_duration(text)


# --- requeue_dlq ----------------------------------------------------------------


def test_requeue_dlq_by_repeated_id_requeues_only_those_dead_jobs():
    a, b, c = JobFactory.create_batch(3, status=JobStatus.DEAD, attempts=4)

    out = run("requeue_dlq", "--id", str(a.pk), "--id", str(b.pk))

    assert out.strip() == f"Requeued 2 dead jobs: {a.pk}, {b.pk}."
    assert statuses(a, b, c) == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.DEAD]
    assert Job.objects.get(pk=a.pk).attempts == 0


def test_requeue_dlq_by_comma_separated_ids_leaves_a_listed_job_that_is_not_dead():
    dead = JobFactory(status=JobStatus.DEAD)
    completed = JobFactory(status=JobStatus.COMPLETED)

    out = run("requeue_dlq", f"--id={dead.pk}, {completed.pk}")

    assert out.strip() == f"Requeued 1 dead job: {dead.pk}."
    assert statuses(dead, completed) == [JobStatus.QUEUED, JobStatus.COMPLETED]


def test_requeue_dlq_by_type():
    failed = JobFactory(status=JobStatus.DEAD, type="fail", payload={})
    other = JobFactory(status=JobStatus.DEAD, type="reverse_string")

    out = run("requeue_dlq", "--type", "fail")

    assert f": {failed.pk}." in out
    assert statuses(failed, other) == [JobStatus.QUEUED, JobStatus.DEAD]


def test_requeue_dlq_by_queue():
    emails = JobFactory(status=JobStatus.DEAD, queue="emails")
    default = JobFactory(status=JobStatus.DEAD, queue="default")

    run("requeue_dlq", "--queue", "emails")

    assert statuses(emails, default) == [JobStatus.QUEUED, JobStatus.DEAD]


def test_requeue_dlq_older_than_takes_only_jobs_that_died_before_the_cutoff():
    old = JobFactory(status=JobStatus.DEAD, finished_at=timezone.now() - timedelta(days=3))
    recent = JobFactory(status=JobStatus.DEAD, finished_at=timezone.now() - timedelta(hours=1))

    out = run("requeue_dlq", "--older-than", "2d")

    assert out.strip() == f"Requeued 1 dead job: {old.pk}."
    assert statuses(old, recent) == [JobStatus.QUEUED, JobStatus.DEAD]


def test_requeue_dlq_all_requeues_every_dead_job_and_nothing_else():
    dead = JobFactory.create_batch(2, status=JobStatus.DEAD)
    others = [JobFactory(status=s) for s in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.RUNNING)]

    out = run("requeue_dlq", "--all")

    assert out.startswith("Requeued 2 dead jobs:")
    assert statuses(*dead) == [JobStatus.QUEUED] * 2
    assert statuses(*others) == [JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.RUNNING]


def test_requeue_dlq_limit_requeues_the_lowest_ids_first():
    a, b, c = JobFactory.create_batch(3, status=JobStatus.DEAD)

    out = run("requeue_dlq", "--all", "--limit", "2")

    assert out.strip() == f"Requeued 2 dead jobs: {a.pk}, {b.pk}."
    assert statuses(a, b, c) == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.DEAD]


def test_requeue_dlq_dry_run_lists_the_jobs_and_changes_nothing():
    a, b, c = JobFactory.create_batch(3, status=JobStatus.DEAD)

    out = run("requeue_dlq", "--all", "--limit", "2", "--dry-run")

    assert out.strip() == f"Would requeue 2 dead jobs: {a.pk}, {b.pk} (dry run: nothing changed)."
    assert statuses(a, b, c) == [JobStatus.DEAD] * 3


def test_requeue_dlq_reports_when_nothing_matched():
    JobFactory(status=JobStatus.DEAD, queue="default")

    assert run("requeue_dlq", "--queue", "nowhere").strip() == "Requeued 0 dead jobs."


def test_requeue_dlq_shortens_a_long_list_of_ids():
    JobFactory.create_batch(55, status=JobStatus.DEAD)

    out = run("requeue_dlq", "--all", "--dry-run")

    assert out.startswith("Would requeue 55 dead jobs:")
    assert "and 5 more" in out


def test_requeue_dlq_refuses_to_run_without_a_selector():
    dead = JobFactory(status=JobStatus.DEAD)

    with pytest.raises(CommandError, match="--all"):
        run("requeue_dlq")
    with pytest.raises(CommandError, match="--all"):
        run("requeue_dlq", "--limit", "5")

    assert statuses(dead) == [JobStatus.DEAD]


def test_requeue_dlq_refuses_all_combined_with_a_selector():
    dead = JobFactory(status=JobStatus.DEAD, type="reverse_string")

    with pytest.raises(CommandError, match="--all alone"):
        run("requeue_dlq", "--all", "--type", "fail")

    assert statuses(dead) == [JobStatus.DEAD]


@pytest.mark.parametrize("value", ["3x", "10", "ten days", "-1d"])
def test_requeue_dlq_rejects_a_bad_older_than(value):
    dead = JobFactory(status=JobStatus.DEAD, finished_at=timezone.now() - timedelta(days=30))

    with pytest.raises(CommandError, match="--older-than") as excinfo:
        run("requeue_dlq", f"--older-than={value}")

    assert "\n" not in str(excinfo.value)
    assert statuses(dead) == [JobStatus.DEAD]


@pytest.mark.parametrize("args", [["--id", "abc"], ["--id", "4,x"], ["--all", "--limit", "0"]])
def test_requeue_dlq_rejects_bad_ids_and_limits(args):
    with pytest.raises(CommandError):
        run("requeue_dlq", *args)


# --- enqueue --------------------------------------------------------------------


def test_enqueue_stores_the_job_and_prints_its_id_and_status():
    out = run("enqueue", "reverse_string", '{"text": "abc"}', "--priority", "high")

    job = Job.objects.get()
    assert (job.type, job.payload, job.priority, job.status) == (
        "reverse_string", {"text": "abc"}, Priority.HIGH, JobStatus.QUEUED,
    )
    assert f"job {job.pk} " in out
    assert "status queued" in out


def test_enqueue_with_delay_schedules_the_job_in_the_future():
    before = timezone.now()

    out = run("enqueue", "reverse_string", '{"text": "later"}', "--delay", "120", "--priority", "low")

    job = Job.objects.get()
    assert job.status == JobStatus.SCHEDULED
    assert job.priority == Priority.LOW
    assert job.run_at >= before + timedelta(seconds=119)
    assert "status scheduled, runs at" in out


def test_enqueue_passes_queue_retries_timeout_ttl_and_unique_key():
    run(
        "enqueue", "reverse_string", '{"text": "abc"}', "--queue", "emails", "--max-retries", "0",
        "--timeout", "2.5", "--ttl", "60", "--unique-key", "k-1",
    )

    job = Job.objects.get()
    assert (job.queue, job.max_retries, job.timeout, job.unique_key) == ("emails", 0, 2.5, "k-1")
    assert job.expires_at > job.created_at


def test_enqueue_with_a_taken_unique_key_returns_the_unfinished_job():
    first = run("enqueue", "reverse_string", "a", "--unique-key", "same")
    second = run("enqueue", "reverse_string", "b", "--unique-key", "same")

    job = Job.objects.get()
    assert f"job {job.pk} " in first and f"job {job.pk} " in second
    assert second.startswith("Already enqueued")


@pytest.mark.parametrize("payload", ["hello", "hello world"])
def test_enqueue_takes_a_bare_word_payload_as_a_string(payload):
    run("enqueue", "reverse_string", payload)

    assert Job.objects.get().payload == {"text": payload}


@pytest.mark.parametrize("payload", ['{"text": ', "[1, 2", '"unterminated'])
def test_enqueue_rejects_broken_json(payload):
    with pytest.raises(CommandError, match="not valid JSON"):
        run("enqueue", "reverse_string", payload)

    assert not Job.objects.exists()


def test_enqueue_rejects_an_unknown_type():
    with pytest.raises(CommandError, match="Unknown job type 'no_such_type'"):
        run("enqueue", "no_such_type", "{}")

    assert not Job.objects.exists()


def test_enqueue_rejects_an_invalid_payload_naming_the_field():
    with pytest.raises(CommandError, match="Invalid payload for reverse_string: text:") as excinfo:
        run("enqueue", "reverse_string", '{"text": 5}')

    assert "\n" not in str(excinfo.value)
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--priority", "urgent"], "Unknown priority"),
        (["--delay", "-1"], "delay"),
        (["--delay", "nan"], "delay"),
        (["--delay", "1e300"], "delay"),
        (["--max-retries", "-1"], "max_retries"),
        (["--timeout", "0"], "timeout"),
        (["--ttl", "-5"], "ttl"),
    ],
)
def test_enqueue_rejects_bad_options(option, message):
    with pytest.raises(CommandError, match=message):
        run("enqueue", "reverse_string", "hello", *option)

    assert not Job.objects.exists()


# --- queue_status ---------------------------------------------------------------


@pytest.fixture
def mixed_queue():
    JobFactory.create_batch(3, status=JobStatus.QUEUED)
    JobFactory(status=JobStatus.DEAD)
    JobFactory.create_batch(2, status=JobStatus.COMPLETED, queue="emails")
    JobFactory(status=JobStatus.RUNNING, queue="emails")
    Worker.objects.create(hostname="alive-box", pid=4242, queues=["emails"], concurrency=4, busy=1, processed=17)
    Worker.objects.create(
        hostname="stale-box", pid=1, queues=[], concurrency=2, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    Worker.objects.create(hostname="stopped-box", pid=2, queues=[], concurrency=2, stopped_at=timezone.now())


def test_queue_status_prints_counts_per_queue_and_status_and_live_workers(mixed_queue):
    out = run("queue_status")

    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[:4]}
    header = rows.pop("queue")
    assert dict(zip(header, map(int, rows["default"]), strict=True)) == {
        "queued": 3, "scheduled": 0, "claimed": 0, "running": 0, "retrying": 0, "completed": 0,
        "dead": 1, "cancelled": 0, "expired": 0, "total": 4,
    }
    assert dict(zip(header, map(int, rows["emails"]), strict=True))["completed"] == 2
    assert dict(zip(header, map(int, rows["all"]), strict=True))["total"] == 7
    assert "Live workers: 1" in out
    assert "alive-box:4242  queues emails  busy 1/4  running 0  claimed 0  processed 17" in out
    assert "stale-box" not in out and "stopped-box" not in out


def test_queue_status_json_holds_the_same_counts(mixed_queue):
    data = json.loads(run("queue_status", "--json"))

    assert data["statuses"]["queued"] == 3
    assert data["statuses"]["running"] == 1
    assert data["total"] == 7
    assert data["queues"]["emails"] == {**dict.fromkeys(JobStatus.values, 0), "completed": 2, "running": 1}
    assert [(w["hostname"], w["pid"], w["busy"]) for w in data["workers"]] == [("alive-box", 4242, 1)]


def test_queue_status_on_an_empty_queue_shows_zeros():
    out = run("queue_status")

    assert out.splitlines()[1].split() == ["all", *["0"] * (len(JobStatus.values) + 1)]
    assert "Live workers: 0" in out


def test_status_counts_match_the_per_queue_totals(mixed_queue):
    assert selectors.status_counts() == selectors.queue_overview()["statuses"]
    assert selectors.status_counts(per="queue") == selectors.queue_overview()["queues"]

"""Flow control in the claim: pause, queue and key limits, rates and fairness, on real PostgreSQL."""

import uuid
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from jobs import flow, queue, spec
from jobs.models import Job, JobStatus, KeyLimit, QueueControl, StartLog
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def claim_limited(limit=10, worker=None, **kwargs):
    return queue.claim_limited_jobs(worker_id=worker or uuid.uuid4(), limit=limit, **kwargs)


def claim_plain(limit=10, **kwargs):
    return queue.claim_jobs(worker_id=uuid.uuid4(), limit=limit, **kwargs)


def keyed(key, n=1, queue_name="default", **kwargs):
    return [JobFactory(concurrency_key=key, queue=queue_name, **kwargs) for _ in range(n)]


def finish(jobs):
    queue.record_outcomes([queue.Completion(job, None, 0.0, 0.0) for job in jobs], [])


# --- enqueue ---------------------------------------------------------------


def test_a_job_gets_its_key_from_enqueue_or_from_its_type_with_the_types_limit():
    given = queue.enqueue("reverse_string", {"text": "a"}, concurrency_key="customer:acme.com")
    derived = queue.enqueue("tenant_task", {"tenant": 42})
    none = queue.enqueue("tenant_task", {})
    rows = dict(Job.objects.values_list("pk", "concurrency_key"))
    assert rows == {given.pk: "customer:acme.com", derived.pk: "tenant:42", none.pk: None}
    assert Job.objects.get(pk=derived.pk).key_limit == 2
    assert Job.objects.get(pk=given.pk).key_limit is None


def test_enqueue_many_stores_each_jobs_own_key_in_one_statement():
    specs = spec.build_many("tenant_task", [{"tenant": 1}, {"tenant": 2}, {}, {"tenant": 1}])
    ids = queue.enqueue_many(specs)
    assert [Job.objects.get(pk=pk).concurrency_key for pk in ids] == ["tenant:1", "tenant:2", None, "tenant:1"]
    assert [Job.objects.get(pk=pk).key_limit for pk in ids] == [2, 2, None, 2]


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "semi;colon", "new\nline", 42])
def test_a_malformed_key_is_refused_and_nothing_is_stored(key):
    with pytest.raises(ValueError, match="concurrency key"):
        queue.enqueue("reverse_string", {"text": "a"}, concurrency_key=key)
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_enqueues_and_control_changes_wake_the_workers_with_what_changed():
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
        queue.enqueue("tenant_task", {"tenant": 7}, queue="tenants")
        queue.enqueue_many("tenant_task", [{"tenant": 1}, {}], queue="mixed")
        queue.enqueue("reverse_string", {"text": "a"}, queue="plain")
        queue.pause_queue("plain")
        notices = [note.payload for note in listener.notifies(timeout=1.0, stop_after=4)]
    assert notices == ["tenants:k", "mixed:k", "plain", queue.FLOW_CHANGED]


# --- keys ----------------------------------------------------------------


def test_the_plain_claim_leaves_keyed_jobs_to_the_limited_claim():
    jobs = keyed("tenant:1", 3)
    assert claim_plain() == []
    claimed = claim_limited()
    assert {j.id for j in claimed} == {j.id for j in jobs}  # no limit on this key: all of them


def test_a_keys_limit_holds_across_workers_and_frees_as_jobs_finish():
    keyed("tenant:1", 6, key_limit=2)
    first = claim_limited(worker=uuid.uuid4())
    second = claim_limited(worker=uuid.uuid4())
    assert len(first) == 2 and second == []
    finish(first[:1])
    third = claim_limited(worker=uuid.uuid4())
    assert len(third) == 1
    held = Job.objects.filter(status__in=["claimed", "running"], concurrency_key="tenant:1").count()
    assert held == 2


def test_a_claimed_job_that_waits_for_a_slot_counts_against_its_key():
    keyed("k", 4, key_limit=2)
    claimed = claim_limited(starting=0)
    assert [j.started for j in claimed] == [False, False]
    assert claim_limited() == []


def test_a_key_limit_row_overrides_the_types_limit_and_the_queues_default():
    keyed("big", 5, key_limit=1)
    keyed("other", 5)
    queue.set_queue_controls("default", key_concurrency=2)
    queue.set_key_limit("default", "big", concurrency=3)
    counts = Counter(j.queue + "/" + Job.objects.get(pk=j.id).concurrency_key for j in claim_limited(limit=50))
    assert counts == {"default/big": 3, "default/other": 2}


def test_keys_take_turns_so_a_busy_key_cannot_starve_the_others():
    keyed("busy", 50)
    quiet = keyed("quiet-1") + keyed("quiet-2")
    claimed = claim_limited(limit=3)
    assert {j.id for j in quiet} <= {j.id for j in claimed}
    assert len(claimed) == 3


def test_a_keys_rate_limits_its_starts_and_logs_them():
    queue.set_queue_controls("default", key_rate_limit=2, key_rate_period=30)
    keyed("customer:1", 5)
    keyed("customer:2", 1)
    claimed = claim_limited(limit=10)
    by_key = Counter(Job.objects.get(pk=j.id).concurrency_key for j in claimed)
    assert by_key == {"customer:1": 2, "customer:2": 1}
    assert all(j.started for j in claimed)  # a rate counts starts: nothing is claimed to wait
    assert StartLog.objects.filter(scope="k:default:customer:1").count() == 2
    finish(claimed)
    assert claim_limited(limit=10) == []  # the period has not passed


def test_a_rated_job_is_claimed_only_for_a_free_slot():
    queue.set_queue_controls("mail", rate_limit=100, rate_period=60)
    JobFactory.create_batch(5, queue="mail")
    assert claim_limited(starting=0) == []
    assert len(claim_limited(starting=2)) == 2
    assert StartLog.objects.filter(scope="q:mail").count() == 2


# --- queues --------------------------------------------------------------


def test_a_queues_global_limit_counts_every_workers_held_jobs():
    queue.set_queue_controls("video", concurrency=3)
    JobFactory.create_batch(10, queue="video")
    JobFactory.create_batch(2, queue="default")
    assert {j.queue for j in claim_plain()} == {"default"}  # the plain claim leaves the limited queue alone
    got = claim_limited(limit=2) + claim_limited(limit=10) + claim_limited(limit=10)
    assert len(got) == 3
    finish(got[:2])
    assert len(claim_limited(limit=10)) == 2


def test_a_queues_rate_limit_counts_starts_within_its_period():
    queue.set_queue_controls("emails", rate_limit=4, rate_period=60)
    JobFactory.create_batch(10, queue="emails")
    first = claim_limited(limit=3)
    finish(first)
    second = claim_limited(limit=10)
    assert (len(first), len(second)) == (3, 1)
    StartLog.objects.update(started_at=timezone.now() - timedelta(seconds=61))
    assert len(claim_limited(limit=10)) == 4  # a minute later there is room again


def test_a_paused_queue_accepts_jobs_and_neither_claim_takes_them_until_it_resumes():
    queue.pause_queue("reports")
    plain = queue.enqueue("reverse_string", {"text": "a"}, queue="reports")
    with_key = queue.enqueue("reverse_string", {"text": "a"}, queue="reports", concurrency_key="t:1")
    assert claim_plain() == [] and claim_limited() == []
    assert queue.flow_state().paused == {"reports"}
    queue.resume_queue("reports")
    assert {j.id for j in claim_plain() + claim_limited()} == {plain.pk, with_key.pk}


def test_flow_state_names_paused_and_limited_queues_and_waiting_keyed_jobs():
    assert queue.flow_state() == queue.FlowState()
    queue.pause_queue("a")
    queue.set_queue_controls("b", concurrency=1)
    queue.set_queue_controls("c", key_concurrency=1)  # a key default alone limits no unkeyed job
    keyed("k", queue_name="c")
    state = queue.flow_state()
    assert (state.paused, state.limited, state.keyed_waiting) == ({"a"}, {"b"}, True)
    assert state.limited_work(["a"]) is True  # keyed jobs may be anywhere
    assert queue.FlowState(limited=frozenset({"b"})).limited_work(["a"]) is False


def test_limited_claims_serve_only_the_workers_queues():
    keyed("k", queue_name="one")
    keyed("k", queue_name="two")
    assert {j.queue for j in claim_limited(queues=["two"])} == {"two"}


def test_a_started_log_older_than_every_period_is_pruned():
    queue.set_queue_controls("emails", rate_limit=1, rate_period=10)
    JobFactory(queue="emails")
    claim_limited()
    assert queue.prune_start_log() == 0
    StartLog.objects.update(started_at=timezone.now() - timedelta(seconds=11))
    assert queue.prune_start_log() == 1


# --- controls ------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"concurrency": -1}, "concurrency must be a whole number"),
    ({"concurrency": 2.5}, "concurrency must be a whole number"),
    ({"concurrency": True}, "concurrency must be a whole number"),
    ({"rate_period": 0}, "rate period must be a number of seconds"),
    ({"paused": "yes"}, "paused must be true or false"),
    ({"colour": 1}, "Unknown setting 'colour'"),
])
def test_a_bad_control_changes_nothing(changes, message):
    queue.set_queue_controls("emails", concurrency=5)
    with pytest.raises(ValueError, match=message):
        queue.set_queue_controls("emails", rate_limit=9, **changes)
    control = QueueControl.objects.get(name="emails")
    assert (control.concurrency, control.rate_limit) == (5, None)


def test_a_bad_queue_name_or_key_is_refused():
    with pytest.raises(ValueError, match="Invalid queue name"):
        queue.pause_queue("no spaces")
    with pytest.raises(ValueError, match="Invalid concurrency key"):
        queue.set_key_limit("default", "a b", concurrency=1)
    assert not QueueControl.objects.exists() and not KeyLimit.objects.exists()


def test_settings_make_missing_rows_and_never_overwrite_a_run_time_change(settings):
    settings.JOBS_QUEUES = {"emails": {"rate": "100/m"}, "video": {"concurrency": 4, "paused": True}}
    assert sorted(queue.apply_queue_settings()) == ["emails", "video"]
    emails = QueueControl.objects.get(name="emails")
    assert (emails.rate_limit, emails.rate_period, emails.paused) == (100, 60.0, False)
    queue.set_queue_controls("emails", rate_limit=5)  # an operator's change at run time
    assert queue.apply_queue_settings() == []  # the next deploy
    assert QueueControl.objects.get(name="emails").rate_limit == 5
    assert queue.apply_queue_settings(names=["emails"], overwrite=True) == ["emails"]  # `queues reset emails`
    assert QueueControl.objects.get(name="emails").rate_limit == 100
    assert QueueControl.objects.get(name="video").paused is True


@pytest.mark.parametrize("setting, message", [
    ({"q": {"rate": "lots"}}, "Invalid rate"),
    ({"q": {"concurrency": 0}}, "must be a whole number"),
    ({"q": {"speed": 1}}, "unknown options"),
    ({"bad name": {}}, "Invalid queue name"),
    ({"q": {"paused": 1}}, "must be True or False"),
])
def test_a_bad_jobs_queues_setting_is_a_system_check_error(settings, setting, message):
    from jobs.checks import check_queue_settings

    settings.JOBS_QUEUES = setting
    errors = check_queue_settings(None)
    assert len(errors) == 1 and message in errors[0].msg


@pytest.mark.parametrize("text, parsed", [
    ("100/m", (100, 60.0)), ("5/s", (5, 1.0)), ("10/30s", (10, 30.0)), ("1000/h", (1000, 3600.0)),
    ("2 / minute", (2, 60.0)), ("7/d", (7, 86400.0)), ("", None), (None, None),
])
def test_rates_parse_and_read_back(text, parsed):
    assert flow.parse_rate(text) == parsed
    if parsed:
        assert flow.parse_rate(flow.format_rate(*parsed)) == parsed


def test_a_claim_of_a_limited_queue_takes_turns_with_its_keys():
    queue.set_queue_controls("mixed", concurrency=4)
    JobFactory.create_batch(10, queue="mixed")
    keyed("a", 10, queue_name="mixed")
    claimed = claim_limited(limit=10)
    assert len(claimed) == 4
    assert Counter(Job.objects.get(pk=j.id).concurrency_key for j in claimed) == {None: 2, "a": 2}
    assert all(Job.objects.get(pk=j.id).status in (JobStatus.CLAIMED, JobStatus.RUNNING) for j in claimed)


# --- why is it waiting? ----------------------------------------------------


def live_worker(queues=()):
    return queue.register_worker(hostname="h", pid=1, queues=list(queues), concurrency=4)


def test_each_waiting_reason_is_given_for_a_job_in_that_situation():
    from jobs.waiting import reason_for, waiting_by_reason

    later = queue.enqueue("reverse_string", {"text": "a"}, delay=3600)
    assert reason_for(later).code == "scheduled" and reason_for(later).until == later.run_at
    orphan = queue.enqueue("reverse_string", {"text": "a"}, queue="nobody")
    live_worker(["default", "video", "emails", "reports"])
    assert reason_for(orphan).code == "no_worker"
    ready = queue.enqueue("reverse_string", {"text": "a"})
    assert reason_for(ready).code == "next_in_line"

    queue.pause_queue("reports")
    paused = queue.enqueue("reverse_string", {"text": "a"}, queue="reports")
    assert reason_for(paused).code == "paused"

    keyed("tenant:9", 3, key_limit=2)
    claim_limited()
    waiting_key = Job.objects.get(concurrency_key="tenant:9", status=JobStatus.QUEUED)
    reason = reason_for(waiting_key)
    assert reason.code == "key_limit" and "2 of 2 running" in reason.message and "tenant:9" in reason.message

    queue.set_queue_controls("video", concurrency=1)
    JobFactory.create_batch(2, queue="video")
    claim_limited(queues=["video"])
    video = Job.objects.get(queue="video", status=JobStatus.QUEUED)
    assert reason_for(video).code == "queue_limit" and "1 of 1" in reason_for(video).message

    queue.set_queue_controls("emails", rate_limit=1, rate_period=60)
    JobFactory.create_batch(2, queue="emails")
    (started,) = claim_limited(queues=["emails"])
    email = Job.objects.get(queue="emails", status=JobStatus.QUEUED)
    reason = reason_for(email)
    logged = StartLog.objects.get(scope="q:emails").started_at
    assert reason.code == "rate_limit" and reason.until == logged + timedelta(seconds=60)

    retried = queue.enqueue("reverse_string", {"text": "a"})
    (claimed,) = [j for j in claim_plain(limit=50, queues=["default"]) if j.id == retried.pk]
    queue.fail_job(claimed, error="boom")
    assert reason_for(Job.objects.get(pk=retried.pk)).code == "backoff"
    assert reason_for(Job.objects.get(pk=started.id)) is None  # it runs

    queue.enqueue("reverse_string", {"text": "a"})  # the plain claim above took the other ready ones
    counts, capped = waiting_by_reason()
    assert not capped
    assert counts == {"scheduled": 1, "backoff": 1, "paused": 1, "no_worker": 1, "key_limit": 1, "queue_limit": 1,
                      "rate_limit": 1, "next_in_line": 1}
    assert waiting_by_reason(cap=3)[1] is True

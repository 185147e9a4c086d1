"""The limited claim's fast path (claim_keyed_jobs) and the worker's choice between it and the full claim."""

import threading
import uuid
from collections import Counter

import psycopg
import pytest
from django.db import connection

from jobs import queue
from jobs.models import Job, Priority
from jobs.queue.claim import LIMITED_CLAIM_LOCK
from jobs.worker.producer import FULL_LIMITED_CLAIM_INTERVAL, Producer
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def fast(limit=10, worker=None, **kwargs):
    """Run the fast path; return the jobs it claimed."""
    claimed, _ = queue.claim_keyed_jobs(worker_id=worker or uuid.uuid4(), limit=limit, **kwargs)
    return claimed


def full(limit=10, worker=None, **kwargs):
    return queue.claim_limited_jobs(worker_id=worker or uuid.uuid4(), limit=limit, **kwargs)


def keyed(key, n=1, queue_name="default", **kwargs):
    return [JobFactory(concurrency_key=key, queue=queue_name, **kwargs) for _ in range(n)]


def finish(jobs):
    queue.record_outcomes([queue.Completion(job, None, 0.0, 0.0) for job in jobs], [])


def key_of(job):
    return Job.objects.get(pk=job.id).concurrency_key


# --- the rules both claims keep -------------------------------------------


@pytest.fixture(params=["fast", "full"])
def claim(request):
    return fast if request.param == "fast" else full


def test_a_keys_limit_holds_across_workers_and_frees_as_jobs_finish(claim):
    keyed("tenant:1", 6, key_limit=2)
    first = claim(worker=uuid.uuid4())
    second = claim(worker=uuid.uuid4())
    assert len(first) == 2 and second == []
    finish(first[:1])
    assert len(claim(worker=uuid.uuid4())) == 1


def test_a_claimed_job_that_waits_for_a_slot_counts_against_its_key(claim):
    keyed("k", 4, key_limit=2)
    claimed = claim(starting=0)
    assert [j.started for j in claimed] == [False, False]
    assert claim() == []


def test_a_key_limit_row_overrides_the_types_limit_and_the_queues_default(claim):
    keyed("big", 5, key_limit=1)
    keyed("other", 5)
    queue.set_queue_controls("default", key_concurrency=2)
    queue.set_key_limit("default", "big", concurrency=3)
    assert Counter(key_of(j) for j in claim(limit=50)) == {"big": 3, "other": 2}


def test_an_owners_key_shares_one_room_across_queues(claim, user):
    keyed(f"owner:{user.pk}", 3, queue_name="default", key_limit=2, owner=user)
    keyed(f"owner:{user.pk}", 3, queue_name="mail", key_limit=2, owner=user)
    assert len(claim(limit=1, queues=["mail"])) == 1
    # One of two held in "mail" leaves one for both queues, not two more in "default".
    assert len(claim(limit=50)) == 1


def test_the_first_ones_start_and_the_rest_wait_for_a_slot(claim):
    keyed("k", 5)
    claimed = claim(limit=5, starting=2)
    assert [j.started for j in claimed] == [True, True, False, False, False]


# --- what only the fast path does ---------------------------------------------


def test_the_fast_path_takes_jobs_in_claim_order_while_their_keys_have_room():
    low = keyed("a", 2, key_limit=1, priority=Priority.LOW)
    a = keyed("a", 3, key_limit=1)
    b = keyed("b", 3, key_limit=2)
    high = keyed("c", 1, priority=Priority.HIGH)
    higher = keyed("d", 1, priority=77)
    claimed = fast(limit=10)
    # Highest priority first, then in due order; each key only while it has room.
    assert [j.id for j in claimed] == [higher[0].id, high[0].id, a[0].id, b[0].id, b[1].id]
    assert low[0].id not in {j.id for j in claimed}


def test_the_fast_path_leaves_rated_keys_and_controlled_queues_to_the_full_claim():
    rated = keyed("rated", 2)
    queue.set_key_limit("default", "rated", rate_limit=10, rate_period=60)
    paused = keyed("p", 2, queue_name="reports")
    limited = keyed("l", 2, queue_name="video")
    queue.pause_queue("reports")
    queue.set_queue_controls("video", concurrency=1)
    plain = keyed("plain", 2)
    # A worker that has not heard of the pause or the limit yet (controlled=[]) is held to them too.
    assert {j.id for j in fast(limit=50, controlled=[])} == {j.id for j in plain}
    taken = {j.id for j in full(limit=50)}
    assert {j.id for j in rated} <= taken and len(taken & {j.id for j in limited}) == 1
    assert not taken & {j.id for j in paused}


def test_the_fast_path_says_how_many_keys_its_window_read():
    keyed("busy", 30, key_limit=2)
    keyed("quiet", 1)
    claimed, keys_read = queue.claim_keyed_jobs(worker_id=uuid.uuid4(), limit=5, window=20)
    # The window holds only one key, at its limit after 2: the quiet key was not read.
    assert (len(claimed), keys_read) == (2, 1)
    assert queue.flow_state().waiting_keys == 2
    claimed, keys_read = queue.claim_keyed_jobs(worker_id=uuid.uuid4(), limit=5, window=100)
    assert ([key_of(j) for j in claimed], keys_read) == (["quiet"], 2)
    # Nothing left with room: no job, and still the count.
    assert queue.claim_keyed_jobs(worker_id=uuid.uuid4(), limit=5, window=100) == ([], 1)


def test_the_fast_path_waits_for_the_turn_of_a_full_claim_or_gives_way():
    keyed("k", 3)
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", [LIMITED_CLAIM_LOCK])
        assert queue.claim_keyed_jobs(worker_id=uuid.uuid4(), limit=5, wait=False) is None
        released = threading.Timer(0.3, other.rollback)
        released.start()
        claimed, _ = queue.claim_keyed_jobs(worker_id=uuid.uuid4(), limit=5, wait=True)
        released.join()
    assert len(claimed) == 3


# --- the worker's choice ---------------------------------------------------


def producer(capacity=5):
    made = Producer(queues=None, capacity=capacity, poll_interval=1.0, lease_seconds=60,
                    wake=threading.Event(), stopping=threading.Event())
    made.worker_id = uuid.uuid4()
    made.refresh_flow(0.0)
    return made


def test_a_worker_falls_back_to_the_full_claim_when_its_window_holds_only_keys_at_their_limits(monkeypatch):
    busy = keyed("busy", 40, key_limit=2)
    quiet = keyed("quiet", 1)
    used = []
    for name in ("claim_keyed_jobs", "claim_limited_jobs"):
        real = getattr(queue, name)
        monkeypatch.setattr(queue, name, lambda *a, _real=real, _name=name, **kw: used.append(_name) or _real(*a, **kw))
    worker = producer(capacity=5)
    worker.next_full_limited = FULL_LIMITED_CLAIM_INTERVAL  # the first full claim has run
    got = worker.claim(held=0, starting=5, now=0.1)
    # The fast path's window (4 x 5 jobs) holds only the busy key: 2 of it, and a full claim is due.
    assert used == ["claim_keyed_jobs"] and [j.id for j in got] == [busy[0].id, busy[1].id]
    got = worker.claim(held=2, starting=3, now=0.2)
    assert used == ["claim_keyed_jobs", "claim_limited_jobs"] and [j.id for j in got] == [quiet[0].id]
    # The fast path is not tried again for a while; the full claim serves meanwhile.
    worker.claim(held=3, starting=2, now=0.3)
    assert used[-1] == "claim_limited_jobs"
    worker.claim(held=3, starting=2, now=0.1 + FULL_LIMITED_CLAIM_INTERVAL + 0.01)
    assert used[-1] == "claim_keyed_jobs"


def test_a_worker_uses_the_full_claim_where_rates_or_queue_limits_apply(monkeypatch):
    keyed("k", 3)
    queue.set_key_limit("default", "other", rate_limit=5, rate_period=60)
    used = []
    real = queue.claim_keyed_jobs
    monkeypatch.setattr(queue, "claim_keyed_jobs", lambda *a, **kw: used.append("fast") or real(*a, **kw))
    worker = producer()
    worker.next_full_limited = FULL_LIMITED_CLAIM_INTERVAL
    assert len(worker.claim(held=0, starting=5, now=0.1)) == 3
    assert used == []

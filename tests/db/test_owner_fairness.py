"""Per-owner fairness: one user's jobs cannot take every worker slot while other users' jobs wait.

Jobs are submitted through the REST API, as an attacker with free accounts
would, and claimed the way a worker's producer claims: the limited claim of
flow control, then the plain claim for what is left of its capacity.
"""

import json
import threading
import uuid
from collections import Counter

import psycopg
import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from jobs import queue
from jobs.models import Job
from jobs.registry import job_handler
from tests.factories import JobFactory, UserFactory


@pytest.fixture(autouse=True)
def room_to_submit(settings):
    """Limits high enough that only the running limit is in play; throttles from zero."""
    settings.JOBS_USER_MAX_ACTIVE = 100
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 1000
    settings.JOBS_USER_MAX_RUNNING = 2
    cache.clear()


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def submit(user, count: int, text: str = "x", queue_name: str | None = None) -> list[int]:
    """Submit `count` jobs as `user` through the API; return their ids in submission order."""
    client = client_for(user)
    ids = []
    for n in range(count):
        body = {"type": "reverse_string", "payload": f"{text}{n}"}
        if queue_name is not None:
            body["queue"] = queue_name
        response = client.post("/api/jobs/", json.dumps(body), content_type="application/json")
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    return ids


def claim_round(worker: uuid.UUID, capacity: int) -> list[queue.ClaimedJob]:
    """Claim what one worker with `capacity` free slots claims (its Producer): limited jobs first, then plain ones."""
    claimed = queue.claim_limited_jobs(worker_id=worker, limit=capacity)
    if len(claimed) < capacity:
        claimed += queue.claim_jobs(worker_id=worker, limit=capacity - len(claimed))
    return claimed


def held_per_owner() -> Counter:
    return Counter(Job.objects.filter(status__in=["claimed", "running"]).values_list("owner__username", flat=True))


@pytest.mark.django_db
def test_one_owners_jobs_hold_at_most_their_limit_while_another_owners_job_waits():
    """With 5 slots on two workers, a user with 6 jobs holds 2 of them, and a later user's job gets a slot."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    submit(alice, 6)
    (bobs_job,) = submit(bob, 1)
    claimed = claim_round(uuid.uuid4(), 2) + claim_round(uuid.uuid4(), 3)
    assert held_per_owner() == {"alice": 2, "bob": 1}
    assert bobs_job in {job.id for job in claimed}
    # One of alice's jobs finishes: the next claim gives her one more, never a third.
    alices = next(job for job in claimed if job.owner_id == alice.pk)
    assert queue.complete_job(alices, "done")
    claim_round(uuid.uuid4(), 10)
    assert held_per_owner() == {"alice": 2, "bob": 1}


@pytest.mark.django_db
def test_an_owners_jobs_spread_over_several_queues_hold_the_limit_in_all_of_them_together():
    """A user who names three queues still holds 2 jobs at once, not 2 in each; workers of one queue count the rest."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    for name in ("q1", "q2", "q3"):
        submit(alice, 2, queue_name=name)
    submit(bob, 1, queue_name="q3")
    claim_round(uuid.uuid4(), 10)
    assert held_per_owner() == {"alice": 2, "bob": 1}
    # A worker of q3 alone finds alice's jobs in q1 and q2 held already.
    assert queue.claim_limited_jobs(worker_id=uuid.uuid4(), limit=10, queues=["q3"]) == []
    # And her waiting jobs say so, in whichever queue they wait.
    queue.register_worker(hostname="h", pid=1, queues=[], concurrency=10)
    waiting = Job.objects.filter(owner=alice, status="queued")
    assert waiting.count() == 4
    for job_id in waiting.values_list("pk", flat=True):
        reason = client_for(alice).get(f"/api/jobs/{job_id}/").json()["waiting"]
        assert reason["code"] == "key_limit"
        assert reason["message"] == f"Concurrency key owner:{alice.pk} is at its limit: 2 of 2 running."


@pytest.mark.django_db
def test_waiting_owners_take_turns_instead_of_the_oldest_jobs_going_first():
    """A claim of 3 slots takes one job of each of three users, though one user's jobs are all older."""
    alice, bob, carol = (UserFactory(username=name) for name in ("alice", "bob", "carol"))
    submit(alice, 5)
    submit(bob, 1)
    submit(carol, 1)
    claim_round(uuid.uuid4(), 3)
    assert held_per_owner() == {"alice": 1, "bob": 1, "carol": 1}


@pytest.mark.django_db
def test_jobs_brought_back_by_a_retry_or_a_requeue_share_the_limit():
    """Dead jobs from before the limit was set, retried or requeued through the API, are held 2 at a time."""
    alice = UserFactory(username="alice")
    dead = [JobFactory(owner=alice, status="dead", attempts=4).pk for _ in range(4)]
    client = client_for(alice)
    assert client.post(f"/api/jobs/{dead[0]}/retry/").status_code == 200
    response = client.post("/api/dlq/requeue/", json.dumps({"job_ids": dead[1:]}), content_type="application/json")
    assert response.status_code == 200, response.content
    assert sorted(response.json()["job_ids"]) == dead[1:]
    claim_round(uuid.uuid4(), 4)
    assert held_per_owner() == {"alice": 2}


@pytest.mark.django_db
def test_a_job_whose_type_gives_it_a_key_keeps_that_key_and_its_limit(settings):
    """A type's key limit, which spares the service behind the key, holds for a user's jobs too; a retry keeps it."""
    settings.JOBS_USER_MAX_RUNNING = 5
    alice = UserFactory(username="alice")
    client = client_for(alice)
    for n in range(4):
        response = client.post("/api/jobs/", json.dumps({"type": "tenant_task", "payload": {"tenant": "acme", "n": n}}),
                               content_type="application/json")
        assert response.status_code == 201, response.content
    dead = JobFactory(owner=alice, type="tenant_task", payload={"tenant": "acme"}, status="dead",
                      concurrency_key="tenant:acme", key_limit=2)
    assert client.post(f"/api/jobs/{dead.pk}/retry/").status_code == 200
    assert set(Job.objects.values_list("concurrency_key", "key_limit")) == {("tenant:acme", 2)}
    claim_round(uuid.uuid4(), 10)
    assert held_per_owner() == {"alice": 2}


@pytest.mark.django_db
def test_staff_jobs_are_not_held_to_the_limit():
    """Every job of a staff member is claimed at once when the slots are free."""
    staff = UserFactory(username="staff", is_staff=True)
    submit(staff, 5)
    claim_round(uuid.uuid4(), 5)
    assert held_per_owner() == {"staff": 5}


@pytest.mark.django_db
def test_without_a_running_limit_an_owner_may_fill_the_slots(settings):
    """The limit is the operator's choice: unset, one user's jobs take every free slot."""
    settings.JOBS_USER_MAX_RUNNING = None
    alice = UserFactory(username="alice")
    submit(alice, 5)
    claim_round(uuid.uuid4(), 5)
    assert held_per_owner() == {"alice": 5}


@pytest.mark.django_db(transaction=True)
def test_workers_claiming_at_once_never_hold_more_than_the_owners_limit(settings):
    """Four workers claiming in parallel, each on its own connection, together hold at most 3 of one user's jobs."""
    settings.JOBS_USER_MAX_RUNNING = 3
    alice = UserFactory(username="alice")
    submit(alice, 20)
    start = threading.Barrier(4)
    seen = []
    errors = []

    def worker():
        try:
            start.wait(timeout=10)
            for _ in range(5):
                claim_round(uuid.uuid4(), 4)
                seen.append(sum(held_per_owner().values()))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert held_per_owner() == {"alice": 3}
    assert max(seen) == 3


@pytest.mark.django_db(transaction=True)
def test_a_retry_or_requeue_of_keyed_jobs_wakes_the_workers_for_the_limited_claim():
    """The NOTIFY of a job brought back names its queue with ":k", as an enqueue does, so no worker waits a poll."""
    alice = UserFactory(username="alice")
    retried, requeued = (JobFactory(owner=alice, status="dead", attempts=4, queue=name).pk for name in ("r", "q"))
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
        client = client_for(alice)
        assert client.post(f"/api/jobs/{retried}/retry/").status_code == 200
        response = client.post("/api/dlq/requeue/", json.dumps({"job_ids": [requeued]}), content_type="application/json")
        assert response.status_code == 200, response.content
        notices = [note.payload for note in listener.notifies(timeout=1.0, stop_after=2)]
    assert notices == ["r" + queue.KEYED_SUFFIX, "q" + queue.KEYED_SUFFIX]


@job_handler("keyed_by_payload", concurrency_key=lambda payload: payload.get("key"), key_concurrency=10)
def keyed_by_payload(job):
    """A type that takes its concurrency key from the payload as it is: a key its submitter chose."""
    return job.payload.get("key")


@pytest.mark.django_db
def test_a_key_made_of_the_payload_cannot_take_another_users_slots():
    """A user whose job's type makes "owner:<bob>" of the payload gets their own owner key, not a share of bob's."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    submit(bob, 2)
    response = client_for(alice).post("/api/jobs/", content_type="application/json", data=json.dumps(
        {"type": "keyed_by_payload", "payload": {"key": f"owner:{bob.pk}"}}))
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.concurrency_key, job.key_limit) == (f"owner:{alice.pk}", 2)
    claim_round(uuid.uuid4(), 10)
    assert held_per_owner() == {"alice": 1, "bob": 2}

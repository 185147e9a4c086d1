"""The REST API: every route's success and error paths, isolation between users, limits."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from jobs.models import Job, JobStatus, Priority, Worker
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_throttles():
    """Throttle counters live in the shared Redis cache; start each test from zero."""
    cache.clear()


def rejections(kind: str) -> int:
    """Return the shared count of requests refused by the rate limit `kind`."""
    from jobs.metrics import RATE_LIMIT_KEY, _redis

    return int(_redis().hget(RATE_LIMIT_KEY, kind) or 0)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def bob():
    return UserFactory(username="bob")


@pytest.fixture
def api(alice):
    return client_for(alice)


def post_json(client, url, body, **extra):
    return client.post(url, json.dumps(body), content_type="application/json", **extra)


# --- accounts -------------------------------------------------------------------


def test_register_creates_an_account():
    """Create a user from username, email and password; answer 202 with a message that echoes none of them."""
    response = post_json(APIClient(), "/api/auth/register/", {"username": "carol", "email": "c@example.com", "password": "a-long-passphrase-9"})
    assert response.status_code == 202
    assert set(response.json()) == {"detail"}
    assert get_user_model().objects.get(username="carol").check_password("a-long-passphrase-9")
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"username": "carol", "email": "c@example.com", "password": "123"}, "password"),
        ({"username": "carol", "email": "c@example.com", "password": "password123"}, "password"),
        ({"username": "carol", "email": "not-an-email", "password": "a-long-passphrase-9"}, "email"),
        ({"username": "a b", "email": "c@example.com", "password": "a-long-passphrase-9"}, "username"),
        ({"email": "c@example.com", "password": "a-long-passphrase-9"}, "username"),
    ],
)
def test_register_refuses_bad_input_per_field(alice, body, field):
    """Answer 400 with the offending field named, and create nobody."""
    response = post_json(APIClient(), "/api/auth/register/", body)
    assert response.status_code == 400
    assert field in response.json()
    assert not type(alice).objects.filter(username="carol").exists()


@pytest.mark.parametrize("login", ["alice", "alice@example.com"])
def test_token_accepts_username_or_email(alice, login):
    response = post_json(APIClient(), "/api/auth/token/", {"username": login, "password": "correct-horse-battery"})
    assert response.status_code == 200
    tokens = response.json()
    access = AccessToken(tokens["access"])
    assert access["user_id"] == str(alice.pk) or access["user_id"] == alice.pk
    assert access["exp"] - access["iat"] <= 300, "access tokens live 5 minutes at most"


def test_token_refuses_a_wrong_password(alice):
    response = post_json(APIClient(), "/api/auth/token/", {"username": "alice", "password": "nope"})
    assert response.status_code == 401


def test_refresh_rotates_and_blacklists_the_used_token(alice):
    """Return a new pair on refresh; the refresh token already used is refused."""
    tokens = post_json(APIClient(), "/api/auth/token/", {"username": "alice", "password": "correct-horse-battery"}).json()
    first = post_json(APIClient(), "/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert first.status_code == 200
    assert set(first.json()) == {"access", "refresh"}
    assert first.json()["refresh"] != tokens["refresh"]
    again = post_json(APIClient(), "/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert again.status_code == 401
    newer = post_json(APIClient(), "/api/auth/token/refresh/", {"refresh": first.json()["refresh"]})
    assert newer.status_code == 200


def test_login_attempts_are_throttled(alice):
    """Refuse the 11th attempt on one account within a minute with 429 and Retry-After."""
    client = APIClient()
    codes = [
        post_json(client, "/api/auth/token/", {"username": "alice", "password": f"wrong{n}"}).status_code
        for n in range(11)
    ]
    assert codes[:10] == [401] * 10
    assert codes[10] == 429
    limited = post_json(client, "/api/auth/token/", {"username": "alice", "password": "correct-horse-battery"})
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert rejections("login") == 2


def test_api_requires_a_token():
    assert APIClient().get("/api/jobs/").status_code == 401
    garbage = APIClient()
    garbage.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert garbage.get("/api/jobs/").status_code == 401


# --- submitting ---------------------------------------------------------------------


def test_create_job_returns_it(api, alice):
    response = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": {"text": "hello world"}, "priority": "low"})
    assert response.status_code == 201
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert job.owner == alice and job.priority == Priority.LOW
    assert body["status"] == "queued" and body["priority"] == "low" and body["history"] == []
    for field in ("id", "type", "payload", "status", "priority", "queue", "attempts", "max_retries", "run_at",
                  "result", "error", "progress", "created_at", "started_at", "finished_at", "trace_id"):
        assert field in body


def test_create_accepts_bare_values_and_options(api):
    response = post_json(api, "/api/jobs/", {"type": "fibonacci_calc", "payload": 10, "queue": "math", "max_retries": 1,
                                             "timeout": 5, "delay": 60, "ttl": 3600, "unique_key": "fib-10"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["payload"] == {"n": 10} and body["status"] == "scheduled" and body["queue"] == "math"
    job = Job.objects.get(pk=body["id"])
    assert (job.max_retries, job.timeout) == (1, 5)
    assert job.expires_at > timezone.now() + timedelta(minutes=50)
    run_at = (timezone.now() + timedelta(hours=1)).isoformat()
    later = post_json(api, "/api/jobs/", {"type": "uppercase_text", "payload": "x", "run_at": run_at})
    assert later.json()["status"] == "scheduled"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "no_such_type", "payload": {}}, "type"),
        ({"type": "reverse_string", "payload": {"text": 42}}, "payload"),
        ({"type": "reverse_string", "payload": {}}, "payload"),
        ({"type": "fibonacci_calc", "payload": {"n": 10**9}}, "payload"),
        ({"type": "reverse_string", "payload": "x", "priority": "urgent"}, "priority"),
        ({"type": "reverse_string", "payload": "x", "max_retries": -1}, "max_retries"),
        ({"type": "reverse_string", "payload": "x", "timeout": 0}, "timeout"),
        ({"type": "reverse_string", "payload": "x", "queue": "bad queue!"}, "queue"),
        ({"type": "reverse_string", "payload": "x", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay"),
        ({"type": "reverse_string", "payload": "x", "run_at": "tomorrow"}, "run_at"),
        ({"type": "run_command", "payload": {"argv": ["ls"]}}, "type"),
        ({"payload": "x"}, "type"),
    ],
)
def test_create_refuses_bad_input_per_field(api, body, field):
    """Answer 400 naming the field, and create no job."""
    response = post_json(api, "/api/jobs/", body)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"type": "reverse_string", "payload": "x", "priority": "high"},
         {"priority": ["Only staff may submit high-priority jobs; use normal or low."]}),
        ({"type": "reverse_string", "payload": "x", "timeout": 3600}, {"timeout": ["Must be at most 300 seconds."]}),
        ({"type": "sleep", "payload": 3600},
         {"payload": {"seconds": ["Must be less than 300 seconds, the longest one attempt of your jobs may run."]}}),
        ({"type": "process_video", "payload": {"duration": 300}},
         {"payload": {"duration": ["Must be less than 300 seconds, the longest one attempt of your jobs may run."]}}),
    ],
)
def test_what_only_staff_may_ask_for_is_refused_per_field(api, body, errors):
    """Refuse high priority, a timeout past the users' cap, and a payload that would run past it; staff may."""
    response = post_json(api, "/api/jobs/", body)
    assert response.status_code == 400, response.content
    assert response.json() == errors
    assert Job.objects.count() == 0
    assert post_json(client_for(UserFactory(is_staff=True)), "/api/jobs/", body).status_code == 201


def test_a_users_job_runs_at_most_the_users_timeout(api, settings):
    """Give a type whose own timeout is longer the users' cap, and keep a shorter one asked for."""
    settings.JOBS_USER_MAX_ACTIVE = 100
    settings.JOBS_USER_MAX_TIMEOUT = 120
    sleep = post_json(api, "/api/jobs/", {"type": "sleep", "payload": 119.5}).json()
    video = post_json(api, "/api/jobs/", {"type": "process_video", "payload": {}}).json()
    short = post_json(api, "/api/jobs/", {"type": "sleep", "payload": 5, "timeout": 1}).json()
    text = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "x"}).json()
    assert (sleep["timeout"], video["timeout"], short["timeout"], text["timeout"]) == (120, 120, 1, 120)
    settings.JOBS_USER_MAX_TIMEOUT = 300
    within = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "x"}).json()
    assert within["timeout"] is None, "a type whose timeout (the default, 300 s) is within the cap keeps it"
    staff = post_json(client_for(UserFactory(is_staff=True)), "/api/jobs/", {"type": "sleep", "payload": 3600}).json()
    assert staff["timeout"] is None


def test_a_run_at_in_the_past_counts_as_now_for_users(api, alice):
    """Queue a user's job backdated to 1970 behind the jobs already waiting; staff may backdate."""
    before = timezone.now()
    waiting = JobFactory(owner=UserFactory(), run_at=before - timedelta(minutes=5))
    body = {"type": "reverse_string", "payload": "x", "run_at": "1970-01-01T00:00:00Z"}
    response = post_json(api, "/api/jobs/", body)
    assert response.status_code == 201
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.QUEUED and job.run_at >= before > waiting.run_at
    staff = post_json(client_for(UserFactory(is_staff=True)), "/api/jobs/", body).json()
    assert staff["run_at"].startswith("1970-01-01")


@pytest.mark.parametrize("field, value", [("status", "completed"), ("attempts", 9), ("owner", 1), ("lease_token", "x"), ("result", "forged")])
def test_mass_assignment_is_refused(api, field, value):
    """Refuse fields the server owns instead of storing them."""
    response = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "x", field: value})
    assert response.status_code == 400
    assert response.json()[field] == ["This field cannot be set."]
    assert Job.objects.count() == 0


def test_malformed_and_deeply_nested_json_are_400_not_500(api):
    assert api.post("/api/jobs/", "{not json", content_type="application/json").status_code == 400
    bomb = "[" * 30_000 + "]" * 30_000  # under the size limit, far past the parser's recursion limit
    assert api.post("/api/jobs/", bomb, content_type="application/json").status_code == 400
    nested = {"text": "x"}
    for _ in range(60):
        nested = {"n": nested}
    response = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": nested})
    assert response.status_code == 400 and "payload" in response.json()
    assert api.post("/api/jobs/", "[1, 2]", content_type="application/json").status_code == 400
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "body, errors",
    [
        (r'{"type": "reverse_string", "payload": {"text": "a\u0000b"}}',
         {"payload": {"text": ["Must not contain NUL characters."]}}),
        (r'{"type": "reverse_string", "payload": {"text": "\ud800"}}',
         {"payload": {"text": ["Must not contain the lone surrogate U+D800."]}}),
        (r'{"type": "reverse_string", "payload": "\u0000"}', {"payload": {"payload": ["Must not contain NUL characters."]}}),
        (r'{"type": "record_effect", "payload": {"\ud800": 1}}',
         {"payload": {"payload": ["Field names must not contain the lone surrogate U+D800."]}}),
        (r'{"type": "reverse_string", "payload": "x", "queue": "a\u0000b"}', "queue"),
        (r'{"type": "reverse_string", "payload": "x", "unique_key": "a\u0000b"}', "unique_key"),
        (r'{"type": "reverse_string", "payload": "x", "unique_key": "\udfff"}', "unique_key"),
        (r'{"type": "reverse_string", "payload": "x", "priority": "\ud800"}', "priority"),
        (r'{"type": "reverse_string", "payload": "x", "\ud800": 1}', {"\\ud800": ["This field cannot be set."]}),
    ],
)
def test_nul_and_lone_surrogates_are_400_per_field_not_500(api, body, errors):
    """Answer text PostgreSQL cannot store with 400 and the field that holds it, and create nothing."""
    response = api.post("/api/jobs/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    if isinstance(errors, str):
        assert list(response.json()) == [errors]
    else:
        assert response.json() == errors
    assert Job.objects.count() == 0


def test_an_idempotency_key_with_nul_is_400(api):
    response = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "x"}, HTTP_IDEMPOTENCY_KEY="a\x00b")
    assert response.status_code == 400
    assert response.json() == {"Idempotency-Key": ["Must not contain NUL characters."]}
    assert Job.objects.count() == 0


@pytest.mark.parametrize("accept", ["LQ|", "text/html", "application/xml;q=0.9", "*/*"])
def test_any_accept_header_is_answered_in_json(api, accept):
    response = api.get("/api/jobs/", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["count"] == 0


@pytest.mark.parametrize("length", ["@C@HQ-Z(f", "-1", "1e3", "\u0661"])
def test_a_malformed_content_length_is_400_not_500(api, length):
    response = api.get("/api/jobs/", HTTP_CONTENT_LENGTH=length)
    assert response.status_code == 400
    assert response.json() == {"detail": "Malformed Content-Length header."}


def test_payload_size_limit(api, settings):
    """Refuse a payload over the limit with 400, and a body far over it with 413."""
    settings.JOBS_MAX_PAYLOAD_BYTES = 2048
    over = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": {"text": "x" * 3000}})
    assert over.status_code == 400 and "payload" in over.json()
    huge = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": {"text": "x" * 100_000}})
    assert huge.status_code == 413
    assert Job.objects.count() == 0


def test_idempotency_key_makes_retries_safe(api):
    """Return the first job for a repeated request; refuse the key for a different request."""
    body = {"type": "reverse_string", "payload": "hello"}
    first = post_json(api, "/api/jobs/", body, HTTP_IDEMPOTENCY_KEY="order-1")
    again = post_json(api, "/api/jobs/", body, HTTP_IDEMPOTENCY_KEY="order-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "bye"}, HTTP_IDEMPOTENCY_KEY="order-1")
    assert other.status_code == 422
    assert Job.objects.count() == 1


def test_idempotent_replay_is_allowed_past_the_limits(api, settings):
    settings.JOBS_USER_MAX_ACTIVE = 1
    body = {"type": "reverse_string", "payload": "hello"}
    assert post_json(api, "/api/jobs/", body, HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    assert post_json(api, "/api/jobs/", body).status_code == 429
    assert post_json(api, "/api/jobs/", body, HTTP_IDEMPOTENCY_KEY="k").status_code == 200


# --- limits -----------------------------------------------------------------------


def test_eleventh_create_in_a_minute_is_429_with_retry_after(api, settings):
    settings.JOBS_USER_MAX_ACTIVE = 100
    codes = [post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": f"n{n}"}).status_code for n in range(10)]
    assert codes == [201] * 10
    response = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "eleven"})
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.json()["retry_after"] == retry_after
    assert Job.objects.count() == 10
    assert rejections("submissions_per_minute") == 1


def test_window_slides_after_a_minute(api, alice, settings):
    """Count only the last minute's submissions."""
    JobFactory.create_batch(10, owner=alice, status=JobStatus.COMPLETED)
    Job.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    assert post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "x"}).status_code == 201


def test_sixth_active_job_is_refused(api, alice):
    JobFactory.create_batch(4, owner=alice, status=JobStatus.QUEUED)
    JobFactory(owner=alice, status=JobStatus.RUNNING)
    JobFactory.create_batch(3, owner=alice, status=JobStatus.COMPLETED)
    Job.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    response = post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "x"})
    assert response.status_code == 429
    assert "limit is 5" in response.json()["detail"]
    assert rejections("active_jobs") == 1


def test_staff_are_not_limited(settings):
    staff = UserFactory(is_staff=True)
    client = client_for(staff)
    codes = {post_json(client, "/api/jobs/", {"type": "reverse_string", "payload": f"{n}"}).status_code for n in range(12)}
    assert codes == {201}


# --- reading ----------------------------------------------------------------------


def test_list_is_paginated_and_filtered(api, alice):
    old = timezone.now() - timedelta(days=2)
    JobFactory.create_batch(3, owner=alice, type="reverse_string", status=JobStatus.COMPLETED)
    JobFactory(owner=alice, type="fail", status=JobStatus.DEAD, priority=Priority.LOW, queue="q2")
    aged = JobFactory(owner=alice, type="sleep")
    Job.objects.filter(pk=aged.pk).update(created_at=old)
    page = api.get("/api/jobs/", {"page_size": 2}).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]
    assert api.get("/api/jobs/", {"status": "dead"}).json()["count"] == 1
    assert api.get("/api/jobs/", {"status": "dead,completed"}).json()["count"] == 4
    assert api.get("/api/jobs/", {"type": "reverse_string"}).json()["count"] == 3
    assert api.get("/api/jobs/", {"queue": "q2"}).json()["count"] == 1
    assert api.get("/api/jobs/", {"priority": "low"}).json()["count"] == 1
    assert api.get("/api/jobs/", {"created_before": (old + timedelta(hours=1)).isoformat()}).json()["count"] == 1
    assert api.get("/api/jobs/", {"created_after": (old + timedelta(hours=1)).isoformat()}).json()["count"] == 4
    ids = [j["id"] for j in api.get("/api/jobs/", {"ordering": "id"}).json()["results"]]
    assert ids == sorted(ids)


@pytest.mark.parametrize("params", [{"status": "nope"}, {"priority": "urgent"}, {"ordering": "payload"},
                                    {"created_after": "yesterday"}, {"page_size": 0}, {"bogus": 1}])
def test_list_refuses_bad_filters(api, params):
    response = api.get("/api/jobs/", params)
    assert response.status_code == 400
    assert set(response.json()) == set(params)


def test_a_job_shows_the_status_it_is_stored_in(api, alice):
    """Show a due scheduled job as scheduled until the leader stages it, and filter on the stored status alone."""
    due = JobFactory(owner=alice, status=JobStatus.SCHEDULED, run_at=timezone.now() - timedelta(seconds=5))
    queued = JobFactory(owner=alice)
    assert api.get(f"/api/jobs/{due.pk}/").json()["status"] == "scheduled"
    assert [j["id"] for j in api.get("/api/jobs/", {"status": "scheduled"}).json()["results"]] == [due.pk]
    assert [j["id"] for j in api.get("/api/jobs/", {"status": "queued"}).json()["results"]] == [queued.pk]


def test_a_claimed_job_shows_as_claimed_and_the_list_filters_by_it(api, alice):
    """Show a job a worker holds but no slot runs as claimed, never running; ?status=claimed lists exactly those."""
    claimed = JobFactory(owner=alice, status=JobStatus.CLAIMED)
    running = JobFactory(owner=alice, status=JobStatus.RUNNING, attempts=1, started_at=timezone.now())
    JobFactory(owner=alice)
    body = api.get(f"/api/jobs/{claimed.pk}/").json()
    assert (body["status"], body["attempts"], body["started_at"]) == ("claimed", 0, None)
    assert [j["id"] for j in api.get("/api/jobs/", {"status": "claimed"}).json()["results"]] == [claimed.pk]
    assert {j["id"] for j in api.get("/api/jobs/", {"status": "claimed,running"}).json()["results"]} == {
        claimed.pk, running.pk}
    assert api.get("/api/jobs/stats/").json()["by_status"] == {
        **dict.fromkeys(JobStatus.values, 0), "queued": 1, "claimed": 1, "running": 1}


def test_an_unknown_status_filter_is_refused_on_its_field(api):
    response = api.get("/api/jobs/", {"status": "claimed,held"})
    assert response.status_code == 400
    assert list(response.json()) == ["status"] and "held" in response.json()["status"][0]


def test_the_schema_lists_every_status(api):
    """Name every status, claimed included, in the schema: the job's status enum and the filter's description."""
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    (status_filter,) = [p for p in schema["paths"]["/api/jobs/"]["get"]["parameters"] if p["name"] == "status"]
    for status in JobStatus.values:
        assert status in status_filter["description"]
    job_status = schema["components"]["schemas"]["Job"]["properties"]["status"]
    assert schema["components"]["schemas"][job_status["$ref"].rsplit("/", 1)[1]]["enum"] == JobStatus.values


def columns_read(queries) -> set[str]:
    """Return the jobs table's columns that `queries` selected."""
    table = Job._meta.db_table
    return {field.column for field in Job._meta.concrete_fields
            for query in queries if query["sql"].startswith("SELECT") and f'"{table}"."{field.column}"' in query["sql"]}


def test_list_leaves_results_out_and_the_detail_serves_them_whole(api, alice):
    """List jobs without their results or history, not even read from the database; serve both on the job's route."""
    result = {"frames": "x" * 1_000_000}
    attempt = {"attempt": 1, "worker": "w", "started_at": "2030-01-01T00:00:00Z", "finished_at": "2030-01-01T00:00:01Z",
               "outcome": "completed", "error": "", "traceback": ""}
    job = JobFactory(owner=alice, status=JobStatus.COMPLETED, attempts=1, result=result, history=[attempt])
    with CaptureQueriesContext(connection) as queries:
        listing = api.get("/api/jobs/")
    (row,) = listing.json()["results"]
    assert row["id"] == job.pk and row["status"] == "completed"
    assert "result" not in row and "history" not in row
    assert len(listing.content) < 10_000
    assert not columns_read(queries) & {"result", "history"}
    detail = api.get(f"/api/jobs/{job.pk}/").json()
    assert detail["result"] == result and [a["outcome"] for a in detail["history"]] == ["completed"]


def test_dlq_list_reads_no_results_or_history(api, alice):
    """List dead jobs with their last error, without reading their results or attempt histories."""
    JobFactory(owner=alice, status=JobStatus.DEAD, attempts=4, error="ValueError: bad", result={"partial": "x" * 1_000_000},
               history=[{"attempt": n, "traceback": "Traceback ..." * 10_000} for n in range(1, 5)])
    with CaptureQueriesContext(connection) as queries:
        listing = api.get("/api/dlq/")
    (row,) = listing.json()["results"]
    assert row["error"] == "ValueError: bad" and "result" not in row and "history" not in row
    assert len(listing.content) < 10_000
    assert not columns_read(queries) & {"result", "history"}


def test_detail_includes_the_attempt_history(api, alice):
    job = JobFactory(owner=alice, status=JobStatus.RETRYING, attempts=1, error="boom", history=[
        {"attempt": 1, "worker": "w", "started_at": "2030-01-01T00:00:00+00:00", "finished_at": "2030-01-01T00:00:01+00:00",
         "outcome": "failed", "error": "boom", "traceback": "Traceback ..."}])
    body = api.get(f"/api/jobs/{job.pk}/").json()
    assert body["status"] == "retrying"
    assert body["history"][0]["traceback"] == "Traceback ..."


def test_stats(api, alice, bob):
    now = timezone.now()
    JobFactory.create_batch(3, owner=alice, status=JobStatus.COMPLETED, started_at=now - timedelta(seconds=2), finished_at=now)
    JobFactory(owner=alice, status=JobStatus.DEAD, finished_at=now, priority=Priority.HIGH, type="fail")
    JobFactory(owner=alice)
    JobFactory.create_batch(5, owner=bob, status=JobStatus.DEAD)
    stats = api.get("/api/jobs/stats/").json()
    assert stats["by_status"]["completed"] == 3 and stats["by_status"]["dead"] == 1 and stats["by_status"]["queued"] == 1
    assert stats["by_priority"] == {"high": 1, "normal": 4, "low": 0}
    assert stats["by_type"] == {"fail": 1, "reverse_string": 4}
    assert stats["finished_last_minute"] == 4 and stats["finished_last_hour"] == 4
    assert stats["success_rate"] == 0.75
    assert stats["run_time_mean_seconds"] == pytest.approx(2, abs=0.1)
    assert stats["run_time_p95_seconds"] == pytest.approx(2, abs=0.1)


# --- acting -----------------------------------------------------------------------


def test_cancel(api, alice):
    job = JobFactory(owner=alice)
    response = api.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert api.post(f"/api/jobs/{job.pk}/cancel/").status_code == 409
    done = JobFactory(owner=alice, status=JobStatus.COMPLETED)
    assert api.post(f"/api/jobs/{done.pk}/cancel/").status_code == 409


def test_retry(api, alice):
    dead = JobFactory(owner=alice, status=JobStatus.DEAD, attempts=4)
    response = api.post(f"/api/jobs/{dead.pk}/retry/")
    assert response.status_code == 200 and response.json()["status"] == "queued" and response.json()["attempts"] == 0
    assert api.post(f"/api/jobs/{dead.pk}/retry/").status_code == 409
    cancelled = JobFactory(owner=alice, status=JobStatus.CANCELLED)
    assert api.post(f"/api/jobs/{cancelled.pk}/retry/").status_code == 200


def test_dlq_lists_and_requeues(api, alice, bob):
    mine = JobFactory.create_batch(3, owner=alice, status=JobStatus.DEAD, error="ValueError: bad")
    theirs = JobFactory(owner=bob, status=JobStatus.DEAD)
    listing = api.get("/api/dlq/").json()
    assert {j["id"] for j in listing["results"]} == {j.pk for j in mine}
    assert listing["results"][0]["error"] == "ValueError: bad"
    response = post_json(api, "/api/dlq/requeue/", {"job_ids": [mine[0].pk, theirs.pk]})
    assert response.json() == {"requeued": 1, "job_ids": [mine[0].pk]}
    assert Job.objects.get(pk=theirs.pk).status == JobStatus.DEAD
    response = post_json(api, "/api/dlq/requeue/", {"max_jobs": 1})
    assert response.json()["requeued"] == 1
    assert post_json(api, "/api/dlq/requeue/", {}).json()["requeued"] == 1
    assert post_json(api, "/api/dlq/requeue/", {"job_ids": ["x"]}).status_code == 400
    assert post_json(api, "/api/dlq/requeue/", {"max_jobs": 0}).status_code == 400


def test_dlq_requeue_respects_the_active_cap(api, alice):
    JobFactory.create_batch(4, owner=alice)
    JobFactory.create_batch(3, owner=alice, status=JobStatus.DEAD)
    assert post_json(api, "/api/dlq/requeue/", {}).json()["requeued"] == 1
    assert post_json(api, "/api/dlq/requeue/", {}).status_code == 429


def test_retries_spend_the_per_minute_allowance(api, alice, settings):
    """Spend one submission of the allowance per retry; past it, 429 with Retry-After and the job left dead."""
    settings.JOBS_USER_MAX_ACTIVE = 100
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 3
    dead = JobFactory(owner=alice, status=JobStatus.DEAD, attempts=4)
    for _ in range(3):
        assert api.post(f"/api/jobs/{dead.pk}/retry/").status_code == 200
        assert api.post(f"/api/jobs/{dead.pk}/retry/").status_code == 409, "a refused retry spends nothing"
        Job.objects.filter(pk=dead.pk).update(status=JobStatus.DEAD)  # it failed for good again
    response = api.post(f"/api/jobs/{dead.pk}/retry/")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 20
    assert response.json()["retry_after"] == int(response["Retry-After"])
    assert "requeue 3 jobs a minute" in response.json()["detail"]
    assert Job.objects.get(pk=dead.pk).status == JobStatus.DEAD
    assert rejections("submissions_per_minute") == 1


def test_dlq_requeue_spends_the_allowance_per_job(api, alice, settings):
    """Requeue only as many dead jobs as the allowance holds, shared with submissions; then 429."""
    settings.JOBS_USER_MAX_ACTIVE = 100
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 4
    dead = JobFactory.create_batch(6, owner=alice, status=JobStatus.DEAD)
    assert post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "x"}).status_code == 201
    response = post_json(api, "/api/dlq/requeue/", {})
    assert response.json() == {"requeued": 3, "job_ids": sorted(j.pk for j in dead)[:3]}
    refused = post_json(api, "/api/dlq/requeue/", {})
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 15
    assert Job.objects.filter(owner=alice, status=JobStatus.DEAD).count() == 3
    assert post_json(api, "/api/jobs/", {"type": "reverse_string", "payload": "y"}).status_code == 429


def test_staff_retry_and_requeue_without_an_allowance(settings):
    """Let staff retry and requeue any number of jobs, as they submit any number."""
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 1
    staff = UserFactory(is_staff=True)
    api = client_for(staff)
    dead = JobFactory(owner=staff, status=JobStatus.DEAD)
    for _ in range(3):
        assert api.post(f"/api/jobs/{dead.pk}/retry/").status_code == 200
        Job.objects.filter(pk=dead.pk).update(status=JobStatus.DEAD)
    JobFactory.create_batch(3, owner=staff, status=JobStatus.DEAD)
    assert post_json(api, "/api/dlq/requeue/", {}).json()["requeued"] == 4


def test_workers_are_staff_only(api):
    Worker.objects.create(hostname="h", pid=1, queues=[], concurrency=2)
    assert api.get("/api/workers/").status_code == 403
    staff = client_for(UserFactory(is_staff=True))
    workers = staff.get("/api/workers/").json()
    assert [w["hostname"] for w in workers] == ["h"]


# --- isolation --------------------------------------------------------------------


def test_another_users_job_is_404_on_every_route(api, bob):
    job = JobFactory(owner=bob, status=JobStatus.DEAD)
    for method, url in [("get", f"/api/jobs/{job.pk}/"), ("post", f"/api/jobs/{job.pk}/cancel/"),
                        ("post", f"/api/jobs/{job.pk}/retry/")]:
        assert getattr(api, method)(url).status_code == 404, url
    assert api.get("/api/jobs/").json()["count"] == 0
    assert api.get("/api/dlq/").json()["count"] == 0
    assert api.get("/api/jobs/stats/").json()["by_status"]["dead"] == 0
    assert post_json(api, "/api/dlq/requeue/", {"job_ids": [job.pk]}).json()["requeued"] == 0
    assert Job.objects.get(pk=job.pk).status == JobStatus.DEAD


def test_staff_see_every_job(alice, bob):
    JobFactory(owner=alice)
    job = JobFactory(owner=bob)
    staff = client_for(UserFactory(is_staff=True))
    assert staff.get("/api/jobs/").json()["count"] == 2
    assert staff.get(f"/api/jobs/{job.pk}/").status_code == 200


# --- docs -------------------------------------------------------------------------


def test_schema_and_docs_are_served_without_a_cdn():
    schema = APIClient().get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/jobs/{job_id}/cancel/" in schema.content
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()

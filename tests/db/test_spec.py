"""A job is validated once, by jobs.spec.build, on its way from a submission to its handler."""

import json
import uuid
from collections import Counter

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from jobs import queue, registry, spec as job_spec
from jobs.errors import JobTypeNotAllowed, PayloadError, UnknownJobType
from jobs.handlers.validators import PayloadSchema
from jobs.models import Job, JobStatus, Priority
from jobs.queue import ClaimedJob
from jobs.registry import JobContext
from jobs.submission import submit_job
from jobs.worker.executor import execute
from jobs.worker.state import Running
from tests.factories import UserFactory


class CountingRegistry(dict):
    """The registry of job types, counting each lookup of a handler by name (what get_handler does)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.lookups = Counter()

    def get(self, name, default=None):
        self.lookups[name] += 1
        return super().get(name, default)


@pytest.fixture
def calls(monkeypatch):
    """Count the runs of every payload schema and the lookups of every handler, wherever they come from."""
    counted = {"schema": 0}
    original = PayloadSchema.__call__

    def counting_call(schema, payload):
        counted["schema"] += 1
        return original(schema, payload)

    lookups = CountingRegistry(registry._registry)
    monkeypatch.setattr(PayloadSchema, "__call__", counting_call)
    monkeypatch.setattr(registry, "_registry", lookups)

    class Calls:
        @property
        def validations(self) -> int:
            return counted["schema"]

        @property
        def resolutions(self) -> int:
            return sum(lookups.lookups.values())

        def reset(self) -> None:
            counted["schema"] = 0
            lookups.lookups.clear()

    return Calls()


def api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


# --- the spec -----------------------------------------------------------------------


def test_build_returns_the_stored_form_of_a_job():
    """Normalize the payload and resolve every option: delay into run_at, ttl into expires_at, the type's retries."""
    spec = job_spec.build("reverse_string", "hello", priority="high", delay=30, ttl=60, queue="emails")
    assert (spec.type, spec.payload, spec.queue, spec.priority) == ("reverse_string", {"text": "hello"}, "emails", Priority.HIGH)
    assert spec.status == JobStatus.SCHEDULED and spec.run_at is not None
    assert (spec.expires_at - spec.run_at).total_seconds() == pytest.approx(30)
    assert spec.handler is registry.get_handler("reverse_string")
    assert spec.max_retries >= 0 and spec.trace_id


def test_build_raises_what_enqueue_always_raised():
    """Refuse an unknown type, a bad payload (per field) and a bad option with the same errors as before."""
    with pytest.raises(UnknownJobType):
        job_spec.build("no_such_type")
    with pytest.raises(PayloadError) as excinfo:
        job_spec.build("reverse_string", {"text": 42})
    assert list(excinfo.value.errors) == ["text"]
    with pytest.raises(ValueError, match="^Give run_at or delay, not both"):
        job_spec.build("reverse_string", "x", delay=1, run_at=timezone.now())


@pytest.mark.django_db
def test_enqueue_stores_a_spec_without_validating_it_again(calls):
    """Store the spec's payload and options as they are: no schema runs and no handler is looked up."""
    spec = job_spec.build("reverse_string", "hello", priority="low")
    calls.reset()
    job = queue.enqueue(spec)
    assert (calls.validations, calls.resolutions) == (0, 0)
    stored = Job.objects.get(pk=job.pk)
    assert (stored.payload, stored.priority, stored.trace_id) == ({"text": "hello"}, Priority.LOW, spec.trace_id)


@pytest.mark.django_db
def test_enqueue_with_a_type_builds_the_spec_once(calls):
    """Validate the payload once and look the handler up once for enqueue(type, payload, ...)."""
    queue.enqueue("reverse_string", "hello")
    assert (calls.validations, calls.resolutions) == (1, 1)
    calls.reset()
    queue.enqueue_many("reverse_string", ["a", "b", "c"])
    assert (calls.validations, calls.resolutions) == (3, 1)


@pytest.mark.django_db
def test_enqueue_many_stores_the_specs_of_build_many():
    """Store one job per spec of build_many, in order, with their shared options."""
    specs = job_spec.build_many("reverse_string", ["a", "b"], queue="bulk")
    ids = queue.enqueue_many(specs)
    assert list(Job.objects.filter(pk__in=ids).order_by("pk").values_list("payload", "queue")) == [
        ({"text": "a"}, "bulk"), ({"text": "b"}, "bulk"),
    ]
    with pytest.raises(ValueError, match="same options"):
        queue.enqueue_many([*specs, job_spec.build("reverse_string", "c", queue="other")])


@pytest.mark.django_db
def test_enqueue_checks_the_owner_of_a_spec():
    """Refuse, at the insert, a spec whose owner may not have a job of its type."""
    spec = job_spec.build("reverse_string", "x", owner=UserFactory())
    stuck = spec.with_options(handler=registry.Handler(name="reverse_string", func=spec.handler.func, staff_only=True))
    with pytest.raises(JobTypeNotAllowed):
        queue.enqueue(stuck)
    assert not Job.objects.exists()


# --- one validation per submission -----------------------------------------------------


@pytest.mark.django_db
def test_an_api_submission_validates_the_payload_once_and_resolves_the_handler_once(calls):
    """POST /api/jobs/ runs the type's schema once and looks its handler up once, for staff and users alike."""
    cache.clear()  # the API's throttles count in the shared cache
    for user in (UserFactory(), UserFactory(is_staff=True)):
        client = api_client(user)
        calls.reset()
        response = client.post("/api/jobs/", json.dumps({"type": "sleep", "payload": 1, "delay": 5}),
                               content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"k-{user.pk}")
        assert response.status_code == 201, response.content
        assert (calls.validations, calls.resolutions) == (1, 1)
        assert Job.objects.get(pk=response.json()["id"]).payload == {"seconds": 1}


@pytest.mark.django_db
def test_an_api_submission_keeps_its_field_errors(calls):
    """Refuse a bad payload with its field errors after one run of the schema."""
    cache.clear()
    response = api_client(UserFactory()).post(
        "/api/jobs/", json.dumps({"type": "fibonacci_calc", "payload": {"n": -1}}), content_type="application/json"
    )
    assert response.status_code == 400
    assert list(response.json()) == ["payload"] and list(response.json()["payload"]) == ["n"]
    assert calls.validations == 1


@pytest.mark.django_db
def test_a_dashboard_submission_validates_the_payload_once(calls):
    """The Submit form runs the type's schema once: the spec's build; its inputs come from the same schema.

    Two lookups of the handler: one reads the form's inputs from the
    type's schema, one builds the spec.
    """
    client = Client()
    client.force_login(UserFactory())
    calls.reset()
    response = client.post(reverse("dashboard:submit"), {
        "type": "reverse_string", "priority": "normal", "idempotency_key": "k-1", "p_text": "hello",
    })
    assert response.status_code == 302, response.content
    assert (calls.validations, calls.resolutions) == (1, 2)
    assert Job.objects.get().payload == {"text": "hello"}


@pytest.mark.django_db
def test_submit_job_takes_a_spec_of_its_user_only():
    """Refuse a spec of another owner, so no job is stored under the wrong user's limits."""
    alice, bob = UserFactory(), UserFactory()
    with pytest.raises(ValueError, match="another owner"):
        submit_job(user=alice, spec=job_spec.build("reverse_string", "x", owner=bob))
    assert submit_job(user=alice, spec=job_spec.build("reverse_string", "x", owner=alice)).job.owner_id == alice.pk


# --- the worker -------------------------------------------------------------------------


def running(job_type: str, payload) -> Running:
    job = ClaimedJob(id=1, type=job_type, payload=payload, attempts=1, max_retries=0, timeout=None, trace_id="t",
                     queue="default", lease_token=uuid.uuid4(), owner_id=None, priority=Priority.NORMAL, due=0.0,
                     started=True)
    context = JobContext(job_id=1, type=job_type, payload=payload, attempt=1)
    return Running(job=job, context=context, timeout=5.0, started=0.0)


def test_the_worker_checks_the_stored_payload_once_with_the_handler_it_resolved(calls):
    """Run the schema once on a stored payload (and nothing else of the submission's checks) before the handler."""
    stored = job_spec.build("reverse_string", "hello").payload
    calls.reset()
    outcome = execute(running("reverse_string", stored), worker_id="w")
    assert outcome.ok and outcome.result == "olleh"
    assert (calls.validations, calls.resolutions) == (1, 1)


def test_the_worker_refuses_a_stored_payload_its_schema_does_not_take():
    """Send a row written without the spec (an older release, by hand) to the DLQ: its handler never sees it."""
    outcome = execute(running("reverse_string", {"text": 42}), worker_id="w")
    assert not outcome.ok and outcome.permanent
    assert outcome.error.startswith("Invalid payload: PayloadError: text:")


@pytest.mark.django_db(transaction=True)
def test_a_worker_resolves_a_jobs_handler_once_for_its_timeout_its_run_and_its_backoff(calls):
    """Look the handler up once per claimed job, in a real in-process worker: not again for the timeout or the retry."""
    from jobs.models import Job, JobStatus
    from jobs.worker import Worker

    done = queue.enqueue("reverse_string", "hello")
    failing = queue.enqueue("fail", {"message": "no"}, max_retries=1)
    calls.reset()
    Worker(burst=True, concurrency=2, poll_interval=0.1, install_signal_handlers=False).run()
    assert Job.objects.get(pk=done.pk).status == JobStatus.COMPLETED
    assert Job.objects.get(pk=failing.pk).status == JobStatus.RETRYING
    assert calls.resolutions == 2, "one lookup per job"

"""Structured logs and trace ids: JSON lines, and one trace id from the request to the worker's lines."""

import logging
import re

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory

from jobs import queue, tracing
from jobs.models import Job
from tests.factories import UserFactory

# --- Trace ids in requests ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_valid_trace_id_is_accepted_and_echoed():
    response = Client().get("/admin/login/", HTTP_X_TRACE_ID="checkout-42.a_b")
    assert response["X-Trace-Id"] == "checkout-42.a_b"


@pytest.mark.django_db
@pytest.mark.parametrize("given", [None, "", "has space", "x" * 65, "semi;colon", "ünïcode"])
def test_a_missing_or_unsafe_trace_id_is_replaced_by_a_new_one(given):
    headers = {} if given is None else {"HTTP_X_TRACE_ID": given}
    response = Client().get("/admin/login/", **headers)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Trace-Id"])


def enqueue_view(request):
    job = queue.enqueue("reverse_string", {"text": "traced"})
    return HttpResponse(str(job.pk))


@pytest.mark.django_db
def test_a_job_enqueued_during_a_request_stores_its_trace_id():
    """Store the request's trace id on the job, with no trace_id passed to enqueue."""
    middleware = tracing.TraceIdMiddleware(enqueue_view)
    response = middleware(RequestFactory().post("/jobs", HTTP_X_TRACE_ID="req-77"))

    assert response["X-Trace-Id"] == "req-77"
    assert Job.objects.get(pk=int(response.content)).trace_id == "req-77"


@pytest.mark.django_db
def test_an_explicit_trace_id_wins_and_outside_a_request_one_is_generated():
    with tracing.bound(trace_id="from-request"):
        explicit = queue.enqueue("reverse_string", {"text": "a"}, trace_id="given")
    generated = queue.enqueue("reverse_string", {"text": "b"})
    ids = queue.enqueue_many("reverse_string", [{"text": "c"}, {"text": "d"}])

    assert explicit.trace_id == "given"
    assert re.fullmatch(r"[0-9a-f]{32}", generated.trace_id)
    assert len(set(Job.objects.filter(pk__in=ids).values_list("trace_id", flat=True))) == 1


@pytest.mark.django_db
def test_submit_is_logged_once_the_insert_commits(caplog, django_capture_on_commit_callbacks):
    """Log one submit line per enqueue, and one for a whole bulk insert, only after commit."""
    owner = UserFactory()
    caplog.set_level(logging.INFO, logger="jobs.queue")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = queue.enqueue("reverse_string", {"text": "a"}, owner=owner, queue="text", trace_id="sub-1")
        ids = queue.enqueue_many("reverse_string", [{"text": "b"}] * 50, trace_id="bulk-1")
        assert not [r for r in caplog.records if getattr(r, "event", None) == "submit"]
    assert callbacks

    single, bulk = [r for r in caplog.records if getattr(r, "event", None) == "submit"]
    assert (single.job_id, single.type, single.queue, single.attempt, single.trace_id, single.user_id) == (
        job.pk, "reverse_string", "text", 0, "sub-1", owner.pk,
    )
    assert (bulk.count, bulk.first_job_id, bulk.trace_id) == (50, ids[0], "bulk-1")

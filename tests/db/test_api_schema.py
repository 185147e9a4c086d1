"""Fuzz the API with Schemathesis from its own OpenAPI schema: no 5xx, no schema violations."""

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import RefreshToken
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs.models import JobStatus
from tests.factories import JobFactory, UserFactory

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@pytest.fixture(autouse=True)
def requests_share_the_test_transaction():
    """Keep Django from closing the connection after each request, as its test client does.

    Schemathesis calls the WSGI app in this thread, inside the test's transaction.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture
def auth_headers(db, settings):
    settings.JOBS_USER_MAX_ACTIVE = 10**6
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 10**6
    cache.clear()
    user = UserFactory(username="fuzzer")
    # Something to find on the routes that take a job id.
    for status in (JobStatus.QUEUED, JobStatus.DEAD, JobStatus.COMPLETED):
        JobFactory(owner=user, status=status)
    return {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, auth_headers, db):
    case.call_and_validate(headers=auth_headers, checks=CHECKS)

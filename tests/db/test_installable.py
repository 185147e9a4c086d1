"""What lets the queue, its API and the dashboard run in a project of their own: its settings, not ours.

tests/process/test_example_host.py runs such a project end to end; these
tests change one of this project's settings at a time to what another
project might have, on the real database and Redis.
"""

import pytest
from django.test import Client
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from jobs import health, metrics
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice():
    return UserFactory(username="alice")


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_dashboard_opens_its_websocket_where_the_project_mounts_it(settings, alice):
    settings.DASHBOARD_WEBSOCKET_URL = "/skipjack/ws/events/"
    html = signed_in(alice).get(reverse("dashboard:overview")).content.decode()
    assert 'hx-ext="ws" ws-connect="/skipjack/ws/events/"' in html
    assert 'id="live-status"' in html


def test_without_a_websocket_the_dashboard_pages_work_and_say_nothing_of_live_updates(settings, alice):
    settings.DASHBOARD_WEBSOCKET_URL = None
    response = signed_in(alice).get(reverse("dashboard:jobs"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "ws-connect" not in html and 'id="live-status"' not in html


def test_the_dashboard_logs_out_by_itself_and_goes_to_the_login_page(settings, alice):
    """Its own logout, so the project needs no URL named "logout"; then LOGOUT_REDIRECT_URL, else LOGIN_URL."""
    client = signed_in(alice)
    html = client.get(reverse("dashboard:overview")).content.decode()
    assert f'action="{reverse("dashboard:logout")}"' in html
    settings.LOGOUT_REDIRECT_URL = None
    settings.LOGIN_URL = "/shop/login/"
    response = client.post(reverse("dashboard:logout"))
    assert response.status_code == 302 and response["Location"] == "/shop/login/"
    assert client.get(reverse("dashboard:overview"))["Location"].startswith("/shop/login/?next=")


def test_the_api_keeps_its_own_rules_whatever_the_project_s_rest_framework_defaults(settings, alice):
    """JSON in and out, signed-in users only and its own error format, under a project's permissive defaults."""
    settings.REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.FormParser"],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.BrowsableAPIRenderer"],
    }
    anonymous = Client().get("/api/jobs/", HTTP_ACCEPT="text/html")
    assert anonymous.status_code == 403 and anonymous["Content-Type"] == "application/json"
    client = signed_in(alice)  # through the project's session authentication
    created = client.post("/api/jobs/", {"type": "reverse_string", "payload": {"text": "abc"}},
                          content_type="application/json", HTTP_ACCEPT="text/html")
    assert created.status_code == 201, created.content
    assert created["Content-Type"] == "application/json" and created.json()["owner"] == alice.pk
    refused = client.post("/api/jobs/", {"type": "no_such_type", "payload": {}}, content_type="application/json")
    assert refused.status_code == 400 and "type" in refused.json()


def test_without_redis_url_readiness_checks_the_database_and_migrations_only(settings, monkeypatch):
    monkeypatch.setattr(health, "_migrations_applied", False)
    del settings.REDIS_URL
    response = Client().get("/readyz/")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_without_redis_url_rate_limit_rejections_are_not_counted_and_scrapes_still_work(settings):
    del settings.REDIS_URL
    metrics.count_rate_limit_rejection("submit")  # no Redis to count in: nothing, and no error
    response = Client().get("/metrics")
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert "skipjack_queue_metrics_up" in names and "skipjack_rate_limit_rejections" not in names


def test_the_metrics_mount_under_any_prefix(settings):
    settings.ROOT_URLCONF = "tests.installable_urls"
    assert reverse("skipjack-metrics") == "/ops/skipjack/metrics"
    assert Client().get("/ops/skipjack/metrics").status_code == 200

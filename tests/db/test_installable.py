"""What lets the queue, its API and the dashboard run in a project of their own: its settings, not ours.

tests/process/test_example_host.py runs such a project end to end (the
API's own rules under its REST_FRAMEWORK defaults among them: DRF reads those
as its views are defined, so no setting changed here could show them); these
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

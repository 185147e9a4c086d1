"""Accounts: login throttles on every login form, shared with the API."""

import json

import pytest
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def fresh_throttles():
    """Throttle counters live in the shared Redis cache; start each test from zero."""
    cache.clear()


@pytest.fixture
def alice():
    return UserFactory(username="alice")


def post_json(url, body, client=None):
    return (client or APIClient()).post(url, json.dumps(body), content_type="application/json")


# --- login throttles --------------------------------------------------------------


def session_login(client, path, login, password):
    return client.post(path, {"username": login, "password": password})


def test_session_logins_count_on_the_apis_per_account_counter(alice):
    """Wrong passwords at /accounts/login/ and /admin/login/ use up the account's attempts everywhere."""
    alice.is_staff = True
    alice.save()
    client = Client()
    for n in range(5):
        assert session_login(client, "/accounts/login/", "alice", f"wrong{n}").status_code == 200
        assert session_login(client, "/admin/login/", "ALICE@example.com", f"wrong{n}").status_code == 200

    refused = session_login(client, "/admin/login/", "alice", PASSWORD)

    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many login attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    assert session_login(client, "/accounts/login/", "alice@example.com", PASSWORD).status_code == 429
    assert post_json("/api/auth/token/", {"username": "alice", "password": PASSWORD}).status_code == 429


def test_api_logins_by_username_and_by_email_share_one_counter(alice):
    for n in range(5):
        assert post_json("/api/auth/token/", {"username": "alice", "password": f"wrong{n}"}).status_code == 401
        assert post_json("/api/auth/token/", {"username": " Alice@Example.com ", "password": f"no{n}"}).status_code == 401
    assert post_json("/api/auth/token/", {"username": "alice@example.com", "password": PASSWORD}).status_code == 429
    assert session_login(Client(), "/accounts/login/", "alice", PASSWORD).status_code == 429


def test_session_logins_are_throttled_per_address(alice):
    """Refuse the 21st attempt in a minute from one address, whatever accounts the attempts named."""
    client = Client()
    for n in range(20):
        assert session_login(client, "/accounts/login/", f"nobody{n}", "guess").status_code == 200
    assert session_login(client, "/admin/login/", "alice", PASSWORD).status_code == 429
    assert session_login(Client(REMOTE_ADDR="198.51.100.7"), "/accounts/login/", "alice", PASSWORD).status_code == 302


def test_a_refused_login_checks_no_password(alice):
    """Refuse an attempt past the limit before authenticating: no password is hashed for it."""
    failures = []

    def count(**kwargs):
        failures.append(kwargs["credentials"]["username"])

    user_login_failed.connect(count)
    try:
        for n in range(15):
            session_login(Client(), "/accounts/login/", "alice", f"wrong{n}")
    finally:
        user_login_failed.disconnect(count)
    assert len(failures) == 10


def test_a_throttled_login_page_still_offers_the_form(alice):
    client = Client()
    for n in range(10):
        session_login(client, "/accounts/login/", "alice", f"wrong{n}")
    refused = session_login(client, "/accounts/login/", "alice", PASSWORD)
    assert refused.status_code == 429
    page = refused.content.decode()
    assert 'name="password"' in page and 'value="alice"' in page


def test_a_good_session_login_still_logs_in(alice):
    client = Client()
    assert session_login(client, "/accounts/login/", "alice@example.com", PASSWORD)["Location"] == "/dashboard/"
    assert client.session["_auth_user_id"] == str(alice.pk)

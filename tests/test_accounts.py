"""Accounts: login throttles on every login form, shared with the API; registration."""

import json

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
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


# --- registration -----------------------------------------------------------------


class CountingHasher(PBKDF2PasswordHasher):
    """PBKDF2 with few iterations, counting the passwords it hashes."""

    algorithm = "counting_pbkdf2"
    iterations = 1000
    hashed = 0

    def encode(self, password, salt, iterations=None):
        CountingHasher.hashed += 1
        return super().encode(password, salt, iterations)


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "email": "someone.new@example.com"},
        {"username": "ALICE", "email": "someone.new@example.com"},
        {"username": "carol", "email": "Alice@Example.com"},
    ],
    ids=["taken username", "taken username in other case", "taken email address"],
)
def test_registration_answers_alike_whether_or_not_the_name_or_address_is_taken(alice, settings, body):
    """Answer a taken username or email address exactly as a new account, hashing the password in both cases."""
    settings.PASSWORD_HASHERS = ["tests.test_accounts.CountingHasher", *settings.PASSWORD_HASHERS]
    password = {"password": "a-long-passphrase-9"}
    CountingHasher.hashed = 0
    created = post_json("/api/auth/register/", {"username": "dave", "email": "dave@example.com", **password})
    assert CountingHasher.hashed == 1

    taken = post_json("/api/auth/register/", {**body, **password})

    assert CountingHasher.hashed == 2
    assert (taken.status_code, taken.json()) == (created.status_code, created.json()) == (202, created.json())
    assert set(created.json()) == {"detail"}
    User = type(alice)
    assert User.objects.filter(username="dave").exists()
    assert User.objects.count() == 2
    assert User.objects.get(username="alice").check_password(PASSWORD)


def test_registration_stays_throttled_per_address(alice, settings):
    settings.PASSWORD_HASHERS = ["tests.test_accounts.CountingHasher"]
    codes = [
        post_json("/api/auth/register/", {"username": name, "email": f"{name}@example.com", "password": "a-long-passphrase-9"}).status_code
        for name in ["alice"] * 5 + [f"new{n}" for n in range(6)]
    ]
    assert codes == [202] * 10 + [429]

"""Accounts: API sessions and their refresh tokens, login throttles on every login form, registration."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.db.models import F
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, UntypedToken

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


def log_in(login="alice", password=PASSWORD) -> dict:
    response = post_json("/api/auth/token/", {"username": login, "password": password})
    assert response.status_code == 200, response.content
    return response.json()


def refresh(token: str):
    return post_json("/api/auth/token/refresh/", {"refresh": token})


def families(user):
    from accounts.models import TokenFamily

    return TokenFamily.objects.filter(user=user)


def jti(token: str) -> str:
    return UntypedToken(token)["jti"]


def past_the_grace(user):
    """Make the last refresh of each of the user's sessions older than the grace period."""
    families(user).update(rotated_at=F("rotated_at") - timedelta(minutes=5))


# --- refresh tokens ---------------------------------------------------------------


def test_a_login_starts_a_session_whose_live_token_is_the_one_returned(alice):
    tokens = log_in()
    (family,) = families(alice)
    assert family.current_jti == jti(tokens["refresh"]) and family.revoked_at is None
    assert AccessToken(tokens["access"])["user_id"] == str(alice.pk)


def test_a_replaced_refresh_token_used_again_ends_its_session(alice):
    """Refuse the replaced token with 401, revoke the family, and refuse the token that replaced it too."""
    first = log_in()["refresh"]
    second = refresh(first).json()["refresh"]
    past_the_grace(alice)

    reused = refresh(first)

    assert reused.status_code == 401 and reused.json()["code"] == "token_reused"
    (family,) = families(alice)
    assert family.revoked_at is not None and family.revoke_reason == "reuse"
    assert refresh(second).status_code == 401


def test_the_token_just_replaced_is_refused_within_the_grace_without_ending_the_session(alice):
    """A client that sent one refresh twice gets 401 for the second; the first one's new token still works."""
    first = log_in()["refresh"]
    second = refresh(first).json()["refresh"]

    again = refresh(first)

    assert again.status_code == 401 and again.json()["code"] == "token_used"
    assert families(alice).get().revoked_at is None
    assert refresh(second).status_code == 200


def test_an_older_token_ends_the_session_even_within_the_grace(alice):
    first = log_in()["refresh"]
    second = refresh(first).json()["refresh"]
    third = refresh(second).json()["refresh"]
    assert refresh(first).json()["code"] == "token_reused"
    assert refresh(third).status_code == 401


def test_reuse_ends_only_its_own_session(alice):
    stolen = log_in()["refresh"]
    other = log_in()["refresh"]
    refresh(stolen)
    past_the_grace(alice)
    assert refresh(stolen).status_code == 401
    assert refresh(other).status_code == 200


def test_a_password_change_ends_every_token_issued_before_it(alice):
    """Refuse the refresh token and the access token with 401 once the password has changed."""
    tokens = log_in()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api.get("/api/jobs/").status_code == 200

    alice.set_password("a-new-passphrase-77")
    alice.save()

    refused = refresh(tokens["refresh"])
    assert refused.status_code == 401 and refused.json()["code"] == "password_changed"
    assert api.get("/api/jobs/").status_code == 401
    assert refresh(log_in(password="a-new-passphrase-77")["refresh"]).status_code == 200


def test_no_refresh_outlives_the_session(alice, settings):
    """Cap every token at the session's end, however often it is refreshed, and refuse a refresh after it."""
    settings.API_SESSION_LIFETIME = timedelta(hours=2)
    tokens = log_in()
    ends_at = families(alice).get().expires_at
    assert abs(ends_at - (timezone.now() + timedelta(hours=2))) < timedelta(minutes=1)
    assert UntypedToken(tokens["refresh"])["exp"] == int(ends_at.timestamp())

    families(alice).update(expires_at=timezone.now() + timedelta(minutes=2))  # the session is nearly over
    ends_at = families(alice).get().expires_at
    renewed = refresh(tokens["refresh"]).json()
    assert UntypedToken(renewed["refresh"])["exp"] == int(ends_at.timestamp())
    assert AccessToken(renewed["access"])["exp"] <= int(ends_at.timestamp())

    families(alice).update(expires_at=timezone.now() - timedelta(seconds=1))  # and now it is
    over = refresh(renewed["refresh"])
    assert over.status_code == 401 and over.json()["code"] == "session_ended"


def test_a_deleted_users_refresh_token_is_a_json_401(alice):
    token = log_in()["refresh"]
    alice.delete()
    response = refresh(token)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "user_not_found"


def test_an_inactive_users_refresh_token_is_refused(alice):
    token = log_in()["refresh"]
    type(alice).objects.filter(pk=alice.pk).update(is_active=False)
    assert refresh(token).json()["code"] == "user_inactive"


@pytest.mark.parametrize("token", ["not-a-token", "", None])
def test_a_malformed_refresh_token_is_refused(token):
    response = post_json("/api/auth/token/refresh/", {"refresh": token})
    assert response.status_code in (400, 401)
    assert response["Content-Type"] == "application/json"


def test_a_refresh_token_of_no_session_is_refused(alice):
    """A signed refresh token from before sessions had families is a 401, and logs nobody in."""
    response = refresh(str(RefreshToken.for_user(alice)))
    assert response.status_code == 401 and response.json()["code"] == "token_not_valid"


def test_an_access_token_is_no_refresh_token(alice):
    assert refresh(log_in()["access"]).status_code == 401


def test_logout_ends_the_session(alice):
    """Answer 204 and revoke the family; its tokens refresh no more, and logging out again is a 204 too."""
    tokens = log_in()
    newer = refresh(tokens["refresh"]).json()["refresh"]

    response = post_json("/api/auth/logout/", {"refresh": newer})

    assert response.status_code == 204
    family = families(alice).get()
    assert family.revoked_at is not None and family.revoke_reason == "logout"
    assert refresh(newer).json()["code"] == "session_ended"
    assert post_json("/api/auth/logout/", {"refresh": newer}).status_code == 204


def test_logout_refuses_what_is_no_refresh_token(alice):
    assert post_json("/api/auth/logout/", {"refresh": "garbage"}).status_code == 401
    assert post_json("/api/auth/logout/", {}).json() == {"refresh": ["This field is required."]}
    assert post_json("/api/auth/logout/", {"refresh": log_in()["access"]}).status_code == 401
    assert families(alice).get().revoked_at is None


def test_an_operator_revokes_a_session_in_the_admin(alice, admin_client):
    token = log_in()["refresh"]
    family = families(alice).get()
    response = admin_client.post(
        "/admin/accounts/tokenfamily/", {"action": "revoke", "_selected_action": [str(family.pk)]}, follow=True,
    )
    assert "Revoked 1 session." in response.content.decode()
    assert families(alice).get().revoke_reason == "admin"
    assert refresh(token).json()["code"] == "session_ended"


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
    settings.PASSWORD_HASHERS = ["tests.db.test_accounts.CountingHasher", *settings.PASSWORD_HASHERS]
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
    settings.PASSWORD_HASHERS = ["tests.db.test_accounts.CountingHasher"]
    codes = [
        post_json("/api/auth/register/", {"username": name, "email": f"{name}@example.com", "password": "a-long-passphrase-9"}).status_code
        for name in ["alice"] * 5 + [f"new{n}" for n in range(6)]
    ]
    assert codes == [202] * 10 + [429]


@pytest.mark.parametrize("login", ["ali\x00ce", "ali\ud800ce"], ids=["nul", "lone-surrogate"])
def test_a_login_name_postgresql_cannot_store_is_refused_not_a_500(alice, login):
    """Answer a 400 on the field at the API (its throttle looked the name up first) and the form's error at the session logins."""
    response = post_json("/api/auth/token/", {"username": login, "password": PASSWORD})
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["username"]
    if login.isascii():  # a form post carries UTF-8, which cannot hold a lone surrogate
        for url in ("/accounts/login/", "/admin/login/"):
            assert session_login(Client(), url, login, PASSWORD).status_code == 200

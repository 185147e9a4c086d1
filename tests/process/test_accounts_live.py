"""Accounts over real HTTP: concurrent refreshes, logins and registrations against uvicorn processes."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.core.cache import cache
from django.db.models import F
from requests.adapters import HTTPAdapter
from rest_framework_simplejwt.tokens import UntypedToken

from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


class FromAddress(HTTPAdapter):
    """Connect from another local address, as a client that is not the proxy would."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def all_at_once(calls):
    """Run each of `calls` in its own thread, all released at the same moment; return their results in order."""
    ready = threading.Barrier(len(calls))

    def run(call):
        ready.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_one_refresh_token_sent_eight_times_at_once_is_rotated_once(start_server):
    """Eight parallel refreshes on four servers: one new token, seven 401s, one live session; reuse then ends it."""
    from accounts.models import TokenFamily

    racer = UserFactory(username="racer")
    servers = [start_server() for _ in range(4)]
    for server in servers:
        server.wait_until_up()
    tokens = requests.post(f"{servers[0].url}/api/auth/token/", json={"username": "racer", "password": PASSWORD}, timeout=30).json()
    sessions = []
    for n in range(8):
        session = requests.Session()
        session.get(f"{servers[n % 4].url}/healthz/")  # connect before the start
        sessions.append((session, servers[n % 4].url))

    responses = all_at_once([
        lambda session=session, url=url: session.post(f"{url}/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
        for session, url in sessions
    ])

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [401] * 7, [r.text for r in responses]
    (winner,) = [r.json() for r in responses if r.status_code == 200]
    assert {r.json()["code"] for r in responses if r.status_code == 401} == {"token_used"}
    (family,) = TokenFamily.objects.filter(user=racer)
    assert family.revoked_at is None
    assert family.current_jti == UntypedToken(winner["refresh"])["jti"]

    # Later, the replaced token comes back: a copy is in other hands.
    TokenFamily.objects.filter(pk=family.pk).update(rotated_at=F("rotated_at") - timedelta(minutes=1))
    reused = requests.post(f"{servers[1].url}/api/auth/token/refresh/", json={"refresh": tokens["refresh"]}, timeout=30)
    assert reused.status_code == 401 and reused.json()["code"] == "token_reused"
    family.refresh_from_db()
    assert family.revoked_at is not None and family.revoke_reason == "reuse"
    assert requests.post(f"{servers[2].url}/api/auth/token/refresh/", json={"refresh": winner["refresh"]}, timeout=30).status_code == 401


def test_session_logins_on_two_servers_share_the_apis_counters(start_server):
    """Ten wrong passwords at /accounts/login/ and /admin/login/, spread over two servers, then the right one is a 429."""
    UserFactory(username="keeper", is_staff=True)
    servers = [start_server().wait_until_up(), start_server().wait_until_up()]
    browser = requests.Session()
    browser.get(f"{servers[0].url}/accounts/login/")

    def attempt(n, password):
        path = "/admin/login/" if n % 3 == 0 else "/accounts/login/"
        return browser.post(
            f"{servers[n % 2].url}{path}", allow_redirects=False,
            data={"username": "keeper", "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        )

    assert [attempt(n, f"wrong{n}").status_code for n in range(10)] == [200] * 10
    for n in range(4):
        refused = attempt(n, PASSWORD)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "Too many login attempts" in refused.text
    assert "sessionid" not in browser.cookies
    api = requests.post(f"{servers[1].url}/api/auth/token/", json={"username": "keeper", "password": PASSWORD}, timeout=30)
    assert api.status_code == 429


def register(client, server, name, forwarded_for):
    return client.post(
        f"{server.url}/api/auth/register/", headers={"X-Forwarded-For": forwarded_for},
        json={"username": name, "email": f"{name}@example.com", "password": "a-long-passphrase-9"},
    ).status_code


def test_a_clients_own_forwarded_for_does_not_change_its_throttle_identity(start_server):
    """A client that is no trusted proxy is counted by its address, whatever X-Forwarded-For it sends."""
    server = start_server({"FORWARDED_ALLOW_IPS": "127.0.0.1", "API_REGISTER_RATE": "3/hour"}).wait_until_up()
    client = requests.Session()
    client.mount("http://", FromAddress("127.0.0.2"))

    codes = [register(client, server, f"spoof{n}", f"203.0.113.{n}") for n in range(6)]

    assert [code == 429 for code in codes] == [False] * 3 + [True] * 3, codes
    assert codes[:3] == [202] * 3


def test_a_trusted_proxys_forwarded_for_names_the_client(start_server):
    """From FORWARDED_ALLOW_IPS, the client is the last address the proxy appended, not one the client wrote before it."""
    server = start_server({"FORWARDED_ALLOW_IPS": "127.0.0.1", "API_REGISTER_RATE": "3/hour"}).wait_until_up()
    proxy = requests.Session()

    codes = [register(proxy, server, f"proxied{n}", f"10.9.9.{n}, 203.0.113.7") for n in range(4)]

    assert [code == 429 for code in codes] == [False] * 3 + [True], codes
    assert codes[:3] == [202] * 3
    assert register(proxy, server, "neighbour", "203.0.113.8") == 202


def test_parallel_wrong_passwords_get_no_more_tries_than_the_limit(start_server):
    """Twenty wrong passwords for one account at once, on four servers: ten are checked, ten refused."""
    UserFactory(username="target")
    servers = [start_server() for _ in range(4)]
    for server in servers:
        server.wait_until_up()
    sessions = []
    for n in range(20):
        session = requests.Session()
        session.get(f"{servers[n % 4].url}/healthz/")
        sessions.append((session, servers[n % 4].url))

    responses = all_at_once([
        lambda session=session, url=url, n=n: session.post(
            f"{url}/api/auth/token/", json={"username": "target", "password": f"wrong{n}"})
        for n, (session, url) in enumerate(sessions)
    ])

    assert sorted(r.status_code for r in responses) == [401] * 10 + [429] * 10

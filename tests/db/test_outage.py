"""Database outages in one process: which errors mean "unreachable", failing fast while they last, the 503s."""

import threading
import time

import psycopg
import pytest
from django.db import OperationalError, connection
from django.test import Client
from psycopg_pool import ConnectionPool, PoolTimeout
from rest_framework_simplejwt.tokens import RefreshToken

from jobs.backends.postgresql.base import FailFastPool
from jobs.outage import Availability, DatabaseUnavailable, ReportingConnection, availability, is_database_unavailable
from tests.conftest import database_proxy_target, wait_for
from tests.factories import UserFactory
from tests.tcp_proxy import TcpProxy


def wrapped(error: Exception) -> OperationalError:
    """Return `error` as Django's wrapper raises it, with the driver's error as its cause."""
    try:
        try:
            raise error
        except Exception as exc:
            raise OperationalError(*exc.args) from exc
    except OperationalError as django_error:
        return django_error


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("connection failed: Connection refused"),
    psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
    psycopg.InterfaceError("the connection is closed"),
    PoolTimeout("couldn't get a connection after 10.00 sec"),
    DatabaseUnavailable("the database is unreachable"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),
    psycopg.errors.TooManyConnections("sorry, too many clients already"),
], ids=lambda error: type(error).__name__)
def test_errors_of_an_unreachable_database(error):
    """Count failures to connect, lost connections, the pool's timeout and a server refusing sessions as unreachable."""
    assert is_database_unavailable(error)
    assert is_database_unavailable(wrapped(error))


@pytest.mark.parametrize("error", [
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg.errors.UniqueViolation("duplicate key value"),
    ValueError("not a database error"),
    OperationalError("raised by Django itself"),
], ids=lambda error: type(error).__name__)
def test_errors_about_a_statement_are_not_an_outage(error):
    """Leave errors PostgreSQL reports about a statement, and anything else, to be the 500s they are."""
    assert not is_database_unavailable(error)
    assert not is_database_unavailable(wrapped(error))


def test_an_outage_refuses_at_once_and_ends_with_the_first_successful_probe():
    """Refuse connections from the first failed attempt, probe in the background, and end the outage when a probe connects."""
    probes = []
    state = Availability(probe_interval=0.05)

    def probe():
        probes.append(time.monotonic())
        if len(probes) < 3:
            state.connection_failed(psycopg.OperationalError("still refused"), probe)
            raise psycopg.OperationalError("still refused")
        state.connection_made()

    state.check()
    state.connection_failed(psycopg.OperationalError("connection refused"), probe)
    assert state.down
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="still refused|connection refused"):
        state.check()
    assert time.monotonic() - started < 0.01

    wait_for(lambda: not state.down, timeout=5, message="a probe to connect")
    assert len(probes) == 3
    state.check()
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "skipjack-db-probe" and t is state._prober],
             timeout=5, message="the prober to stop")


@pytest.fixture
def outage_over_at_teardown():
    """Leave the process's availability as it was: up."""
    yield
    availability.connection_made()


@pytest.fixture
def database_proxy(db):
    with TcpProxy(*database_proxy_target()) as proxy:
        yield proxy


@pytest.fixture
def proxied_pool(database_proxy, outage_over_at_teardown):
    """A psycopg pool made as Django makes the project's, to the test database through the proxy."""
    s = connection.settings_dict
    pool = ConnectionPool(
        kwargs={"host": "127.0.0.1", "port": database_proxy.port, "dbname": s["NAME"], "user": s["USER"],
                "password": s["PASSWORD"] or None, "connect_timeout": 2, "autocommit": True},
        connection_class=ReportingConnection, check=ConnectionPool.check_connection,
        min_size=1, max_size=4, timeout=10, reconnect_timeout=2, open=True,
    )
    pool.wait()
    yield FailFastPool(pool)
    pool.close()


@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
def test_getconn_gives_up_once_connecting_fails_instead_of_waiting_the_pool_timeout(database_proxy, proxied_pool, outage):
    """Raise DatabaseUnavailable once the pool's attempt to connect fails, then at once until a probe connects again."""
    conn = proxied_pool.getconn()
    proxied_pool.putconn(conn)
    database_proxy.cut(outage)

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        proxied_pool.getconn()
    # At once when refused; after connect_timeout (2 s) when never answered. The pool's timeout is 10 s.
    assert time.monotonic() - started < (1 if outage == "refuse" else 4)
    assert availability.down

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        proxied_pool.getconn()
    assert time.monotonic() - started < 0.05

    database_proxy.heal()
    wait_for(lambda: not availability.down, timeout=5, message="the probe to connect again")
    conn = proxied_pool.getconn(timeout=3)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    proxied_pool.putconn(conn)


@pytest.fixture
def database_down(transactional_db, outage_over_at_teardown):
    """Make this process take the database for unreachable, as after a failed connection, until teardown.

    The database itself stays up for the test's own queries; the process's
    next new connection is refused, so the Django connection is closed first.
    """

    def mark_down():
        def probe():
            raise psycopg.OperationalError("still down (test)")

        availability.connection_failed(psycopg.OperationalError("connection refused (test)"), probe)
        connection.close()

    return mark_down


def test_api_answers_503_json_with_retry_after_when_authentication_finds_the_database_down(database_down):
    """Answer 503 JSON with Retry-After, at once, when the JWT's user cannot be read."""
    user = UserFactory()
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    database_down()

    for method, path in (("post", "/api/jobs/"), ("get", "/api/jobs/"), ("get", "/api/jobs/stats/")):
        started = time.monotonic()
        response = getattr(client, method)(path, {"type": "reverse_string", "payload": "x"} if method == "post" else None,
                                           content_type="application/json")
        assert time.monotonic() - started < 0.5
        assert response.status_code == 503, (path, response.content[:200])
        assert response["Content-Type"] == "application/json"
        assert response["Retry-After"] == "5"
        assert response.json() == {"detail": "The database is unreachable. Try again in 5 seconds.", "retry_after": 5}


def test_pages_answer_a_plain_503_with_retry_after_when_the_database_is_down(database_down):
    """Answer a signed-in page with a plain 503 page, not the 500 one, when its session's user cannot be read."""
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory())
    database_down()

    response = client.get("/dashboard/")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == "5"
    assert b"Service Unavailable (503)" in response.content


def test_other_server_errors_stay_500(transactional_db, monkeypatch):
    """Keep Django's 500 page for an error that does not mean the database is unreachable."""
    from jobs.api import views

    def deadlocked(*args, **kwargs):
        raise wrapped(psycopg.errors.DeadlockDetected("deadlock detected"))

    monkeypatch.setattr(views.selectors, "job_stats", deadlocked)
    user = UserFactory()
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    response = client.get("/api/jobs/stats/")
    assert response.status_code == 500


def test_probes_answer_while_the_database_is_taken_for_down(database_down, client):
    """Keep /healthz/ and /readyz/ answering as they always have: they never wait on the pool."""
    database_down()
    assert client.get("/healthz/").status_code == 200
    assert client.get("/readyz/").json()["checks"]["database"] == "ok"

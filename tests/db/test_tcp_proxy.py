"""The tests' TCP proxy, between psycopg and the real test database."""

import threading
import time

import psycopg
import pytest
from django.db import connection

from tests.conftest import database_proxy_target
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db


@pytest.fixture
def database():
    """Return where the test database is (a host or a socket directory), its port, and connection parameters."""
    s = connection.settings_dict
    return (*database_proxy_target(), {"dbname": s["NAME"], "user": s["USER"], "password": s["PASSWORD"] or None})


def connect(proxy: TcpProxy, params: dict, timeout: float = 2) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=proxy.port, connect_timeout=timeout, autocommit=True, **params)


def select_one(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT 1").fetchone()[0]


def proxy_threads(proxy: TcpProxy) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"tcp-proxy-{proxy.port}-")]


def test_cut_breaks_open_connections_and_refuses_new_ones_until_healed(database):
    """Forward to PostgreSQL, reset open connections on cut(), refuse new ones at once, and forward again after heal()."""
    host, port, params = database
    with TcpProxy(host, port) as proxy:
        conn = connect(proxy, params)
        assert select_one(conn) == 1
        assert proxy.open_connections == 1

        proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            select_one(conn)
        conn.close()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            connect(proxy, params, timeout=5)
        assert time.monotonic() - started < 1, "a refused connection fails at once"

        proxy.heal()
        with connect(proxy, params) as again:
            assert select_one(again) == 1


def test_a_blackhole_leaves_new_connections_hanging_until_the_clients_timeout(database):
    """Accept a new connection during a blackhole but never answer it, so the client's own connect_timeout ends it."""
    host, port, params = database
    with TcpProxy(host, port, mode="blackhole") as proxy:
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            connect(proxy, params, timeout=1)
        assert time.monotonic() - started >= 0.9

        proxy.heal()
        with connect(proxy, params) as conn:
            assert select_one(conn) == 1


def test_a_blackhole_without_drop_stalls_open_connections_until_healed(database):
    """Hold a query sent during a blackhole cut with drop=False, and deliver it and its answer after heal()."""
    host, port, params = database
    with TcpProxy(host, port) as proxy, connect(proxy, params) as conn:
        assert select_one(conn) == 1
        proxy.cut("blackhole", drop=False)
        answers = []
        query = threading.Thread(target=lambda: answers.append(select_one(conn)))
        query.start()
        query.join(0.5)
        assert query.is_alive() and answers == []

        proxy.heal()
        query.join(5)
        assert answers == [1]


def test_close_joins_every_thread_it_started(database):
    """Leave no thread behind after close(), even with connections open, stalled and held."""
    host, port, params = database
    proxy = TcpProxy(host, port)
    open_conn = connect(proxy, params)
    stalled_conn = connect(proxy, params)
    proxy.cut("blackhole", drop=False)
    failures = []

    def expect_failure(call, *args):
        try:
            call(*args)
        except psycopg.OperationalError as exc:
            failures.append(exc)

    stalled = threading.Thread(target=expect_failure, args=(select_one, stalled_conn))
    held = threading.Thread(target=expect_failure, args=(connect, proxy, params, 5))
    stalled.start()
    held.start()
    time.sleep(0.3)
    assert proxy_threads(proxy)

    proxy.close()
    assert proxy_threads(proxy) == []
    stalled.join(5)
    held.join(5)
    assert len(failures) == 2, "the stalled query and the held connection both fail at close()"
    with pytest.raises(psycopg.OperationalError):
        select_one(open_conn)
    open_conn.close()
    stalled_conn.close()

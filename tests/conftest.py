import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from tests import sample_handlers  # noqa: F401 - registers the test-only job types
from tests.factories import JobFactory, UserFactory
from tests.sample_handlers import EFFECTS_TABLE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _stop_the_embedded_redis_at_the_end():
    """Leave no embedded Redis server running after the session (only used with REDIS_URL unset)."""
    yield
    from queueproject import embedded

    embedded.stop_redis()


@pytest.fixture(autouse=True)
def _forget_worker_connection_settings():
    """Undo, after a test that ran a Worker in-process, the setting it makes on every connection of the process."""
    yield
    from django.db.backends.signals import connection_created

    from jobs import db

    if connection_created.disconnect(dispatch_uid="jobs.db.plan_every_run") or db._PLANNED_EVERY_RUN:
        db._PLANNED_EVERY_RUN.clear()
        # The pooled connections keep the session setting: start the next test with new ones.
        connection.close_pool()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def job_factory(db):
    return JobFactory


def database_url_for_tests() -> str:
    """Return a DATABASE_URL that points child processes at the test database."""
    s = connection.settings_dict
    host = s["HOST"] or ""
    if host.startswith("/"):
        host = quote(host, safe="")
    auth = quote(s["USER"] or "", safe="")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"], safe="")
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


def database_proxy_target() -> tuple[str, int]:
    """Return where a TcpProxy in front of the test database connects: a host (or socket directory) and port."""
    s = connection.settings_dict
    return s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432)


def proxied_database_url(proxy) -> str:
    """Return a DATABASE_URL for the test database through `proxy` (a tests.tcp_proxy.TcpProxy)."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"], safe="")
    return f"postgres://{auth}@127.0.0.1:{proxy.port}/{s['NAME']}"


class ChildProcess:
    """A real subprocess of the project on the test database, its output kept in a file."""

    def __init__(self, argv, env=None):
        from django.conf import settings

        child_env = {
            **os.environ,
            "DATABASE_URL": database_url_for_tests(),
            "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
            "DB_POOL_MIN_SIZE": "1",
            "JOBS_HANDLER_MODULES": "tests.sample_handlers",
            **(env or {}),
        }
        # A file, not a pipe: nobody reads a pipe while the child runs, and
        # a full pipe would block its logging.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=child_env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait(self, timeout=60) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        """Return everything the child printed so far."""
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WorkerProcess(ChildProcess):
    """A real `manage.py runworker`."""

    def __init__(self, *args, env=None):
        super().__init__([str(ROOT / "manage.py"), "runworker", *args], env=env)


@pytest.fixture
def start_worker(transactional_db):
    """Start `manage.py runworker` subprocesses; stop whatever is left at teardown."""
    started = []

    def start(*args, env=None):
        worker = WorkerProcess(*args, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess(ChildProcess):
    """A real uvicorn serving the project."""

    def __init__(self, env=None, extra_args=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            ["-m", "uvicorn", "queueproject.asgi:application", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log", *extra_args],
            env=env,
        )

    def wait_until_up(self, timeout=30):
        import urllib.request

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"server exited: {self.output()}")
            try:
                urllib.request.urlopen(self.url + "/api/schema/", timeout=1)  # noqa: S310 - an http URL of the server the test started
                return True
            except OSError:
                return False

        wait_for(up, timeout=timeout, interval=0.2, message=f"server on {self.url}")
        return self


@pytest.fixture
def start_server(transactional_db):
    """Start uvicorn processes serving the app on the test database; stop them at teardown."""
    started = []

    def start(env=None, extra_args=()):
        server = ServerProcess(env=env, extra_args=extra_args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def effects():
    """A fresh table that record_effect jobs write one row per execution to."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {EFFECTS_TABLE}")
        cursor.execute(f"CREATE TABLE {EFFECTS_TABLE} (job_id bigint NOT NULL, pid int NOT NULL)")
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {EFFECTS_TABLE}")


def wait_for(predicate, timeout=30.0, interval=0.05, message="condition"):
    """Poll `predicate` until it returns a truthy value; return it, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)

"""/healthz/, /readyz/ and the worker's health check, against real PostgreSQL and Redis."""

import pytest
import requests
from django.core.management import CommandError, call_command

from jobs.models import Worker
from tests.conftest import wait_for
from tests.db.test_health import (
    UNREACHABLE_DATABASE,
    forget_migration_check,  # noqa: F401 - fixtures
    serving,
)


def test_readyz_names_the_database_when_it_is_unreachable(start_server):
    """Answer 503 naming the database, in a server whose PostgreSQL refuses connections; /healthz/ stays 200."""
    server = start_server({"DATABASE_URL": UNREACHABLE_DATABASE})
    wait_for(lambda: serving(server.url), timeout=30, message="the server")

    response = requests.get(server.url + "/readyz/", timeout=10)

    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "unavailable"
    assert report["failing"] == ["database", "migrations"]
    assert report["checks"]["database"].startswith("error: OperationalError")
    assert report["checks"]["redis"] == "ok"
    assert report["checks"]["migrations"] == "skipped"
    assert requests.get(server.url + "/healthz/", timeout=5).status_code == 200


@pytest.mark.process
def test_worker_health_follows_the_workers_heartbeat(start_worker):
    """Succeed while a worker on this host heartbeats, fail once it has stopped."""
    with pytest.raises(CommandError, match="No live worker"):
        call_command("worker_health")

    worker = start_worker("--poll-interval", "0.2")
    wait_for(lambda: Worker.objects.filter(pid=worker.pid).exists(), message="the worker to register")
    call_command("worker_health")
    with pytest.raises(CommandError):
        call_command("worker_health", hostname="some-other-host")

    worker.stop()
    with pytest.raises(CommandError, match="No live worker"):
        call_command("worker_health")

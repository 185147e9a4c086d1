"""Liveness and readiness probes: /healthz/ and /readyz/.

/healthz/ answers 200 while the process can serve a request at all; it
touches nothing else, so an outage of the database never gets a healthy web
process restarted. /readyz/ answers 200 only if PostgreSQL and Redis answer
and every migration is applied, and 503 otherwise, naming the components
that failed:

    {"status": "unavailable", "failing": ["database"],
     "checks": {"database": "error: connection refused", "redis": "ok", "migrations": "skipped"}}

Both are answered by a middleware placed before host validation and the
HTTPS redirect, so a load balancer or Docker can probe them at any address
and over plain HTTP. Each check has a short timeout (READINESS_TIMEOUT
seconds), so a probe returns before the prober gives up.
"""

import logging
import threading

import psycopg
import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse

logger = logging.getLogger("jobs.health")

LIVENESS_PATH = "/healthz/"
READINESS_PATH = "/readyz/"

_migrations_applied = False  # once true, stays true for the life of the process
_redis_clients: dict[str, redis.Redis] = {}
_redis_lock = threading.Lock()


def timeout() -> float:
    return float(getattr(settings, "READINESS_TIMEOUT", 2.0))


def check_database() -> None:
    """Connect to PostgreSQL afresh and run SELECT 1; raise if either fails.

    A new connection, not one from the pool: the pool would wait up to its
    own timeout for a connection, and a connection it already holds says
    nothing about whether a new one can be made.
    """
    params = connections[DEFAULT_DB_ALIAS].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params["connect_timeout"] = max(1, round(timeout()))
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("SELECT 1")


def check_redis() -> None:
    """PING the Redis at REDIS_URL; raise if it does not answer."""
    url = settings.REDIS_URL
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = _redis_clients[url] = redis.Redis.from_url(
                url, socket_connect_timeout=timeout(), socket_timeout=timeout()
            )
    client.ping()


def check_migrations() -> None:
    """Raise if any migration is not applied to the database."""
    global _migrations_applied
    if _migrations_applied:
        return
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in plan[:5])
        more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
        raise RuntimeError(f"{len(plan)} unapplied: {names}{more}")
    _migrations_applied = True


def readiness() -> dict:
    """Run every check; return the report /readyz/ serves."""
    checks = {}
    # Redis only where the project uses one: Skipjack's own, and any project that sets REDIS_URL.
    components = [("database", check_database)]
    if getattr(settings, "REDIS_URL", None) is not None:
        components.append(("redis", check_redis))
    for name, check in components:
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", and is reported
            checks[name] = f"error: {type(exc).__name__}: {exc}".strip()
    if checks["database"] == "ok":
        try:
            check_migrations()
            checks["migrations"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["migrations"] = f"error: {exc}"
    else:
        checks["migrations"] = "skipped"
    failing = [name for name, state in checks.items() if state.startswith("error")]
    if failing:
        failing += [name for name, state in checks.items() if state == "skipped"]
    return {"status": "unavailable" if failing else "ok", "failing": failing, "checks": checks}


def readiness_response() -> JsonResponse:
    report = readiness()
    if report["failing"]:
        logger.warning("not ready: %s", ", ".join(report["failing"]),
                       extra={"event": "not_ready", "checks": report["checks"]})
    return JsonResponse(report, status=503 if report["failing"] else 200)


class HealthCheckMiddleware:
    """Answer /healthz/ and /readyz/ before anything else looks at the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == LIVENESS_PATH:
            return JsonResponse({"status": "ok"})
        if request.path == READINESS_PATH:
            return readiness_response()
        return self.get_response(request)

"""Django's PostgreSQL backend, with django-prometheus's metrics, that fails fast in a database outage.

What changes is how a connection is taken from psycopg's pool (jobs.outage
explains why):

- The pool makes its connections with jobs.outage.ReportingConnection, so
  the process learns of every attempt that fails or succeeds.
- While the database is known to be down, the pool is not asked at all:
  DatabaseUnavailable is raised at once.
- Otherwise the pool is asked in short waits instead of one wait of its
  whole timeout, and the request gives up as soon as an attempt to connect
  made meanwhile has failed.

Django wraps both errors in django.db.OperationalError, as it does the
pool's own timeout.
"""

import time

from django.db import DEFAULT_DB_ALIAS
from django_prometheus.db.backends.postgresql import base
from psycopg_pool import PoolTimeout

from jobs.outage import ReportingConnection, availability

# Seconds of each wait for a connection, between two looks at whether
# connecting has failed meanwhile.
WAIT_SLICE = 0.1


class FailFastPool:
    """The process's psycopg pool, whose getconn() gives up once connecting is known to fail.

    Django uses getconn(), open() and close() of its pool; only getconn()
    changes, and every other attribute is the pool's own.
    """

    def __init__(self, pool):
        self.pool = pool

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def getconn(self, timeout: float | None = None):
        availability.check()
        pool = self.pool
        started = time.monotonic()
        deadline = started + (pool.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            try:
                conn = pool.getconn(timeout=max(0.001, min(WAIT_SLICE, remaining)))
                break
            except PoolTimeout:
                if availability.failed_since(started):
                    raise availability.unavailable() from None
                if time.monotonic() >= deadline:
                    raise PoolTimeout(f"couldn't get a connection after {deadline - started:.2f} sec") from None
            stats = pool.get_stats()
            if stats["pool_size"] >= stats["pool_max"]:
                # The pool is at its largest, so this is most likely a wait for
                # a busy connection to come back rather than for the database.
                # One wait keeps this client's place in the pool's queue, where
                # another short one would put it behind clients that came later.
                conn = pool.getconn(timeout=max(0.001, deadline - time.monotonic()))
                break
        # The pool tested the connection before handing it out (CONN_HEALTH_CHECKS).
        availability.connection_made()
        return conn


class DatabaseWrapper(base.DatabaseWrapper):
    """django-prometheus's wrapper, whose pool makes ReportingConnections and is asked through FailFastPool."""

    def __init__(self, settings_dict, alias=DEFAULT_DB_ALIAS):
        options = settings_dict.setdefault("OPTIONS", {})
        if options.get("pool"):
            if options["pool"] is True:
                options["pool"] = {}
            options["pool"].setdefault("connection_class", ReportingConnection)
        super().__init__(settings_dict, alias)
        self._fail_fast_pool = None

    @property
    def pool(self):
        pool = super().pool
        if pool is None:
            return None
        if self._fail_fast_pool is None or self._fail_fast_pool.pool is not pool:
            self._fail_fast_pool = FailFastPool(pool)
        return self._fail_fast_pool

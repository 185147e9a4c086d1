"""Database outages: notice them, fail fast while they last, and tell clients when to come back.

Left to itself, a request that needs PostgreSQL while it cannot be reached
waits out the pool's whole timeout (DB_POOL_TIMEOUT, 10 s): psycopg's pool
makes connections in background threads and retries a failed one later, and
a client waiting in getconn() hears nothing of the failures until its wait
ends. The web process serves its requests on one thread
(queueproject.asgi), so every request behind that one waited too.

So each process keeps what it knows about reaching the database, in
`availability`:

- Every connection the pool opens goes through ReportingConnection, which
  reports each failure and success.
- From a failed attempt until the next successful one, the database is
  down: asking for a new connection raises DatabaseUnavailable at once, and
  a background thread tries a fresh connection every PROBE_INTERVAL seconds.
- Any connection that succeeds, the probe's or the pool's, ends the outage.

jobs.backends.postgresql puts this between Django and its pool, and
is_database_unavailable() tells the error handlers which errors mean
"unreachable, try again" (503 with Retry-After) rather than a bug (500).
"""

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from django.db import InterfaceError as DjangoInterfaceError

logger = logging.getLogger("jobs.outage")

# Seconds between two probes of an unreachable database: how soon after it is
# back this process notices.
PROBE_INTERVAL = 1.0
# What Retry-After tells a client refused during an outage, in seconds.
RETRY_AFTER = 5

# SQLSTATEs of a server that refuses work for now rather than of a bad
# request: admin or crash shutdown, still starting up, too many connections.
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


class DatabaseUnavailable(psycopg.OperationalError):
    """The database is known to be unreachable; raised without trying it again."""


def is_database_unavailable(exc: BaseException | None) -> bool:
    """Return True if `exc`, or an error it was raised from, means the database cannot be reached.

    That is a failure to connect or a lost connection (psycopg's errors
    without a SQLSTATE, or of class 08), the pool's timeout, or a server
    refusing sessions for now. An error PostgreSQL reports about a
    statement (a deadlock, a statement timeout, a constraint) is not one.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (psycopg.InterfaceError, DjangoInterfaceError)):
            return True
        if isinstance(exc, psycopg.OperationalError):
            sqlstate = exc.sqlstate
            return sqlstate is None or sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES
        exc = exc.__cause__
    return False


def unavailable_message() -> str:
    return f"The database is unreachable. Try again in {RETRY_AFTER} seconds."


class Availability:
    """What this process knows about reaching PostgreSQL: up, or down since a failed connection."""

    def __init__(self, probe_interval: float = PROBE_INTERVAL):
        self.probe_interval = probe_interval
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the failure that began the outage
        self._last_failure = 0.0
        self._last_success = 0.0  # when the last outage ended
        self._error = ""
        self._probe: Callable[[], object] | None = None
        self._prober: threading.Thread | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def check(self) -> None:
        """Raise DatabaseUnavailable while the database is known to be down."""
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            self._ensure_prober()
        raise self.unavailable()

    def unavailable(self) -> DatabaseUnavailable:
        """Return the error that refuses a connection during this outage."""
        return DatabaseUnavailable(f"the database is unreachable: {self._error}")

    def failed_since(self, moment: float) -> bool:
        """Return True if the database is down after an attempt that failed at or after `moment`."""
        return self._down_since is not None and self._last_failure >= moment

    def connection_failed(self, error: BaseException, probe: Callable[[], object], started: float | None = None) -> None:
        """Record a failed attempt that began at `started`; `probe` makes one more the same way, for the prober.

        An attempt that began before the last success says nothing new: one
        left hanging by a partition can time out after the database is back.
        """
        with self._lock:
            now = time.monotonic()
            if started is not None and started < self._last_success:
                return
            self._last_failure = now
            self._error = str(error).strip() or type(error).__name__
            self._probe = probe
            if self._down_since is None:
                self._down_since = self._last_failure
                logger.warning("database unreachable, failing fast until a connection succeeds: %s", self._error,
                               extra={"event": "db_unavailable"})
            self._ensure_prober()

    def connection_made(self) -> None:
        """Record a successful connection: whatever outage there was is over."""
        if self._down_since is None:
            return  # the common case, without the lock: nothing to end
        with self._lock:
            if self._down_since is None:
                return
            self._last_success = time.monotonic()
            lasted = time.monotonic() - self._down_since
            self._down_since = None
        logger.info("database reachable again after %.1fs", lasted,
                       extra={"event": "db_available", "duration_ms": round(lasted * 1000)})

    def _ensure_prober(self) -> None:
        # Called with the lock held. A prober that is not alive (it ended, or
        # its process forked) is replaced, so an outage always has one.
        if self._prober is None or not self._prober.is_alive():
            self._prober = threading.Thread(target=self._probe_until_up, name="skipjack-db-probe", daemon=True)
            self._prober.start()

    def _probe_until_up(self) -> None:
        while True:
            time.sleep(self.probe_interval)
            with self._lock:
                probe = self._probe
                if self._down_since is None or probe is None:
                    self._prober = None
                    return
            try:
                probe()  # reports its own failure or success
            except Exception:  # noqa: BLE001, S110 - recorded by connection_failed(); the next probe follows
                pass


availability = Availability()


class ReportingConnection(psycopg.Connection):
    """A psycopg connection that reports each attempt to connect to `availability`.

    The pool builds its connections with this class (jobs.backends.postgresql
    sets it as the pool's connection_class), so its background attempts,
    which nobody waiting on the pool hears of, mark the outage's start and end.
    """

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs):
        started = time.monotonic()
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            availability.connection_failed(exc, lambda: cls.connect(conninfo, **kwargs).close(), started)
            raise
        availability.connection_made()
        return conn

"""One leader among all workers for the queue's maintenance, elected by a lease in PostgreSQL.

The leader runs rescue, expiry, pruning and roll-ups: work any worker
could do, but that every worker doing every second only multiplies. The
lease is one row of jobs_leadership per role, and one statement both takes
and renews it:

- Each worker calls `held()` once per poll interval. The statement renews
  the lease if this worker holds it, takes it if it has expired, and
  otherwise changes nothing; it returns a row only to the leader.
- A leader that stops gracefully gives its lease up, and the next worker to
  ask takes over at once. One that crashes, is killed (`kill -9`), freezes
  (SIGSTOP) or loses its network keeps the lease only until it expires
  (JOBS_LEADER_LEASE_SECONDS), after which another worker takes over.
- A frozen leader that wakes up learns at its next call that it no longer
  leads, before it runs another round.

The lease and the clock that ends it are the database's, so clock skew
between worker hosts does not matter. Two leaders can overlap only while a
leader frozen in the middle of a round finishes it. Every maintenance
statement is safe to run twice at once (each locks its rows with SKIP
LOCKED; the roll-up holds an advisory lock of its own), so an overlap
costs time, never correctness.
"""

import logging
import uuid

from django.db import connection

from jobs import conf
from jobs.models import Leadership as LeadershipRow

logger = logging.getLogger("jobs.worker")

TABLE = LeadershipRow._meta.db_table
MAINTENANCE = "maintenance"


class Leadership:
    """One worker's claim to lead `role`, renewed by calling `held()`."""

    def __init__(self, worker_id: uuid.UUID | None = None, role: str = MAINTENANCE, lease_seconds: float | None = None):
        self.worker_id = worker_id
        self.role = role
        self.lease_seconds = lease_seconds
        self.is_leader = False

    def held(self) -> bool:
        """Renew or take the lease if it is free or already ours; return True if this worker leads now."""
        lease = self.lease_seconds if self.lease_seconds is not None else conf.get("JOBS_LEADER_LEASE_SECONDS")
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {TABLE} AS l (role, worker_id, expires_at)
                VALUES (%s, %s, statement_timestamp() + make_interval(secs => %s))
                ON CONFLICT (role) DO UPDATE SET worker_id = excluded.worker_id, expires_at = excluded.expires_at
                WHERE l.worker_id = excluded.worker_id OR l.expires_at < statement_timestamp()
                RETURNING 1
                """,  # noqa: S608 - a constant table name; values are parameters
                [self.role, self.worker_id, lease],
            )
            leads = cursor.fetchone() is not None
        if leads != self.is_leader:
            if leads:
                logger.info("leading the %s of the queue", self.role, extra={"event": "leader", "worker_id": str(self.worker_id)})
            else:
                logger.warning("another worker leads the %s now", self.role,
                               extra={"event": "leader_lost", "worker_id": str(self.worker_id)})
        self.is_leader = leads
        return leads

    def release(self) -> None:
        """Give the lease up, so that the next worker to ask takes over at once."""
        if not self.is_leader:
            return
        self.is_leader = False
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {TABLE} WHERE role = %s AND worker_id = %s", [self.role, self.worker_id])  # noqa: S608 - a constant table name; values are parameters
        logger.info("no longer leading the %s of the queue", self.role,
                    extra={"event": "leader_released", "worker_id": str(self.worker_id)})

"""Durable counters behind the queue's Prometheus counters and histograms.

Jobs are enqueued by every web process and finished by every worker
process, and any web process may be scraped, so the counts live in
PostgreSQL (the JobCounter table), not in one process's memory. They are
right with any number of processes, survive restarts, and do not go down
when finished jobs are pruned.

Each count is written by the statement that makes the change it counts: a
data-modifying CTE of that statement (jobs/queue/queries.sql) inserts it
next to the UPDATE or INSERT of the jobs. A change and its count commit or
roll back together, the hot path gains no round trip, and since rows are
only ever inserted, two writers never wait for each other. `roll_up()` folds the rows of each
metric and label set into one; readers sum, so a roll-up never changes what
they see.

The throughput chart's per-minute counts (the FinishedCount table) are
kept the same way, next to the UPDATE that finishes the jobs, and `roll_up()` folds them per minute and owner, and
drops the minutes past FINISHED_RETENTION.
"""

import math
from datetime import timedelta

from django.db import connection, transaction

from jobs.models import FinishedCount, JobCounter

COUNTER_TABLE = JobCounter._meta.db_table
FINISHED_TABLE = FinishedCount._meta.db_table
# The finished counts' buckets, and how long they are kept.
FINISHED_BUCKET = timedelta(minutes=1)
FINISHED_RETENTION = timedelta(hours=1)

# Counter name -> what it counts. Each is labelled with the job's type and queue.
COUNTERS = {
    "enqueued": "Jobs stored by enqueue.",
    "completed": "Jobs that finished successfully.",
    "failed": "Attempts that failed: the handler raised, timed out, or its worker stopped renewing the lease.",
    "retried": "Failed attempts scheduled to run again after a backoff.",
    "dead": "Jobs moved to the dead-letter queue.",
}

# Histogram name -> what it measures. Each is labelled with the job's type.
HISTOGRAMS = {
    "queue_wait_seconds": "Seconds from when a job was due (its run_at) until a slot started it, per finished attempt.",
    "run_seconds": "Seconds a handler ran, per attempt that completed, failed or timed out.",
}

# Upper bounds of the histogram buckets, in seconds; the last catches the rest.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, math.inf)

# Key of the advisory lock a roll-up holds; any constant unique to this use.
ROLL_UP_LOCK = 0x736B6A6B_0001

def roll_up() -> bool:
    """Fold the rows of each metric and label set, and of each minute and owner, into one.

    Also drops the finished counts past FINISHED_RETENTION. Returns False if
    another process is at it.

    Only label sets with more than one row are rewritten. Rows inserted by
    transactions that commit meanwhile are left for the next roll-up.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # One roll-up at a time: a second would only wait for the first's row locks.
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ROLL_UP_LOCK])
        if not cursor.fetchone()[0]:
            return False
        cursor.execute(
            f"""
            WITH split AS (
                SELECT name, type, queue, le FROM {COUNTER_TABLE}
                GROUP BY name, type, queue, le HAVING count(*) > 1
            ), moved AS (
                DELETE FROM {COUNTER_TABLE} AS t USING split AS s
                WHERE t.name = s.name AND t.type = s.type AND t.queue = s.queue AND t.le IS NOT DISTINCT FROM s.le
                RETURNING t.name, t.type, t.queue, t.le, t.value
            )
            INSERT INTO {COUNTER_TABLE} (name, type, queue, le, value)
            SELECT name, type, queue, le, sum(value) FROM moved GROUP BY name, type, queue, le
            """  # noqa: S608 - table names and constants only; values are parameters
        )
        cursor.execute(
            f"""
            WITH expired AS (
                DELETE FROM {FINISHED_TABLE} WHERE minute < statement_timestamp() - %s
            ), split AS (
                SELECT minute, owner_id FROM {FINISHED_TABLE}
                WHERE minute >= statement_timestamp() - %s
                GROUP BY minute, owner_id HAVING count(*) > 1
            ), moved AS (
                DELETE FROM {FINISHED_TABLE} AS f USING split AS s
                WHERE f.minute = s.minute AND f.owner_id IS NOT DISTINCT FROM s.owner_id
                RETURNING f.minute, f.owner_id, f.completed, f.dead
            )
            INSERT INTO {FINISHED_TABLE} (minute, owner_id, completed, dead)
            SELECT minute, owner_id, sum(completed), sum(dead) FROM moved GROUP BY minute, owner_id
            """,  # noqa: S608 - table names and constants only; values are parameters
            [FINISHED_RETENTION, FINISHED_RETENTION],  # type: ignore[list-item]  # psycopg adapts timedelta; the stubs' parameter types leave it out
        )
    return True


def totals() -> list[tuple[str, str, str, float | None, float]]:
    """Return (name, type, queue, le, value) for every metric and label set, summed over its rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT name, type, queue, le, sum(value) FROM {COUNTER_TABLE} GROUP BY name, type, queue, le"  # noqa: S608 - table names and constants only; values are parameters
        )
        return cursor.fetchall()

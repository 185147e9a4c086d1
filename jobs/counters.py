"""Durable counters behind the queue's Prometheus counters and histograms.

Jobs are enqueued by every web process and finished by every worker
process, and any web process may be scraped, so the counts live in
PostgreSQL (the JobCounter table), not in one process's memory. They are
right with any number of processes, survive restarts, and do not go down
when finished jobs are pruned.

Each count is written by the statement that makes the change it counts: a
data-modifying CTE built by `tally_sql()` inserts it next to the UPDATE or
INSERT of the jobs. A change and its count commit or roll back together,
the hot path gains no round trip, and since rows are only ever inserted,
two writers never wait for each other. `roll_up()` folds the rows of each
metric and label set into one; readers sum, so a roll-up never changes what
they see.

The throughput chart's per-minute counts (the FinishedCount table) are
kept the same way: `finished_sql()` inserts them next to the UPDATE that
finishes the jobs, and `roll_up()` folds them per minute and owner, and
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
    "queue_wait_seconds": "Seconds from when a job was due (its run_at) until a worker claimed it, per finished attempt.",
    "run_seconds": "Seconds a handler ran, per attempt that completed, failed or timed out.",
}

# Upper bounds of the histogram buckets, in seconds; the last catches the rest.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, math.inf)

# Key of the advisory lock a roll-up holds; any constant unique to this use.
ROLL_UP_LOCK = 0x736B6A6B_0001

_BOUNDS_SQL = "'{" + ",".join("Infinity" if math.isinf(b) else repr(b) for b in BUCKETS) + "}'::float8[]"


def tally_sql(source: str, events: list[str]) -> str:
    """Return an INSERT that adds the rows of CTE `source` to the counters and histograms.

    Use it as a CTE of the statement that produced `source`. Each row of
    `source` adds 1 to every counter named by `events` (SQL expressions, so
    the name may depend on the row), labelled with its `type` and `queue`
    columns. A non-null `run_s` or `wait_s` column is observed in the
    run-time or queue-wait histogram of its type.
    """
    selects = [
        f"SELECT {event}, type, queue, NULL::float8, count(*)::float8 FROM {source} GROUP BY 1, type, queue"  # noqa: S608 - constants and the caller's SQL; no values
        for event in events
    ]
    for histogram, column in (("run_seconds", "run_s"), ("queue_wait_seconds", "wait_s")):
        selects.append(
            f"SELECT '{histogram}_bucket', type, '', le, count(*)::float8 FROM ("  # noqa: S608 - constants and the caller's SQL; no values
            f"  SELECT type, (SELECT min(b) FROM unnest({_BOUNDS_SQL}) AS b WHERE b >= greatest({column}, 0)) AS le"
            f"  FROM {source} WHERE {column} IS NOT NULL"
            f") AS observed GROUP BY type, le"
        )
        selects.append(
            f"SELECT '{histogram}_sum', type, '', NULL::float8, sum(greatest({column}, 0)) FROM {source}"  # noqa: S608 - constants and the caller's SQL; no values
            f" WHERE {column} IS NOT NULL GROUP BY type"
        )
    return f"INSERT INTO {COUNTER_TABLE} (name, type, queue, le, value) " + " UNION ALL ".join(selects)


def finished_sql(source: str) -> str:
    """Return an INSERT that counts, per owner, the rows of CTE `source` that completed or went to the DLQ.

    Use it as a CTE of the statement that produced `source`, whose rows
    need `owner_id` and `status` columns (the new status). The count goes
    to the minute of the statement's timestamp, the finished_at it writes.
    """
    return (
        f"INSERT INTO {FINISHED_TABLE} (minute, owner_id, completed, dead)"  # noqa: S608 - constants and the caller's SQL; no values
        f" SELECT date_bin(interval '{int(FINISHED_BUCKET.total_seconds())} seconds', statement_timestamp(),"
        f" TIMESTAMPTZ '2000-01-01'), owner_id, count(*) FILTER (WHERE status = 'completed'),"
        f" count(*) FILTER (WHERE status = 'dead')"
        f" FROM {source} WHERE status IN ('completed', 'dead') GROUP BY owner_id"
    )


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
            """  # noqa: S608 - a constant table name; no values
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
            """,  # noqa: S608 - a constant table name; values are parameters
            [FINISHED_RETENTION, FINISHED_RETENTION],  # type: ignore[list-item]  # psycopg adapts timedelta; the stubs' parameter types leave it out
        )
    return True


def totals() -> list[tuple[str, str, str, float | None, float]]:
    """Return (name, type, queue, le, value) for every metric and label set, summed over its rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT name, type, queue, le, sum(value) FROM {COUNTER_TABLE} GROUP BY name, type, queue, le"  # noqa: S608 - a constant table name; no values
        )
        return cursor.fetchall()

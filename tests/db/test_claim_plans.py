"""The plans PostgreSQL makes for the claims, on tables as a production server's statistics see them."""

import contextlib
import uuid

import pytest
from django.db import connection

from jobs import queue
from jobs.queue.sql import query

pytestmark = pytest.mark.django_db


@contextlib.contextmanager
def plans_of(*names):
    """Record EXPLAIN's plan of each named statement as the code under test sends it, parameters and all."""
    wanted = {query(name): name for name in names}
    plans: dict[str, str] = {}

    def explain(execute, sql, params, many, context):
        if sql in wanted:
            cursor = context["cursor"]
            cursor.execute("EXPLAIN " + sql, params)
            plans[wanted[sql]] = "\n".join(row[0] for row in cursor.fetchall())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield plans


def fill(n, *, keys=0):
    """Insert `n` queued jobs of one queue (spread over `keys` concurrency keys), then ANALYZE, as autovacuum would."""
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO jobs_job (queue, type, payload, priority, status, attempts, max_retries, run_at,
                                     concurrency_key, key_limit, progress, history, trace_id, error)
               SELECT 'default', 'reverse_string', '{"text": "a"}', 1, 'queued', 0, 0,
                      now() - interval '1 hour' + i * interval '1 ms',
                      CASE WHEN %(keys)s > 0 THEN 'k' || (i %% %(keys)s) END, 2, 0, '[]', '', ''
               FROM generate_series(1, %(n)s) AS i""",
            {"n": n, "keys": keys},
        )
        cursor.execute("ANALYZE jobs_job")


def test_the_plain_claim_reads_its_index_where_every_job_is_in_one_queue():
    # ANALYZE records one queue name. The claim once compared the queue to an array it read
    # itself, for which the planner assumes ten names and so no passing row: a sequential
    # scan of the whole table on every claim.
    fill(5000)
    with plans_of("claim_jobs") as plans:
        claimed = queue.claim_jobs(worker_id=uuid.uuid4(), limit=10, controlled=[])
    assert len(claimed) == 10
    assert "job_claim_idx" in plans["claim_jobs"]
    assert "Seq Scan on jobs_job" not in plans["claim_jobs"]


def test_the_keyed_fast_path_reads_its_index_where_every_job_is_in_one_queue():
    fill(5000, keys=50)
    with plans_of("claim_keyed_jobs") as plans:
        claimed, _ = queue.claim_keyed_jobs(worker_id=uuid.uuid4(), limit=10, controlled=[])
    assert len(claimed) == 10
    assert "job_keyed_claim_idx" in plans["claim_keyed_jobs"]
    assert "Seq Scan on jobs_job" not in plans["claim_keyed_jobs"]


def test_the_limited_claims_run_without_jit_compilation():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_jit_available()")
        if not cursor.fetchone()[0]:
            pytest.skip("this PostgreSQL server cannot JIT-compile, so nothing would be shown")
        # Every statement passes the threshold now, as claim_limited_jobs does by itself with a
        # few hundred held jobs (its estimate for the few rows of jobs_queuecontrol is 360).
        cursor.execute("SET jit_above_cost = 0")
    fill(200, keys=20)
    # Sent by itself, the statement is compiled: so the claim's transaction turns it off.
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + query("claim_limited_jobs"),
                       {"limit": 10, "worker": uuid.uuid4(), "queues": None, "lease": 60, "start": 10})
        assert "JIT" in "\n".join(row[0] for row in cursor.fetchall())
    with plans_of("claim_limited_jobs", "claim_keyed_jobs") as plans:
        assert queue.claim_limited_jobs(worker_id=uuid.uuid4(), limit=10)
        assert queue.claim_keyed_jobs(worker_id=uuid.uuid4(), limit=10)[0]
    assert "JIT" not in plans["claim_limited_jobs"]
    assert "JIT" not in plans["claim_keyed_jobs"]

"""Handlers that only the tests use, loaded through JOBS_HANDLER_MODULES."""

import logging
import os
import time

from django.db import connection

from jobs.registry import job_handler

EFFECTS_TABLE = "skipjack_test_effects"


@job_handler("record_effect")
def record_effect(job):
    """Record one row per execution, so tests can count how often each job ran."""
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {EFFECTS_TABLE} (job_id, pid) VALUES (%s, %s)", [job.job_id, os.getpid()])
    time.sleep(float(job.payload.get("seconds", 0)))
    return {"pid": os.getpid()}


@job_handler("spin")
def spin(job):
    """Busy-loop without ever looking at the stop event."""
    end = time.monotonic() + float(job.payload.get("seconds", 5))
    while time.monotonic() < end:
        pass
    return "spun"


@job_handler("exit_process")
def exit_process(job):
    """Raise SystemExit, as a careless handler might."""
    raise SystemExit(3)


@job_handler("log_line")
def log_line(job):
    """Log one line of the handler's own, as handlers do."""
    logging.getLogger("tests.handlers").info("handler says %s", job.payload.get("text", "hi"))
    return "logged"


@job_handler("unstorable_result")
def unstorable_result(job):
    """Return a result JSON cannot hold: NaN (as json.dumps would write it) or a set."""
    return float("nan") if job.payload.get("kind") == "nan" else {1, 2}


@job_handler("plan_cache_mode")
def plan_cache_mode(job):
    """Return how the handler's own database connection plans prepared statements."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('plan_cache_mode')")
        return cursor.fetchone()[0]

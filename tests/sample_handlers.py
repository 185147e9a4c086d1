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
        cursor.execute(f"INSERT INTO {EFFECTS_TABLE} (job_id, pid) VALUES (%s, %s)", [job.job_id, os.getpid()])  # noqa: S608 - the test table's name; values are parameters
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


chatty_logger = logging.getLogger("tests.chatty")


@job_handler("chatty")
def chatty(job):
    """Log on every line for `seconds`, never looking at the stop event; return the job's id."""
    end = time.monotonic() + float(job.payload.get("seconds", 0.1))
    line = 0
    while time.monotonic() < end:
        line += 1
        chatty_logger.info("job %s says line %s", job.job_id, line)
        time.sleep(0.002)
    return {"job": job.job_id}


@job_handler("hostile_output")
def hostile_output(job):
    """Return or raise what a hostile page might have put in a result: NUL, lone surrogates, deep nesting, bulk."""
    kind = job.payload["kind"]
    if kind == "nul_string":
        return "a\x00b"
    if kind == "nul_key":
        return {"a\x00": ["b\ud800", {"c": "\x00\udfff"}], "fine": "😀 \\u0000"}
    if kind == "nul_error":
        raise RuntimeError("a\x00b \ud800")
    if kind == "deep":
        result = []
        for _ in range(5000):
            result = [result]
        return result
    if kind == "huge":
        return "x" * int(job.payload.get("bytes", 2 * 1024 * 1024))
    raise ValueError(kind)


@job_handler("kill_own_worker", backoff_base=1, backoff_cap=10)
def kill_own_worker(job):
    """Kill the worker process that runs it, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), 9)


@job_handler("tenant_task", concurrency_key=lambda payload: f"tenant:{payload['tenant']}" if "tenant" in payload else None,
             key_concurrency=2)
def tenant_task(job):
    """A job of one tenant: at most two of a tenant's run at once, anywhere (flow control)."""
    time.sleep(float(job.payload.get("seconds", 0)))
    return job.payload.get("tenant")


@job_handler("cooperative")
def cooperative(job):
    """A long handler that looks at job.cancelled between steps, as process_video does."""
    for step in range(int(job.payload.get("steps", 6000))):
        if job.cancelled:
            return {"stopped_at_step": step}
        time.sleep(0.01)
    return "all steps"


@job_handler("sleep_blind")
def sleep_blind(job):
    """Sleep in C, never looking at the job: only the worker can give up on it."""
    time.sleep(float(job.payload.get("seconds", 30)))
    return "slept"


@job_handler("snooze_times")
def snooze_times(job):
    """Snooze (raised, or returned when asked) until the job's history holds `times` snoozes, then finish."""
    from jobs.errors import Snooze
    from jobs.models import Job

    history = Job.objects.values_list("history", flat=True).get(pk=job.job_id)
    if sum(1 for entry in history if entry["outcome"] == "snoozed") < int(job.payload["times"]):
        if job.payload.get("return"):
            return Snooze(0.3)
        raise Snooze(0.3)
    return "awake"

"""Django tasks that only the tests use, in a module of JOBS_TASK_MODULES (the tests set it)."""

import asyncio
import os
from pathlib import Path

import django
from django.db import connection

from jobs.errors import PermanentError
from jobs.tasks import task as skipjack_task
from jobs.tasks.compat import TaskContext
from tests.sample_handlers import EFFECTS_TABLE

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task

# The backport (and Django 6.1) hand the decorator's extra keywords to the
# backend's task class; on Django 6.0, jobs.tasks.task does.
task_with_options = task if django.VERSION < (6, 0) else skipjack_task


class TaskFailure(Exception):
    """Raised by failing_task: its class path must import."""


@task
def add(a, b):
    """Return a + b."""
    return a + b


@task(priority=10, queue_name="default")
def echo(*args, **kwargs):
    """Return what it was called with."""
    return {"args": list(args), "kwargs": kwargs}


@task
async def async_multiply(a, b):
    """A coroutine task: awaits, then returns a * b."""
    await asyncio.sleep(0.01)
    return a * b


@task(takes_context=True)
def attempt_number(context: TaskContext, fail_until: int = 0):
    """Return the attempt number and the result id it sees; fail while the attempt is below `fail_until`."""
    if context.attempt < fail_until:
        raise TaskFailure(f"attempt {context.attempt} fails on purpose")
    return {"attempt": context.attempt, "id": context.task_result.id, "status": str(context.task_result.status)}


@task_with_options(max_retries=2, backoff_base=0.1, backoff_cap=0.2)
def failing_task(message="boom"):
    """Always fail, so that its retries run out and it goes to the DLQ."""
    raise TaskFailure(message)


@task
def permanent_failure():
    """Fail for good at once."""
    raise PermanentError("no point retrying")


@task
def record(label):
    """Record one row per execution in the effects table, with the label as the job id's stand-in."""
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {EFFECTS_TABLE} (job_id, pid) VALUES (%s, %s)", [int(label), os.getpid()])  # noqa: S608 - the test table's name; values are parameters
    return label


@task_with_options(timeout=0.5, max_retries=0)
def sleeps(seconds):
    """Sleep, so that its timeout stops it."""
    import time

    time.sleep(seconds)
    return "slept"


def write_side_effect(path):
    """A plain function, no task: a job naming it must never run it."""
    Path(path).write_text("ran")
    return "ran"


not_a_task = write_side_effect

"""run_command's limits: allowed programs only, a clean environment, bounded output, staff to the end.

The handler runs here on the test database, and the whole path runs on real
servers: the API on uvicorn, PostgreSQL, Redis and a worker process.
"""

import sys
import threading
import time
import tracemalloc

import pytest
from django.test import override_settings

from jobs import queue
from jobs.errors import IllegalTransition, PayloadError, PermanentError
from jobs.models import Job, JobStatus
from jobs.registry import JobContext, get_handler, validate_payload
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db

SECRETS = {"SECRET_KEY": "a-secret-the-command-must-not-see", "DATABASE_URL": "postgres://x:pw@db/x",
           "REDIS_URL": "redis://:pw@cache:6379/0"}
commands_allowed = override_settings(
    JOBS_ENABLE_SHELL_COMMANDS=True, JOBS_SHELL_ALLOWED_COMMANDS=("/usr/bin/env", sys.executable)
)


def run(job: Job, **context):
    """Run `job`'s handler here, as a worker would (validating its payload first); return the result."""
    payload = validate_payload(job.type, job.payload)
    return get_handler(job.type).func(JobContext(job_id=job.pk, type=job.type, payload=payload, attempt=1, **context))


@commands_allowed
def test_only_an_allowed_program_may_be_submitted_naming_the_field():
    """Refuse a program not listed in JOBS_SHELL_ALLOWED_COMMANDS, a shell above all, with a message on argv."""
    for argv in (["/bin/sh", "-c", "id"], ["sh", "-c", "id"], ["env"], ["/usr/bin/../bin/env"]):
        with pytest.raises(PayloadError) as excinfo:
            validate_payload("run_command", {"argv": argv})
        assert excinfo.value.errors == {
            "argv": [f"{argv[0]!r} is not a program this server runs (JOBS_SHELL_ALLOWED_COMMANDS)."]
        }
    assert validate_payload("run_command", {"argv": ["/usr/bin/env"]}) == {"argv": ["/usr/bin/env"], "timeout": 60}


@override_settings(JOBS_ENABLE_SHELL_COMMANDS=True)
def test_nothing_is_allowed_to_run_until_an_operator_lists_it():
    """Refuse every program while JOBS_SHELL_ALLOWED_COMMANDS is empty, its default."""
    with pytest.raises(PayloadError):
        validate_payload("run_command", {"argv": ["/usr/bin/env"]})


@commands_allowed
def test_a_stored_command_of_a_program_no_longer_allowed_does_not_run():
    """Fail a job whose program left the list after it was stored, without running it."""
    job = JobFactory(type="run_command", payload={"argv": ["/usr/bin/env"], "timeout": 5})
    context = JobContext(job_id=job.pk, type=job.type, payload=job.payload, attempt=1)
    with override_settings(JOBS_SHELL_ALLOWED_COMMANDS=()), pytest.raises(PermanentError, match="not in JOBS_SHELL_ALLOWED"):
        get_handler("run_command").func(context)


@commands_allowed
def test_the_command_gets_a_clean_environment(monkeypatch):
    """Give the command PATH and LANG only: none of the worker's secrets."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    job = JobFactory(type="run_command", payload={"argv": ["/usr/bin/env"], "timeout": 5})
    result = run(job)
    assert sorted(result["stdout"].splitlines()) == ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]


@commands_allowed
def test_a_command_writing_without_end_is_held_to_its_last_bytes():
    """Hold at most the last 10,000 bytes of each stream in memory while a command writes 50 MB of output."""
    script = "import sys; [sys.stdout.buffer.write(b'x' * 1_000_000) for _ in range(50)]; print('end', end='')"
    job = JobFactory(type="run_command", payload={"argv": [sys.executable, "-c", script], "timeout": 60})
    tracemalloc.start()
    try:
        result = run(job)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result["stdout"]) == 10_000 and result["stdout"].endswith("xend")
    assert peak < 2_000_000, f"{peak} bytes held"


@commands_allowed
def test_a_command_is_killed_with_what_it_started_when_its_job_must_stop():
    """Kill the command's process group soon after stop_requested is set (timeout, cancel, shutdown)."""
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    job = JobFactory(type="run_command", payload={"argv": [sys.executable, "-c", script], "timeout": 60})
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Exception, match="stopped"):
        run(job, stop_requested=stop)
    assert time.monotonic() - started < 5


@commands_allowed
def test_a_command_runs_only_while_its_owner_is_staff():
    """Fail, without running it, a command whose owner lost staff status or was deactivated; run one of staff's or one with no owner."""
    owner = UserFactory(is_staff=True)
    job = JobFactory(type="run_command", owner=owner, payload={"argv": ["/usr/bin/env"], "timeout": 5})
    assert run(job)["returncode"] == 0
    assert run(JobFactory(type="run_command", payload={"argv": ["/usr/bin/env"], "timeout": 5}))["returncode"] == 0
    owner.is_active = False
    owner.save()
    with pytest.raises(PermanentError, match="Only staff may submit run_command jobs"):
        run(job)
    owner.is_active, owner.is_staff = True, False
    owner.save()
    with pytest.raises(PermanentError, match="Only staff may submit run_command jobs"):
        run(job)


@commands_allowed
def test_a_command_whose_owner_lost_staff_is_neither_retried_nor_requeued():
    """Refuse to retry (IllegalTransition, a 409) or requeue a dead command of an owner who is not staff any more."""
    former = UserFactory(is_staff=False)
    staff = UserFactory(is_staff=True)
    theirs = JobFactory(type="run_command", owner=former, status=JobStatus.DEAD)
    other = JobFactory(type="reverse_string", owner=former, status=JobStatus.DEAD)
    staffs = JobFactory(type="run_command", owner=staff, status=JobStatus.DEAD)
    ownerless = JobFactory(type="run_command", status=JobStatus.DEAD)
    with pytest.raises(IllegalTransition, match="only staff may run run_command jobs"):
        queue.retry_job(theirs.pk)
    assert queue.requeue_dead(Job.objects.all()) == sorted([other.pk, staffs.pk, ownerless.pk])
    theirs.refresh_from_db()
    assert theirs.status == JobStatus.DEAD

"""The built-in handlers that read their owner from the job row, run_command and send_email, run directly: no worker."""

import sys
import time

import pytest
from django.conf import settings
from django.core import mail
from django.test import override_settings

from jobs.errors import PermanentError
from tests.factories import JobFactory
from tests.unit.test_handlers import run, shell_enabled

# send_email


@pytest.fixture
def email_job(db):
    """Return the id of a send_email job without an owner, as enqueued by code, for the handler to run as."""
    return JobFactory(type="send_email", payload={"to": ["a@example.com"], "subject": "Hi", "body": ""}).pk


@override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_send_email_sends_through_the_email_backend(email_job):
    """Send one message to every recipient, from DEFAULT_FROM_EMAIL."""
    mail.outbox = []
    payload = {"to": ["a@example.com", " b@example.com"], "subject": "Hi", "body": "Hello."}
    result = run("send_email", payload, job_id=email_job)
    assert result == {"sent": 2}
    [message] = mail.outbox
    assert message.to == ["a@example.com", "b@example.com"]
    assert (message.subject, message.body) == ("Hi", "Hello.")
    assert message.from_email == settings.DEFAULT_FROM_EMAIL


@override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_send_email_accepts_a_single_address(email_job):
    """Normalize a single address string to a one-item list."""
    mail.outbox = []
    assert run("send_email", {"to": "a@example.com", "subject": "Hi", "body": ""}, job_id=email_job) == {"sent": 1}
    assert mail.outbox[0].to == ["a@example.com"]


# run_command


@pytest.fixture
def command_job(db):
    """Return the id of a run_command job without an owner, as enqueued by code, for a handler to run as."""
    return JobFactory(type="run_command", payload={"argv": ["ls"], "timeout": 60}).pk


@shell_enabled
def test_run_command_returns_the_output(command_job):
    """Run argv without a shell and return its exit code and output."""
    result = run("run_command", {"argv": [sys.executable, "-c", "print('hi'); print('$HOME')"]}, job_id=command_job)
    assert result == {"returncode": 0, "stdout": "hi\n$HOME\n", "stderr": ""}


@shell_enabled
def test_run_command_caps_the_output(command_job):
    """Keep only the last 10,000 bytes of output."""
    result = run("run_command", {"argv": [sys.executable, "-c", "print('x' * 20000, end='!')"]}, job_id=command_job)
    assert len(result["stdout"]) == 10_000
    assert result["stdout"].endswith("x!")


@shell_enabled
def test_run_command_raises_with_the_exit_status_and_stderr(command_job):
    """Raise, naming the exit status and stderr, when the command fails."""
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="status 3: boom"):
        run("run_command", {"argv": argv}, job_id=command_job)


@shell_enabled
def test_run_command_fails_permanently_for_a_missing_program(command_job):
    """Raise PermanentError when the program does not exist."""
    with pytest.raises(PermanentError, match="no-such-program"):
        run("run_command", {"argv": ["/nonexistent/no-such-program"]}, job_id=command_job)


@shell_enabled
def test_run_command_stops_a_command_past_its_timeout(command_job):
    """Kill the command and raise once its timeout passes."""
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out"):
        payload = {"argv": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout": 0.5}
        run("run_command", payload, job_id=command_job)
    assert time.monotonic() - started < 10

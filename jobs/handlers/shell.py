"""The run_command job type: off unless JOBS_ENABLE_SHELL_COMMANDS is set, and staff-only."""

import subprocess

from jobs.errors import PermanentError
from jobs.handlers.validators import MAX_COMMAND_SECONDS, command_payload
from jobs.registry import JobContext, job_handler

# Output kept in the result, counted from the end, where errors and summaries usually are.
OUTPUT_LIMIT = 10_000
STDERR_IN_ERROR = 1000


@job_handler(
    "run_command",
    validate=command_payload,
    timeout=MAX_COMMAND_SECONDS + 60,
    staff_only=True,
    enabled_by="JOBS_ENABLE_SHELL_COMMANDS",
)
def run_command(job: JobContext) -> dict:
    """Run a command (without a shell) and return its output."""
    argv, timeout = job.payload["argv"], job.payload["timeout"]
    try:
        # shell=False: argv is passed to the program as is, never parsed by a shell.
        completed = subprocess.run(
            argv, shell=False, capture_output=True, text=True, errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"Command timed out after {timeout} seconds.") from exc
    except OSError as exc:
        # A missing or non-executable program stays that way, so retrying is pointless.
        raise PermanentError(f"Cannot run {argv[0]!r}: {exc.strerror or exc}.") from exc
    if completed.returncode != 0:
        raise RuntimeError(
            f"Command exited with status {completed.returncode}: {completed.stderr[-STDERR_IN_ERROR:].strip()}"
        )
    return {
        "returncode": completed.returncode,
        "stdout": completed.stdout[-OUTPUT_LIMIT:],
        "stderr": completed.stderr[-OUTPUT_LIMIT:],
    }

"""The run_command job type: off unless JOBS_ENABLE_SHELL_COMMANDS is set, staff-only, allowed programs only.

A command runs without a shell, and only if its program (argv[0], exactly as
written) is one of JOBS_SHELL_ALLOWED_COMMANDS. It gets a clean environment,
so none of the worker's secrets (SECRET_KEY, DATABASE_URL, REDIS_URL, ...),
no stdin, and a process group of its own, which is killed when the command
runs past its timeout or its job must stop. However much it writes, only the
last OUTPUT_LIMIT bytes of each stream are ever held. Its owner must still be
staff when it runs, not only when it was submitted.
"""

import os
import selectors
import signal
import subprocess
import threading
import time
from typing import IO, cast

from jobs.errors import JobTimeout, PermanentError
from jobs.handlers.validators import MAX_COMMAND_SECONDS, allowed_program, command_payload
from jobs.registry import JobContext, check_owner_at_run, job_handler

# Output kept in the result, counted from the end, where errors and summaries usually are.
OUTPUT_LIMIT = 10_000
STDERR_IN_ERROR = 1000
READ_SIZE = 64 * 1024
# All that a command inherits: a program without a slash is looked up in this PATH.
ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def _read_tails(stdout: IO[bytes], stderr: IO[bytes], *, deadline: float, stop: threading.Event) -> tuple[bytes, bytes]:
    """Read the command's stdout and stderr to their end; return the last OUTPUT_LIMIT bytes of each.

    Raise TimeoutError past `deadline` (time.monotonic()), JobTimeout once `stop` is set.
    """
    tails = {stdout.fileno(): bytearray(), stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as selector:
        for pipe in (stdout, stderr):
            selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            if stop.is_set():
                raise JobTimeout("job stopped while its command ran")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            for key, _ in selector.select(min(left, 0.5)):
                chunk = os.read(key.fd, READ_SIZE)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                tail = tails[key.fd]
                tail += chunk
                del tail[:-OUTPUT_LIMIT]
    return bytes(tails[stdout.fileno()]), bytes(tails[stderr.fileno()])


def _run(argv: list[str], *, timeout: float, stop: threading.Event) -> tuple[int, str, str]:
    """Run `argv`; return its exit status and the ends of its stdout and stderr."""
    deadline = time.monotonic() + timeout
    process = subprocess.Popen(  # noqa: S603 - no shell; run_command() checked the program against JOBS_SHELL_ALLOWED_COMMANDS
        # shell=False: argv is passed to the program as is, never parsed by a shell.
        argv, shell=False, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=ENVIRONMENT, start_new_session=True,
    )
    # Both set: stdout=PIPE and stderr=PIPE.
    stdout_pipe, stderr_pipe = cast(IO[bytes], process.stdout), cast(IO[bytes], process.stderr)
    finished = False
    try:
        stdout, stderr = _read_tails(stdout_pipe, stderr_pipe, deadline=deadline, stop=stop)
        # Both pipes are closed: the command has exited, or is about to.
        returncode = process.wait(max(deadline - time.monotonic(), 0.1))
        finished = True
    except (TimeoutError, subprocess.TimeoutExpired):
        raise RuntimeError(f"Command timed out after {timeout} seconds.") from None
    finally:
        if not finished:
            # The whole group: what the command started would hold on to the pipes and run on.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        stdout_pipe.close()
        stderr_pipe.close()
    return returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


@job_handler(
    "run_command",
    validate=command_payload,
    timeout=MAX_COMMAND_SECONDS + 60,
    staff_only=True,
    enabled_by="JOBS_ENABLE_SHELL_COMMANDS",
)
def run_command(job: JobContext) -> dict:
    """Run an allowed command (without a shell) and return its output."""
    check_owner_at_run(job)
    argv, timeout = job.payload["argv"], job.payload["timeout"]
    # The validator checked this already; checked again right before exec, as the one thing that must hold.
    if not allowed_program(argv[0]):
        raise PermanentError(f"Refusing to run {argv[0]!r}: it is not in JOBS_SHELL_ALLOWED_COMMANDS.")
    try:
        returncode, stdout, stderr = _run(argv, timeout=timeout, stop=job.stop_requested)
    except OSError as exc:
        # A missing or non-executable program stays that way, so retrying is pointless.
        raise PermanentError(f"Cannot run {argv[0]!r}: {exc.strerror or exc}.") from exc
    if returncode != 0:
        raise RuntimeError(f"Command exited with status {returncode}: {stderr[-STDERR_IN_ERROR:].strip()}")
    return {"returncode": returncode, "stdout": stdout[-OUTPUT_LIMIT:], "stderr": stderr[-OUTPUT_LIMIT:]}

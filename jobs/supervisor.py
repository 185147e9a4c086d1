"""Run several worker processes under one `runworker --processes N`."""

import logging
import signal
import subprocess
import sys
import time

logger = logging.getLogger("jobs.worker")


def supervise(child_argv: list[str], processes: int, *, burst: bool) -> int:
    """Run `processes` copies of `child_argv` until told to stop; return the exit code.

    SIGTERM/SIGINT are passed on to every child, which shuts down
    gracefully. A child that dies on its own (a crash, `kill -9`) is started
    again, unless the workers run in burst mode, where each exits once the
    queue is empty.
    """
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def spawn():
        # Its own process group: a Ctrl-C in the terminal reaches only this
        # supervisor, which passes it on once. Children that got it twice
        # would take the second as "stop now" and skip the grace period.
        return subprocess.Popen(child_argv, process_group=0)  # noqa: S603 - this very worker command (child_command), no shell

    children = [spawn() for _ in range(processes)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exit_code = 0
    while children:
        time.sleep(0.2)
        for child in list(children):
            code = child.poll()
            if code is None:
                continue
            if stopping or burst:
                children.remove(child)
                exit_code = exit_code or (code if code > 0 else 0)
                continue
            logger.warning("worker process %s exited with %s; starting a new one", child.pid, code)
            children[children.index(child)] = spawn()
    return exit_code


def child_command(argv: list[str]) -> list[str]:
    """Return the command line of one child: this command with --processes 1."""
    args = list(argv[1:])
    cleaned = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        cleaned.append(arg)
    return [sys.executable, argv[0], *cleaned, "--processes", "1"]

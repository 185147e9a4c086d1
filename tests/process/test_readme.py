"""The README's shell commands, read out of its ```sh blocks and run as written from a fresh clone.

Each command goes through a shell, in a copy of the working tree's tracked
files, with dev.py on a virtualenv that reuses the tests' packages (nothing
is downloaded) and on the test database. Every line of those blocks is one
of the kinds `kind` knows; a new kind of command fails the test until it is
handled here.
"""

import os
import re
import shlex
import signal
import subprocess
import tempfile
import urllib.request

import pytest
from django.conf import settings

from jobs.models import Worker
from tests.conftest import ROOT, database_url_for_tests, free_port, wait_for
from tests.fresh_clone import fresh_clone, reusing_venvs, series_under_test

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Commands not run, and why.
NOT_RUN = {
    "docker-compose": "needs a Docker engine; tests/unit/test_deploy.py checks docker-compose.yml",
    "make bench": "the benchmarks take minutes and never run in CI",
    "curl": "the API walkthrough; tests/process/test_api_live.py runs the same flow against real processes",
}
# The variables the README exports; the test sets them to its own servers.
EXPORTED = {"DATABASE_URL", "REDIS_URL"}
# What a command that runs to completion prints, by manage.py command.
PRINTS = {
    "enqueue": r"Enqueued: job \d+",
    "runworker": r"",
    "requeue_dlq": r"(Requeued|Would requeue) \d+ dead jobs?\b",
    "queue_status": r"Live workers: \d+",
    "queues": r"(QUEUE|Paused|Resumed|Queue \S+:|Key \S+ of queue)",
    "schedules": r"(Added|Paused|Resumed|Removed) \S+|Enqueued job \d+|  (enabled|paused)  next ",
}


def readme_blocks() -> list[list[str]]:
    """Return the commands of each ```sh block of the README: continued lines joined, comment lines left out."""
    blocks = []
    for body in SH_BLOCK.findall((ROOT / "README.md").read_text()):
        commands, continued = [], ""
        for line in body.splitlines():
            line = continued + line
            if line.endswith("\\"):
                continued = line[:-1]
                continue
            continued = ""
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
        blocks.append(commands)
    return blocks


def manage_command(words: list[str]) -> str | None:
    """Return the manage.py command that `words` run, through dev.py or manage.py itself."""
    for before in ("manage", "manage.py"):
        if before in words[:-1]:
            return words[words.index(before) + 1]
    return None


# The first line of the block that installs Skipjack into the example project:
# tests/process/test_example_host.py runs that block as written, in a virtualenv of its own.
HOST_BLOCK = "cd examples/hostproject"


def kind(command: str, block: list[str]) -> str:
    """Return how the test runs `command`: serve, worker, tests, command, export, or not-run."""
    if any("curl " in line for line in block) or block[:1] == [HOST_BLOCK]:
        return "not-run"
    if any(command.startswith(prefix) for prefix in NOT_RUN):
        return "not-run"
    if command.startswith("export "):
        return "export"
    words = shlex.split(command, comments=True)
    if words[:3] == ["python3", "dev.py", "run"]:
        return "serve"
    if words[:3] == ["python3", "dev.py", "test"]:
        return "tests"
    if manage_command(words) in PRINTS:
        return "worker" if manage_command(words) == "runworker" and "--burst" not in words else "command"
    if command.startswith("cp .env.example .env"):
        return "command"
    pytest.fail(f"The README has a command this test does not know how to run: {command}")


class Shell:
    """One README command run by bash in the clone, in a process group of its own, as a terminal runs it.

    bash runs a lone command in its own place (exec), so Ctrl-C, sent to
    the group, reaches the command and no shell, as in a terminal.
    """

    def __init__(self, command: str, cwd, env):
        self.command = command
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def ctrl_c(self, timeout=40) -> int:
        """Send SIGINT to the command's process group, as Ctrl-C does; return its exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        """Kill what is left of the command, children in process groups of their own included."""
        import psutil

        try:
            tree = psutil.Process(self.proc.pid)
            for process in [*tree.children(recursive=True), tree]:
                process.kill()
        except psutil.NoSuchProcess:
            pass
        self.proc.wait(timeout=10)


def check_serve(shell: Shell, clone, port: int):
    """See `dev.py run` print its login and answer /healthz/, then stop cleanly on Ctrl-C."""
    wait_for(lambda: "Press Ctrl-C to stop." in shell.output() or shell.proc.poll() is not None, timeout=90,
             message="the banner")
    output = shell.output()
    assert "Press Ctrl-C to stop." in output, output
    username, password = output.split("Login:")[1].split("\n")[0].strip().split(" / ")
    assert (clone / ".data" / "admin_password").read_text().strip() == password
    assert "(the password is kept in .data/admin_password)" in output

    def healthy():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/", timeout=2).status == 200
        except OSError:
            return False

    wait_for(healthy, timeout=30, message="/healthz/")
    assert shell.ctrl_c() == 0, shell.output()
    assert "ERROR" not in shell.output() and " INFO " not in shell.output(), shell.output()


def check_worker(shell: Shell, command: str, before: set):
    """See a `runworker` register its worker processes, then stop cleanly on Ctrl-C."""
    words = shlex.split(command, comments=True)
    processes = int(words[words.index("--processes") + 1]) if "--processes" in words else 1

    def registered():
        assert shell.proc.poll() is None, shell.output()
        live = Worker.objects.filter(stopped_at__isnull=True).exclude(pk__in=before)
        return live.count() == processes and list(live)

    workers = wait_for(registered, timeout=60, interval=0.2, message=f"{processes} worker(s) of {command!r}")
    if "--queues" in words:
        assert workers[0].queues == words[words.index("--queues") + 1].split(",")
    assert shell.ctrl_c() == 0, shell.output()


def test_readme_commands_work_as_written_from_a_fresh_clone(tmp_path):
    """Run every command of the README's ```sh blocks that a user runs locally, as written, from a fresh clone."""
    blocks = readme_blocks()
    # In the README's order, each once: `python3 dev.py run` is in three sections, once with a comment.
    commands, seen = [], set()
    for block in blocks:
        for command in block:
            if (words := tuple(shlex.split(command, comments=True))) not in seen:
                seen.add(words)
                commands.append((command, kind(command, block)))
    assert {"serve", "tests", "worker", "command"} <= {k for _, k in commands}
    clone = fresh_clone(tmp_path / "skipjack")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("SKIPJACK_DATA_DIR", "LOG_LEVEL")}
    env.update({
        "DATABASE_URL": database_url_for_tests(), "REDIS_URL": settings.REDIS_URL,
        # One per Django series this run of the suite covers, as `dev.py test` made them.
        "SKIPJACK_VENV": str(reusing_venvs(tmp_path / "venv")),
        "SKIPJACK_DJANGO": ",".join(series_under_test()),
        "PIP_NO_INDEX": "1",  # a requirement that had to be downloaded would fail the command
        "PORT": str(port),  # serve's default, so `dev.py run` as written does not take this machine's 8000
        # `dev.py test` as written would run the whole suite, this test included: collecting shows it
        # installed the dev extra and that every test module imports, on each Django series.
        "PYTEST_ADDOPTS": "--collect-only -q -p no:cacheprovider",
        "PYTHONUNBUFFERED": "1",
    })
    ran = []
    for command, how in commands:
        if how == "not-run":
            continue
        if how == "export":
            assert command.split()[1].split("=")[0] in EXPORTED, command
            continue
        shell = Shell(command, clone, env)
        try:
            if how == "serve":
                check_serve(shell, clone, port)
            elif how == "worker":
                check_worker(shell, command, set(Worker.objects.values_list("pk", flat=True)))
            else:
                assert shell.proc.wait(timeout=90) == 0, f"{command}\n{shell.output()}"
                if how == "tests":
                    collected = re.findall(r"\d+ tests collected", shell.output())
                    assert len(collected) == len(series_under_test()), shell.output()
                elif command.startswith("cp .env.example"):
                    assert "SECRET_KEY=" in (clone / ".env").read_text()
                else:
                    printed = PRINTS[manage_command(shlex.split(command, comments=True))]
                    assert re.search(printed, shell.output()), f"{command}\n{shell.output()}"
        finally:
            if shell.proc.poll() is None:
                shell.kill()
        ran.append(command)
    assert len(ran) >= 14

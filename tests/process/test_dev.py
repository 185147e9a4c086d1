"""dev.py: what `run`, `manage` and `test` install into the virtualenv, and what they show while they do."""

import hashlib
import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import ROOT
from tests.fresh_clone import reusing_venv

pytestmark = pytest.mark.process


def dev_py(venv, *args) -> subprocess.CompletedProcess:
    # PIP_NO_INDEX: a requirement that had to be downloaded would fail the command.
    env = {**os.environ, "SKIPJACK_VENV": str(venv), "PIP_NO_INDEX": "1",
           "DATABASE_URL": "postgres://nobody@127.0.0.1:1/unused", "REDIS_URL": settings.REDIS_URL}
    return subprocess.run([sys.executable, "dev.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_run_installs_the_runtime_dependencies_with_progress_and_test_adds_the_dev_extra(tmp_path):
    """Install with pip's progress shown: `run` only the runtime dependencies, `test` the dev extra too, each once.

    No editable install of the project, so no build and no setuptools warning.
    """
    venv = reusing_venv(tmp_path / "venv")
    stamp = venv / ".skipjack-installed"
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()

    run = dev_py(venv, "run", "--help")
    assert run.returncode == 0, run.stderr
    assert "Installing the runtime dependencies of pyproject.toml" in run.stdout
    assert "Requirement already satisfied: django" in run.stdout  # pip's own lines, not --quiet
    assert "playwright" not in run.stdout.lower() and "schemathesis" not in run.stdout.lower()
    assert "--access-log" in run.stdout  # then serve ran
    for output in (run.stdout, run.stderr):
        assert "Editable installation" not in output and "BuildBackendWarning" not in output
    assert stamp.read_text().split() == [pyproject, "runtime"]

    manage = dev_py(venv, "manage", "help", "serve")
    assert manage.returncode == 0, manage.stderr
    assert "Installing" not in manage.stdout and "--access-log" in manage.stdout

    tests = dev_py(venv, "test", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/unit/test_retry.py")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "Installing the runtime and test dependencies of pyproject.toml" in tests.stdout
    assert "Requirement already satisfied: playwright" in tests.stdout
    assert "Requirement already satisfied: schemathesis" in tests.stdout
    assert "tests collected" in tests.stdout
    assert stamp.read_text().split() == [pyproject, "dev", "runtime"]

    again = dev_py(venv, "run", "--help")
    assert again.returncode == 0 and "Installing" not in again.stdout

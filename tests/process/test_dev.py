"""dev.py: what `run`, `manage` and `test` install into the virtualenv, and what they show while they do."""

import hashlib
import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import ROOT
from tests.fresh_clone import RUNNING_SERIES, reusing_venv, reusing_venvs, series_under_test

pytestmark = pytest.mark.process


def dev_py(venv, *args, env=None) -> subprocess.CompletedProcess:
    # PIP_NO_INDEX: a requirement that had to be downloaded would fail the command.
    env = {**os.environ, "SKIPJACK_VENV": str(venv), "PIP_NO_INDEX": "1",
           "DATABASE_URL": "postgres://nobody@127.0.0.1:1/unused", "REDIS_URL": settings.REDIS_URL, **(env or {})}
    return subprocess.run([sys.executable, "dev.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_run_installs_the_runtime_dependencies_with_progress_and_test_adds_the_dev_extra(tmp_path):
    """Install with pip's progress shown: `run` only the runtime dependencies, `test` the dev extra too, each once.

    No editable install of the project, so no build and no setuptools warning.
    """
    if RUNNING_SERIES != "5.2":
        pytest.skip("run and manage use the Django 5.2 virtualenv; the Django 5.2 run of the suite checks them")
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
    assert stamp.read_text().split() == [pyproject, "django-5.2", "runtime"]

    manage = dev_py(venv, "manage", "help", "serve")
    assert manage.returncode == 0, manage.stderr
    assert "Installing" not in manage.stdout and "--access-log" in manage.stdout

    tests = dev_py(venv, "test", "--django", "5.2", "--collect-only", "-q", "-p", "no:cacheprovider",
                   "tests/unit/test_retry.py")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "Installing the runtime and test dependencies of pyproject.toml" in tests.stdout
    assert "Requirement already satisfied: playwright" in tests.stdout
    assert "Requirement already satisfied: schemathesis" in tests.stdout
    assert "tests collected" in tests.stdout
    assert stamp.read_text().split() == [pyproject, "django-5.2", "dev", "runtime"]

    again = dev_py(venv, "run", "--help")
    assert again.returncode == 0 and "Installing" not in again.stdout


def test_test_runs_the_suite_once_per_django_series_each_in_its_own_virtualenv(tmp_path):
    """`dev.py test` runs pytest on Django 5.2 and then on 6.0 (Python 3.12), each in a virtualenv of its own."""
    series = series_under_test()
    if len(series) < 2:
        pytest.skip("only one Django series is installed for this run (python3 dev.py test installs both)")
    venv = reusing_venvs(tmp_path / "venv")
    (tmp_path / "test_series.py").write_text(
        "import sys\n\nimport django\n\n\ndef test_series():\n"
        "    print('on Django', django.get_version(), 'Python', sys.version.split()[0])\n"
    )
    tests = dev_py(venv, "test", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:django", "--rootdir", str(tmp_path),
                   str(tmp_path / "test_series.py"), env={"SKIPJACK_DJANGO": ""})
    assert tests.returncode == 0, tests.stdout + tests.stderr
    first, second = tests.stdout.split("=== Django 5.2:")[1].split("=== Django 6.0:")
    assert "on Django 5.2." in first and "1 passed" in first
    assert "on Django 6.0." in second and "Python 3.12." in second and "1 passed" in second


def test_test_says_in_one_line_why_it_cannot_run_django_6_without_a_python_3_12(tmp_path):
    venv = reusing_venv(tmp_path / "venv")
    tests = dev_py(venv, "test", "--collect-only", "tests/unit/test_retry.py",
                   env={"SKIPJACK_DJANGO": "", "SKIPJACK_PYTHON312": str(tmp_path / "no-such-python")})
    assert tests.returncode == 1
    assert tests.stderr.strip() == (f"SKIPJACK_PYTHON312={tmp_path / 'no-such-python'} is not a Python 3.12 or newer, "
                                    "which Django 6.0 needs.")
    assert "Installing" not in tests.stdout  # found out before anything is installed
    unknown = dev_py(venv, "test", "--django", "4.2")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "--django: 4.2: choose from 5.2, 6.0."

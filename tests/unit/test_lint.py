"""Lint and types: ruff and mypy, as pyproject.toml configures them, find nothing.

Both run here, as subprocesses of the test environment, so that the test
suite (and with it CI) fails on a finding of either and shows it.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_ruff_finds_nothing_in_the_checkout():
    """Find no violation of the configured rules in any Python file of the checkout, tests and bench included."""
    result = run_module("ruff", "check", "--no-cache", "--output-format", "full", ".")
    if result.returncode != 0:
        pytest.fail(f"ruff check found:\n{result.stdout}{result.stderr}", pytrace=False)


def test_mypy_finds_no_type_errors_in_the_application():
    """Find no type error in the packages and scripts pyproject.toml names, checked with the Django and DRF plugins."""
    # The Django plugin imports the settings and sets up the apps, which
    # connects to nothing: these only keep the settings from starting the
    # embedded PostgreSQL and Redis that an unset URL would.
    env = {**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/unused", "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_module("mypy", env=env)
    if result.returncode != 0 or "Success: no issues found" not in result.stdout:
        pytest.fail(f"mypy found:\n{result.stdout}{result.stderr}", pytrace=False)

"""JOBS_USER_MAX_RUNNING as the environment gives it."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

READ = "from jobs import conf; print(repr(conf.get('JOBS_USER_MAX_RUNNING')))"


def settings_with(value: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "shell", "-c", READ], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "JOBS_USER_MAX_RUNNING": value}, timeout=120)


@pytest.mark.parametrize(("value", "read"), [("3", "3"), ("0", "None"), ("", "2")])
def test_the_running_limit_is_a_whole_number_or_none(value, read):
    """Read a positive number as the limit, 0 as no limit, and nothing as the default."""
    result = settings_with(value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == read


@pytest.mark.parametrize("value", ["-1", "two"])
def test_a_running_limit_that_is_no_whole_number_stops_the_settings_from_loading(value):
    """Refuse to start, saying why, rather than limit users to something nobody meant."""
    result = settings_with(value)
    assert result.returncode != 0
    assert f"JOBS_USER_MAX_RUNNING must be a whole number of jobs, or 0 for no limit, not {value!r}" in result.stderr

"""A fresh clone of the project, and virtualenvs for dev.py that install without downloading anything."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import django
import pytest

import dev
from tests.conftest import ROOT

# The Django series these tests run on, as dev.py names it.
RUNNING_SERIES = f"{django.VERSION[0]}.{django.VERSION[1]}"


def fresh_clone(target: Path) -> Path:
    """Copy the tracked files of the working tree to `target`, as a clone of it would hold them; return `target`."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # not a file deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _paths(python: str) -> dict:
    script = "import json, sysconfig; print(json.dumps({k: sysconfig.get_path(k) for k in ('purelib', 'platlib', 'data')}))"
    return json.loads(subprocess.run([python, "-c", script], capture_output=True, text=True, check=True).stdout)


def reusing_venv(target: Path, source: Path | None = None) -> Path:
    """Create a virtualenv at `target` that sees every package of the virtualenv `source`; return `target`.

    `source` is the one running the tests unless given. dev.py then installs
    into it as into any virtualenv, and pip finds every requirement already
    satisfied, so nothing is downloaded and `source` is left unchanged (not
    even its stamp file).
    """
    python = str(source / "bin" / "python") if source else sys.executable
    paths = _paths(python) if source else {k: sysconfig.get_path(k) for k in ("purelib", "platlib", "data")}
    subprocess.run([python, "-m", "venv", "--without-pip", str(target)], check=True)
    site = target / Path(paths["purelib"]).relative_to(paths["data"])
    ours = dict.fromkeys([paths["purelib"], paths["platlib"]])
    # Plain paths: the .pth files in there stay out, so the clone imports its own code.
    (site / "tests-virtualenv.pth").write_text("".join(f"{path}\n" for path in ours))
    return target


def series_under_test() -> list[str]:
    """Return the Django series this test run covers: those `dev.py test` ran, else the one running."""
    return os.environ.get("SKIPJACK_TEST_DJANGO", RUNNING_SERIES).split(",")


def reusing_venvs(base: Path) -> Path:
    """Create, where dev.py looks for them with SKIPJACK_VENV=`base`, a reusing virtualenv per tested series.

    And one of Django 5.2, which `dev.py run` and `manage` use, in a run of
    Django 6.0 alone. Each reuses the packages of dev.py's own virtualenv of
    that series (this one's for the series running). Return `base`.
    """
    wanted = dict.fromkeys([dev.DEFAULT_SERIES, *series_under_test()])
    for series in wanted:
        if series != RUNNING_SERIES and not (dev.venv_for(series) / "bin" / "python").exists():
            pytest.skip(f"dev.py's virtualenv of Django {series} is not installed (python3 dev.py test installs it)")
        target = base if series == dev.DEFAULT_SERIES else base.with_name(f"{base.name}-django{series}")
        reusing_venv(target, None if series == RUNNING_SERIES else dev.venv_for(series))
    return base

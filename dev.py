#!/usr/bin/env python3
"""Set up a virtualenv on first use, then run the system, a command or the tests.

    python3 dev.py run              # web + workers + embedded databases, prints a login
    python3 dev.py manage COMMAND   # a manage.py command: enqueue, runworker, queue_status, ...
    python3 dev.py test             # the test suite on Django 5.2, then on Django 6.0 (extra arguments go to pytest)
    python3 dev.py test --django 6.0 tests/unit    # one Django series only (or SKIPJACK_DJANGO=6.0)

`run` and `manage` install the runtime dependencies of pyproject.toml, with
Django 5.2 LTS, into .venv/ (or SKIPJACK_VENV); `test` adds the `dev` extra
(pytest, Playwright, Schemathesis, ...) and runs the suite once per Django
series, each in a virtualenv of its own: 5.2 in .venv/ under this Python,
6.0 in .venv-django6.0/ (or SKIPJACK_VENV with "-django6.0" appended) under
Python 3.12, the one Django 6.0 needs and the embedded PostgreSQL still has
wheels for. That Python is SKIPJACK_PYTHON312 if set, else this one if it is
3.12 or newer, else pyenv's or the PATH's python3.12. Each virtualenv
installs again when pyproject.toml changes.

Needs nothing but Python 3.11 or 3.12 (and a Python 3.12 for the Django 6.0
run). With DATABASE_URL / REDIS_URL unset, an embedded PostgreSQL and Redis
run under .data/.
"""

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SKIPJACK_VENV", ROOT / ".venv"))
PYTHON = VENV / "bin" / "python"
# The hash of the pyproject.toml installed from, the Django series, then the parts installed: "runtime", "dev".
STAMP_NAME = ".skipjack-installed"
STAMP = VENV / STAMP_NAME

# The Django series the project supports, oldest first: what each one adds to
# pyproject.toml's own range, and the oldest Python it runs on.
DJANGO_SERIES = {"5.2": "django>=5.2,<5.3", "6.0": "django>=6.0,<6.1"}
DJANGO_PYTHON = {"5.2": (3, 11), "6.0": (3, 12)}
# What `run` and `manage` use: the LTS.
DEFAULT_SERIES = "5.2"


def requirements(parts: list[str], series: str = DEFAULT_SERIES) -> list[str]:
    """Return the requirements of pyproject.toml's runtime dependencies and of the extras in `parts`, on `series`."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The runtime of this checkout's own project includes its embedded databases.
    extras = ["embedded" if part == "runtime" else part for part in parts]
    return [
        *project["dependencies"],
        *(req for extra in extras for req in project["optional-dependencies"][extra]),
        DJANGO_SERIES[series],
    ]


def venv_for(series: str) -> Path:
    """Return the virtualenv of Django `series`: VENV for the LTS, a sibling of it for the others."""
    if series == DEFAULT_SERIES:
        return VENV
    return VENV.with_name(f"{VENV.name}-django{series}")


def python_version(python: str) -> tuple[int, int] | None:
    """Return the (major, minor) version of the interpreter `python`, or None if it does not run."""
    try:
        done = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],  # noqa: S603 - an interpreter named by the user or found on this machine
                              capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def python_for(series: str) -> str:
    """Return the interpreter that runs Django `series`; exit with a one-line reason if there is none."""
    oldest = DJANGO_PYTHON[series]
    named = os.environ.get("SKIPJACK_PYTHON312") if series != DEFAULT_SERIES else None
    if named:
        version = python_version(named)
        if version is None or version < oldest:
            sys.exit(f"SKIPJACK_PYTHON312={named} is not a Python {oldest[0]}.{oldest[1]} or newer, "
                     f"which Django {series} needs.")
        return named
    if sys.version_info[:2] >= oldest:
        return sys.executable
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.12.*", "bin", "python3.12")),
                   key=lambda path: [int(part) for part in Path(path).parents[1].name.split(".") if part.isdigit()])
    # The PATH's python3.12 may be a pyenv shim of a version not selected, which does not run.
    candidates = [*reversed(found), *filter(None, [shutil.which("python3.12")])]
    for candidate in candidates:
        if (python_version(candidate) or (0, 0)) >= oldest:
            return candidate
    sys.exit(f"Django {series} needs Python {oldest[0]}.{oldest[1]}, and none was found (pyenv, PATH): "
             f"set SKIPJACK_PYTHON312 to one, or run one series: python3 dev.py test --django {DEFAULT_SERIES}")


def ensure_environment(parts: list[str], series: str = DEFAULT_SERIES, python: str | None = None) -> Path:
    """Create the virtualenv of `series` if missing and install what `parts` need, unless it already is.

    Return the virtualenv's python. `python` creates it (this interpreter by default).
    """
    python = python or sys.executable
    version = python_version(python) if python != sys.executable else sys.version_info[:2]
    if version is None or version < (3, 11):  # noqa: UP036 - run by whatever python3 there is, to say why not
        sys.exit("Skipjack needs Python 3.11 or newer.")
    if version >= (3, 13) and not os.environ.get("DATABASE_URL"):
        sys.exit(
            "The embedded PostgreSQL (pgserver) has wheels only for Python <= 3.12. "
            "Use Python 3.11/3.12, or set DATABASE_URL to a PostgreSQL >= 15 server."
        )
    venv = venv_for(series)
    venv_python = venv / "bin" / "python"
    if not venv_python.exists():
        print(f"Creating {venv} (Python {version[0]}.{version[1]}) ...", flush=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)  # noqa: S603 - the interpreter chosen above
        subprocess.run([venv_python, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip"], check=True)  # noqa: S603 - the virtualenv's own pip
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp_file = venv / STAMP_NAME
    stamp = stamp_file.read_text().split() if stamp_file.exists() else []
    installed = stamp[2:] if stamp[:2] == [pyproject, f"django-{series}"] else []
    if all(part in installed for part in parts):
        return venv_python
    what = "the runtime dependencies" if parts == ["runtime"] else "the runtime and test dependencies"
    print(f"Installing {what} of pyproject.toml with Django {series} into {venv} "
          "(on first use, and when pyproject.toml changes) ...", flush=True)
    # Only the dependencies, as the Dockerfile does: the code runs from this
    # directory, so the project itself needs no (editable) install or build.
    subprocess.run([venv_python, "-m", "pip", "install", "--disable-pip-version-check", *requirements(parts, series)], check=True)  # noqa: S603 - the virtualenv's own pip, with pyproject.toml's requirements
    stamp_file.write_text(" ".join([pyproject, f"django-{series}", *sorted(set(installed) | set(parts))]))
    print("Installed.", flush=True)
    return venv_python


def test_series(args: list[str]) -> tuple[list[str], list[str]]:
    """Split `--django SERIES` (repeatable, or comma-separated) out of `args`: return (series, pytest's args).

    Without the option, SKIPJACK_DJANGO (comma-separated) if set, else every supported series.
    """
    chosen, rest = [], []
    words = iter(args)
    for word in words:
        if word == "--django":
            chosen += next(words, "").split(",")
        elif word.startswith("--django="):
            chosen += word.split("=", 1)[1].split(",")
        else:
            rest.append(word)
    if not chosen:
        chosen = (os.environ.get("SKIPJACK_DJANGO") or ",".join(DJANGO_SERIES)).split(",")
    chosen = [series.strip() for series in chosen if series.strip()]
    unknown = [series for series in chosen if series not in DJANGO_SERIES]
    if unknown or not chosen:
        sys.exit(f"--django: {', '.join(unknown) or 'nothing given'}: choose from {', '.join(DJANGO_SERIES)}.")
    return [series for series in DJANGO_SERIES if series in chosen], rest


def run_tests(args: list[str]) -> None:
    """Run pytest with `args` once per chosen Django series, each in its own virtualenv; exit with the outcome."""
    chosen, pytest_args = test_series(args)
    pythons = {series: python_for(series) for series in chosen}  # every interpreter found before anything runs
    venvs = {series: ensure_environment(["runtime", "dev"], series, pythons[series]) for series in chosen}
    os.chdir(ROOT)
    # The tests read which series this run covers (tests/process/test_readme.py).
    os.environ["SKIPJACK_TEST_DJANGO"] = ",".join(chosen)
    failed: list[str] = []
    for series in chosen:
        if len(chosen) > 1:
            print(f"\n=== Django {series}: {venvs[series]}", flush=True)
        if series == chosen[-1] and not failed:
            # The last (or only) run replaces this process: its exit code, signals and output are pytest's own.
            os.execv(venvs[series], [str(venvs[series]), "-m", "pytest", *pytest_args])  # noqa: S606 - the virtualenv's own python, given the command line
        try:
            code = subprocess.run([venvs[series], "-m", "pytest", *pytest_args], check=False).returncode  # noqa: S603 - the virtualenv's own python, given the command line
        except KeyboardInterrupt:
            sys.exit(130)
        if code != 0:
            failed.append(f"Django {series} (pytest exited {code})")
    sys.exit(f"Tests failed on {', '.join(failed)}." if failed else 0)


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "run":
        python = ensure_environment(["runtime"])
        os.execv(python, [str(python), str(ROOT / "manage.py"), "serve", *rest])  # noqa: S606 - the virtualenv's own python, given the command line
    elif command == "manage":
        python = ensure_environment(["runtime"])
        os.execv(python, [str(python), str(ROOT / "manage.py"), *rest])  # noqa: S606 - the virtualenv's own python, given the command line
    elif command == "test":
        run_tests(rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

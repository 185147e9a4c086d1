#!/usr/bin/env python3
"""Set up a virtualenv on first use, then run the system, a command or the tests.

    python3 dev.py run              # web + workers + embedded databases, prints a login
    python3 dev.py manage COMMAND   # a manage.py command: enqueue, runworker, queue_status, ...
    python3 dev.py test             # the test suite (extra arguments go to pytest)

`run` and `manage` install the runtime dependencies of pyproject.toml into
.venv/ (or SKIPJACK_VENV); `test` adds the `dev` extra (pytest, Playwright,
Schemathesis, ...). Each installs again when pyproject.toml changes.

Needs nothing but Python 3.11 or 3.12. With DATABASE_URL / REDIS_URL unset, an
embedded PostgreSQL and Redis run under .data/.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SKIPJACK_VENV", ROOT / ".venv"))
PYTHON = VENV / "bin" / "python"
# The hash of the pyproject.toml installed from, then the parts installed: "runtime", "dev".
STAMP = VENV / ".skipjack-installed"


def requirements(parts: list[str]) -> list[str]:
    """Return the requirements of pyproject.toml's runtime dependencies and of the extras in `parts`."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [part for part in parts if part != "runtime"]
    return [*project["dependencies"], *(req for extra in extras for req in project["optional-dependencies"][extra])]


def ensure_environment(parts: list[str]) -> None:
    """Create the virtualenv if missing and install what `parts` need, unless it already is."""
    if sys.version_info < (3, 11):  # noqa: UP036 - run by whatever python3 there is, to say why not
        sys.exit("Skipjack needs Python 3.11 or newer.")
    if sys.version_info >= (3, 13) and not os.environ.get("DATABASE_URL"):
        sys.exit(
            "The embedded PostgreSQL (pgserver) has wheels only for Python <= 3.12. "
            "Use Python 3.11/3.12, or set DATABASE_URL to a PostgreSQL >= 15 server."
        )
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
        subprocess.run([PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip"], check=True)  # noqa: S603 - the virtualenv's own pip
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = STAMP.read_text().split() if STAMP.exists() else []
    installed = stamp[1:] if stamp[:1] == [pyproject] else []
    if all(part in installed for part in parts):
        return
    what = "the runtime dependencies" if parts == ["runtime"] else "the runtime and test dependencies"
    print(f"Installing {what} of pyproject.toml into {VENV} (on first use, and when pyproject.toml changes) ...",
          flush=True)
    # Only the dependencies, as the Dockerfile does: the code runs from this
    # directory, so the project itself needs no (editable) install or build.
    subprocess.run([PYTHON, "-m", "pip", "install", "--disable-pip-version-check", *requirements(parts)], check=True)  # noqa: S603 - the virtualenv's own pip, with pyproject.toml's requirements
    STAMP.write_text(" ".join([pyproject, *sorted(set(installed) | set(parts))]))
    print("Installed.", flush=True)


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "run":
        ensure_environment(["runtime"])
        os.execv(PYTHON, [str(PYTHON), str(ROOT / "manage.py"), "serve", *rest])  # noqa: S606 - the virtualenv's own python, given the command line
    elif command == "manage":
        ensure_environment(["runtime"])
        os.execv(PYTHON, [str(PYTHON), str(ROOT / "manage.py"), *rest])  # noqa: S606 - the virtualenv's own python, given the command line
    elif command == "test":
        ensure_environment(["runtime", "dev"])
        os.chdir(ROOT)
        os.execv(PYTHON, [str(PYTHON), "-m", "pytest", *rest])  # noqa: S606 - the virtualenv's own python, given the command line
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

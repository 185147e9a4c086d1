#!/usr/bin/env python3
"""Set up a virtualenv on first use, then run the system or the tests.

    python3 dev.py run     # web + workers + embedded databases, prints a login
    python3 dev.py test    # the test suite (extra arguments go to pytest)

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
STAMP = VENV / ".skipjack-installed"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit("Skipjack needs Python 3.11 or newer.")
    if sys.version_info >= (3, 13) and not os.environ.get("DATABASE_URL"):
        sys.exit(
            "The embedded PostgreSQL (pgserver) has wheels only for Python <= 3.12. "
            "Use Python 3.11/3.12, or set DATABASE_URL to a PostgreSQL >= 15 server."
        )
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        print("Installing Skipjack and its dependencies ...", flush=True)
        subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"], check=True)
        STAMP.write_text(wanted)


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "run":
        ensure_environment()
        os.execv(PYTHON, [str(PYTHON), str(ROOT / "manage.py"), "serve", *rest])
    elif command == "test":
        ensure_environment()
        os.chdir(ROOT)
        os.execv(PYTHON, [str(PYTHON), "-m", "pytest", *rest])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

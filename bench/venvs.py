"""A virtualenv per peer under bench/.venvs/, so no peer's dependencies touch the project's."""

import hashlib
import subprocess
import sys

from bench.lib import VENVS_DIR, log


def ensure_venv(name: str, requirements: list[str]) -> str:
    """Create (or update) bench/.venvs/<name> with `requirements`; return its python."""
    venv = VENVS_DIR / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements"
    wanted = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    if not python.exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log(f"installing into {venv}: {' '.join(requirements)}")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
                   check=True)
    stamp.write_text(wanted)
    return str(python)


def package_version(python: str, package: str) -> str:
    done = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True, check=False,
    )
    return done.stdout.strip() or "?"

"""A fresh clone of the project, and a virtualenv for dev.py that installs without downloading anything."""

import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

from tests.conftest import ROOT


def fresh_clone(target: Path) -> Path:
    """Copy the tracked files of the working tree to `target`, as a clone of it would hold them; return `target`."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # not a file deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def reusing_venv(target: Path) -> Path:
    """Create a virtualenv at `target` that sees every package of the one running the tests; return `target`.

    dev.py then installs into it as into any virtualenv, and pip finds every
    requirement already satisfied, so nothing is downloaded and the tests'
    own virtualenv is left unchanged (not even its stamp file).
    """
    venv.create(target, with_pip=False)
    site = target / Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    # Plain paths: the .pth files in there (the tests' editable install of
    # the project among them) stay out, so the clone imports its own code.
    (site / "tests-virtualenv.pth").write_text("".join(f"{path}\n" for path in ours))
    return target

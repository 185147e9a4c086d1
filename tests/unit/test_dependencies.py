"""The dependency audit: pip-audit checks what is installed against PyPI's vulnerability data.

PyPI's JSON API (https://pypi.org/pypi/<name>/<version>/json) lists the
known vulnerabilities of each release. Each run first audits a pin with
known vulnerabilities, so an audit that cannot see that data, and would
pass while checking nothing, is never taken for a clean one: where the
data cannot be reached the tests are skipped with the reason, unless
SKIPJACK_AUDIT_REQUIRED=1 (the weekly job, `.ci/audit`, on a machine that
reaches it), which makes that a failure.
"""

import json
import os
import subprocess
import sys

import pytest

# requests 2.25.0 has known vulnerabilities (CVE-2023-32681 and later ones), fixed in newer releases.
KNOWN_VULNERABLE = "requests==2.25.0"


def pip_audit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip_audit", "--vulnerability-service", "pypi", "--progress-spinner", "off",
         "--format", "json", "--timeout", "30", *args],
        capture_output=True, text=True, timeout=600,
    )


def report(result: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(result.stdout)
    except ValueError:
        return {"dependencies": [], "error": result.stderr.strip()[-2000:]}


def unreachable(reason: str):
    if os.environ.get("SKIPJACK_AUDIT_REQUIRED") == "1":
        pytest.fail(f"The dependency audit could not run: {reason}")
    pytest.skip(f"PyPI's vulnerability data cannot be reached from here, so nothing would be audited "
                f"({reason}); .ci/audit runs this weekly where it can (docs/operations.md)")


@pytest.fixture(scope="module")
def known_vulnerable_audit(tmp_path_factory) -> dict:
    """Audit KNOWN_VULNERABLE; skip (or fail) the module's tests if PyPI's vulnerability data cannot be read."""
    requirements = tmp_path_factory.mktemp("audit") / "requirements.txt"
    requirements.write_text(KNOWN_VULNERABLE + "\n")
    result = pip_audit("--requirement", str(requirements), "--no-deps", "--disable-pip")
    audited = report(result)
    skipped = [dep["skip_reason"] for dep in audited["dependencies"] if "skip_reason" in dep]
    if skipped or "error" in audited:
        unreachable("; ".join(skipped) or audited["error"] or f"pip-audit exited {result.returncode}")
    return {"returncode": result.returncode, **audited}


def test_the_audit_fails_on_a_pin_with_known_vulnerabilities(known_vulnerable_audit):
    """Exit non-zero and name the vulnerabilities of a release that has some, with the versions that fix them."""
    assert known_vulnerable_audit["returncode"] == 1
    (dependency,) = known_vulnerable_audit["dependencies"]
    assert (dependency["name"].lower(), dependency["version"]) == ("requests", "2.25.0")
    ids = {vuln["id"] for vuln in dependency["vulns"]} | {a for vuln in dependency["vulns"] for a in vuln["aliases"]}
    assert "CVE-2023-32681" in ids, ids
    assert all(vuln["fix_versions"] for vuln in dependency["vulns"])


def test_the_installed_dependencies_have_no_known_vulnerabilities(known_vulnerable_audit):
    """Find no known vulnerability in any package installed in this environment, and audit every one of them."""
    # The project itself, if installed (in editable mode), is not on PyPI.
    result = pip_audit("--skip-editable")
    audited = report(result)
    assert "error" not in audited, audited["error"]
    vulnerable = {f"{dep['name']} {dep['version']}": [v["id"] for v in dep["vulns"]]
                  for dep in audited["dependencies"] if dep.get("vulns")}
    skipped = [dep["skip_reason"] for dep in audited["dependencies"] if "skip_reason" in dep and dep["name"] != "skipjack"]
    assert not vulnerable, f"known vulnerabilities: {vulnerable}; fixes: {audited.get('fixes')}"
    assert not skipped, f"not audited: {skipped}"
    assert result.returncode == 0, result.stderr

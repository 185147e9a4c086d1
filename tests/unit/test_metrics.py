"""The queue's Prometheus metrics: read from the database at scrape time, right with several workers."""



from tests.db.test_metrics import job_gauges_read_at_every_scrape  # noqa: F401 - fixtures


def test_a_bad_allowlist_entry_stops_the_settings_from_loading():
    """Refuse to start with an entry in METRICS_ALLOW_IPS that is no address or network."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "METRICS_ALLOW_IPS": "10.0.0.0/8,prometheus"}, timeout=120)
    assert result.returncode != 0
    assert "METRICS_ALLOW_IPS: 'prometheus' is not an IP address or network" in result.stderr

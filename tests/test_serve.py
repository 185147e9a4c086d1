"""`manage.py serve`: the whole system as one program, stopped cleanly by Ctrl-C."""

import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from django.conf import settings

from jobs import queue
from jobs.models import Job, JobStatus
from tests.conftest import ROOT, database_url_for_tests, free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]


def test_serve_runs_web_and_worker_and_stops_on_ctrl_c(tmp_path):
    """Print a working admin login, serve HTTP, run jobs, and exit 0 on SIGINT with no child left."""
    import psutil

    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "DATABASE_URL": database_url_for_tests(), "REDIS_URL": settings.REDIS_URL,
           "SKIPJACK_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Login:" in log.read_text(), timeout=60, message="the printed login")
        username, password = log.read_text().split("Login:")[1].split("\n")[0].strip().split(" / ")
        assert username == "admin" and (tmp_path / "admin_password").read_text().strip() == password
        from django.contrib.auth import get_user_model

        assert get_user_model().objects.get(username="admin").check_password(password)

        def admin_page():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2).status == 200
            except OSError:
                return False

        wait_for(admin_page, timeout=60, message="the web server")
        job = queue.enqueue("reverse_string", "hello world")
        wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED, message="the worker")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if proc.poll() is None:
            proc.kill()

"""`manage.py serve` and its web server: the whole system as one program, stopped cleanly by Ctrl-C."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from django.conf import settings
from django.test import Client

from jobs import queue
from jobs.models import Job, JobStatus
from jobs.stack import WEB_SHUTDOWN_OPTIONS
from tests.conftest import ROOT, ChildProcess, database_url_for_tests, free_port, wait_for
from tests.factories import UserFactory

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


def dashboard_cookie(settings) -> str:
    """Return the Cookie header of a signed-in staff user, valid for the servers this test starts."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    return f"sessionid={client.cookies['sessionid'].value}"


async def open_dashboards(url: str, cookie: str, *, came_and_went: int, kept: int) -> list:
    """Open and close `came_and_went` dashboard WebSockets on `url`, ten at a time; return `kept` more, open."""
    import websockets

    ws_url = url.replace("http://", "ws://") + "/ws/events/"
    headers = {"Cookie": cookie, "Origin": url}
    for start in range(0, came_and_went, 10):
        gone = [await websockets.connect(ws_url, additional_headers=headers)
                for _ in range(min(10, came_and_went - start))]
        await asyncio.sleep(0.2)
        for ws in gone:
            await ws.close()
    kept_open = [await websockets.connect(ws_url, additional_headers=headers) for _ in range(kept)]
    await asyncio.sleep(0.3)
    return kept_open


def stop_with_sockets_open(process: ChildProcess, url: str, cookie: str, *, came_and_went: int, kept: int) -> float:
    """Stop `process` with SIGINT while dashboards are open; return the seconds until it exited."""

    async def scenario():
        sockets = await open_dashboards(url, cookie, came_and_went=came_and_went, kept=kept)
        started = time.monotonic()
        process.signal(signal.SIGINT)
        while process.proc.poll() is None and time.monotonic() - started < 30:
            await asyncio.sleep(0.05)
        for ws in sockets:
            await ws.close()
        return time.monotonic() - started

    return asyncio.run(scenario())


def test_web_server_stops_at_once_on_ctrl_c_with_dashboards_open(start_server, settings):
    """Exit 0 within 3 s of SIGINT, logging no ERROR, after 100 dashboards' sockets came and went, 2 still open.

    The consumer of a socket that closed as its channel-layer receive began
    a new round kept polling Redis (queueproject/channel_layer.py), so
    uvicorn waited out its graceful timeout, then logged "Cancel 1 running
    task(s), timeout graceful shutdown exceeded". One closing socket in a
    few dozen hit that; a hundred all but always did.
    """
    cookie = dashboard_cookie(settings)
    server = start_server(extra_args=WEB_SHUTDOWN_OPTIONS).wait_until_up()
    took = stop_with_sockets_open(server, server.url, cookie, came_and_went=100, kept=2)
    assert server.wait(timeout=10) == 0
    assert "ERROR" not in server.output()
    assert took < 3, server.output()  # it was the graceful timeout, 5 s


class Serve(ChildProcess):
    """A real `manage.py serve` on the test database, keeping its data in `data_dir`."""

    def __init__(self, data_dir, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["manage.py", "serve", "--port", str(self.port), *args],
                         # This test's key, which signs the sessions it opens dashboards with.
                         env={"SKIPJACK_DATA_DIR": str(data_dir), "SECRET_KEY": settings.SECRET_KEY})

    def wait_until_up(self):
        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited: {self.output()}")
            try:
                return urllib.request.urlopen(self.url + "/admin/login/", timeout=2).status == 200  # noqa: S310 - an http URL of the server the test started
            except OSError:
                return False

        wait_for(lambda: "Press Ctrl-C to stop." in self.output(), timeout=60, message="the banner")
        wait_for(up, timeout=60, message="the web server")
        return self

    def after_banner(self) -> str:
        return self.output().split("Press Ctrl-C to stop.", 1)[1]


def test_serve_prints_its_banner_then_only_warnings_and_errors(tmp_path, settings):
    """Print the login, where its password is kept and the --port option; then no INFO line, and no ERROR on Ctrl-C.

    Requests, dashboards' WebSockets and jobs run meanwhile, and a dashboard
    is still open when Ctrl-C stops it all, promptly and with exit code 0.
    """
    cookie = dashboard_cookie(settings)
    serve = Serve(tmp_path).wait_until_up()
    try:
        banner = serve.output()
        assert f"(the password is kept in {tmp_path / 'admin_password'})" in banner
        assert "--port" in banner and "--access-log" in banner
        urllib.request.urlopen(serve.url + "/dashboard/", timeout=5)  # noqa: S310 - an http URL of the server the test started
        job = queue.enqueue("reverse_string", "hello world")
        wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED, message="the worker")
        took = stop_with_sockets_open(serve, serve.url, cookie, came_and_went=10, kept=1)
        assert serve.wait(timeout=10) == 0
    finally:
        serve.stop()
    after = serve.after_banner()
    assert "Stopping." in after
    assert " INFO " not in after and "ERROR" not in after, after
    assert took < 5, after


def test_serve_logs_requests_and_websockets_with_access_log(tmp_path, settings):
    """Log each HTTP request and each WebSocket's opening with --access-log."""
    cookie = dashboard_cookie(settings)
    serve = Serve(tmp_path, "--access-log").wait_until_up()
    try:
        urllib.request.urlopen(serve.url + "/dashboard/", timeout=5)  # noqa: S310 - an http URL of the server the test started
        wait_for(lambda: "GET /dashboard/ 302" in serve.after_banner(), timeout=10, message="the request's line")
        stop_with_sockets_open(serve, serve.url, cookie, came_and_went=0, kept=1)
        assert serve.wait(timeout=10) == 0
    finally:
        serve.stop()
    assert '"WebSocket /ws/events/" [accepted]' in serve.after_banner()


def test_serve_refuses_a_port_in_use_and_names_the_option_to_choose_another(tmp_path):
    """Exit 1 at once, before starting anything, saying the port is taken and how to pick another."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = ChildProcess(["manage.py", "serve", "--port", str(port)], env={"SKIPJACK_DATA_DIR": str(tmp_path)})
        try:
            assert serve.wait(timeout=30) == 1
        finally:
            serve.stop()
    assert f"Port {port} on 127.0.0.1 is in use. Choose another with --port" in serve.output()
    assert not (tmp_path / "admin_password").exists()


def test_serve_says_what_its_stop_waits_for_and_a_second_ctrl_c_ends_the_wait(tmp_path):
    """Say on Ctrl-C that running jobs get 30 s, and exit within seconds of a second Ctrl-C with a job still running."""
    serve = Serve(tmp_path).wait_until_up()
    try:
        job = queue.enqueue("sleep", {"seconds": 60})
        wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.RUNNING, message="the job to start")
        serve.signal(signal.SIGINT)
        wait_for(lambda: "Stopping." in serve.after_banner(), timeout=5, message="the stop's message")
        time.sleep(1)
        assert serve.proc.poll() is None  # the worker gives the job its time
        started = time.monotonic()
        serve.signal(signal.SIGINT)
        assert serve.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        serve.stop()
    after = serve.after_banner()
    assert "The worker gives running jobs up to 30 s to finish; Ctrl-C again stops it now." in after
    assert "Stopping now." in after
    assert Job.objects.get(pk=job.pk).status != JobStatus.RUNNING


def test_serve_keeps_an_admin_password_changed_since_it_made_the_account(tmp_path):
    """Leave the admin's password alone when it is no longer the first one, and print no stale one."""
    first = Serve(tmp_path).wait_until_up()
    first.stop()
    password = (tmp_path / "admin_password").read_text().strip()
    assert f"Login:     admin / {password}\n" in first.output()
    admin = UserFactory._meta.model.objects.get(username="admin")
    admin.set_password("changed-in-the-admin-9")
    admin.save()

    again = Serve(tmp_path).wait_until_up()
    again.stop()
    admin.refresh_from_db()
    assert admin.check_password("changed-in-the-admin-9")
    assert password not in again.output()
    assert "Login:     admin / (your own)\n" in again.output()
    assert "no longer the first one: it was changed, and serve leaves it alone" in again.output()


def test_the_development_files_of_secrets_are_readable_by_their_owner_only(tmp_path):
    """Create .data/secret_key and .data/admin_password with mode 0600, and narrow a wider one, keeping its key."""
    import stat

    def settings_key() -> str:
        code = "from django.conf import settings; print(settings.SECRET_KEY)"
        env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**env, "SKIPJACK_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "queueproject.settings",
                 "DATABASE_URL": database_url_for_tests(), "REDIS_URL": settings.REDIS_URL},
            preexec_fn=lambda: os.umask(0o022),  # a common umask, under which a plain write is world-readable
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    key_file = tmp_path / "secret_key"
    key = settings_key()
    assert key == key_file.read_text().strip() and len(key) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.chmod(0o644)  # as an earlier version left it
    assert settings_key() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    serve = Serve(tmp_path).wait_until_up()
    serve.stop()
    assert stat.S_IMODE((tmp_path / "admin_password").stat().st_mode) == 0o600

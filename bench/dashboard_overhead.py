#!/usr/bin/env python3
"""Measure what the dashboard's live events cost the workers.

    .venv/bin/python bench/dashboard_overhead.py                  # 20,000 jobs x 3 rounds per mode
    .venv/bin/python bench/dashboard_overhead.py --jobs 50000 --rounds 5 --sockets 20
    .venv/bin/python bench/dashboard_overhead.py --json --skip-events-mode   # what bench/run.py runs

Drains the same batch of jobs, owned by many users, with `runworker --burst`
processes in three modes (two with --skip-events-mode), alternating so drift
hits them alike:

  off        JOBS_EVENTS=0: nothing is published
  events     JOBS_EVENTS=1 and no dashboard open: what publishing alone costs
  dashboard  JOBS_EVENTS=1, and dashboards are open: WebSocket clients signed
             in through uvicorn (half staff, half job owners) that, like the
             page's script, re-fetch the overview fragment over HTTP at most
             every 2 seconds after a message

and prints jobs/s for each, the slowdown, and how many messages a socket
received (coalescing keeps that to a few a second however fast jobs finish).
The slowdown is the median over rounds of each round's own: the modes of a
round run back to back, so drift in this machine's speed between rounds
stays out of it (the slowdown of the modes' median rates is printed too).
A drain's time runs from its first job's start to its last job's finish, as
the jobs table records them, so the workers' start-up is left out.
The issue's bar: the dashboard costs the workers less than 10 %. Everything
runs on this one machine, so the web server rendering the dashboards' pages
and this script playing their browsers take CPU from the workers too.

With --json it prints the figures as one JSON line and exits 0 whatever the
slowdown: the benchmark harness (bench/run.py, scenario dashboard_stream)
judges them. Otherwise the exit status is 1 when the slowdown is 10 % or more.

Needs the local PostgreSQL (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432),
where it drops and creates BENCH_DASHBOARD_DB (default skipjack_bench_dashboard),
and Redis (BENCH_DASHBOARD_REDIS_URL, default redis://127.0.0.1:6379/11).
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib import free_port  # noqa: E402

PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
REDIS_URL = os.environ.get("BENCH_DASHBOARD_REDIS_URL", "redis://127.0.0.1:6379/11")
DATABASE = os.environ.get("BENCH_DASHBOARD_DB", "skipjack_bench_dashboard")
OWNERS = 50
# Like the overview page's script: after a message, re-fetch at most this often.
REFRESH_SECONDS = 2.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def setup_django():
    os.environ["DATABASE_URL"] = f"{PG_URL}/{DATABASE}"
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ["DJANGO_SETTINGS_MODULE"] = "queueproject.settings"
    os.environ["LOG_LEVEL"] = "WARNING"
    # This process only enqueues; its own events would be noise.
    os.environ["JOBS_EVENTS"] = "0"
    import django

    django.setup()


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def child_env(events: bool) -> dict:
    return {**os.environ, "JOBS_EVENTS": "1" if events else "0", "PYTHONUNBUFFERED": "1"}


def sessions(users) -> list[str]:
    """Return a session cookie value for each user, as a login would make."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    SessionStore = import_module(settings.SESSION_ENGINE).SessionStore

    keys = []
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    return keys


class Dashboards:
    """Open dashboards: WebSocket clients that re-fetch the overview after messages, throttled."""

    def __init__(self, base: str, cookies: list[str]):
        self.base = base
        self.cookies = cookies
        self.messages = [0] * len(cookies)
        self.fetches = [0] * len(cookies)
        self.sockets = []
        self._stop = None
        self._thread = None
        self._ready = threading.Event()

    def start(self):
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("dashboards did not connect")

    def stop(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connected = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(self._client(i, connected)) for i in range(len(self.cookies))]
        for _ in tasks:
            await connected.acquire()
        self._ready.set()
        await self._stop.wait()
        # Close each socket properly, or the server waits for them at shutdown.
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, index: int, connected: asyncio.Semaphore):
        import websockets

        url = self.base.replace("http://", "ws://") + "/ws/events/"
        headers = {"Cookie": f"sessionid={self.cookies[index]}", "Origin": self.base}
        async with websockets.connect(url, additional_headers=headers) as ws:
            self.sockets.append(ws)
            connected.release()
            last_fetch = 0.0
            pending = None
            async for _ in ws:
                if self._stop.is_set():
                    break
                self.messages[index] += 1
                if pending is None or pending.done():
                    wait = max(0.0, last_fetch + REFRESH_SECONDS - time.monotonic())
                    pending = asyncio.create_task(self._fetch(index, wait))
                    last_fetch = time.monotonic() + wait

    async def _fetch(self, index: int, wait: float):
        await asyncio.sleep(wait)
        request = urllib.request.Request(  # noqa: S310 - an http URL of the server this run started
            self.base + "/dashboard/",
            headers={"Cookie": f"sessionid={self.cookies[index]}", "HX-Request": "true", "HX-Target": "live"},
        )
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).read())  # noqa: S310 - an http URL of the server this run started
        self.fetches[index] += 1


def _stat(pid) -> list[str]:
    # The fields after the command name, which may itself hold spaces or brackets.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """Return the CPU time process `pid` has used so far (user + system)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_of(name: str, *, reaped: bool = False) -> float | None:
    """Return the CPU time used so far by every process called `name`, or None if there is none.

    With `reaped`, add what the exited children of the group's first process
    used: for PostgreSQL, the backends of connections closed meanwhile.
    """
    ticks = 0
    found = False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != name:
                continue
            fields = _stat(entry.name)
            parent = (Path("/proc") / fields[1] / "comm").read_text().strip() if fields[1] != "0" else ""
        except OSError:  # gone meanwhile
            continue
        found = True
        ticks += int(fields[11]) + int(fields[12])
        if reaped and parent != name:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def services_cpu_seconds() -> dict[str, float]:
    """Return the CPU time this machine's PostgreSQL and Redis have used so far, where /proc shows them.

    They are counted whole, so nothing else should use them meanwhile.
    """
    used = {"postgres": _cpu_of("postgres", reaped=True), "redis": _cpu_of("redis-server")}
    return {who: seconds for who, seconds in used.items() if seconds is not None}


def _commits() -> int:
    """Return how many transactions have committed in the benchmark's database so far."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def drain(jobs: int, workers: int, events: bool, owners, server_pid: int) -> tuple[float, dict]:
    """Enqueue `jobs` jobs spread over `owners`, drain them with burst workers; return jobs/s and CPU used.

    The time is the store's: from the first job's start to the last job's
    finish. The CPU seconds, over the workers' lifetime, are the workers',
    uvicorn's, this process's (the dashboards' clients, when open) and,
    where /proc shows them, PostgreSQL's and Redis's.
    """
    from django.db import connection

    from jobs import queue

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_job, jobs_worker")
    per_owner = jobs // len(owners)
    for owner in owners:
        for start in range(0, per_owner, 1000):
            queue.enqueue_many("reverse_string", ["benchmark"] * min(1000, per_owner - start), owner=owner)
    command = [sys.executable, str(ROOT / "manage.py"), "runworker", "--burst", "--concurrency", "10", "--prefetch", "100"]
    commits = _commits()
    before = (resource.getrusage(resource.RUSAGE_CHILDREN), cpu_seconds(server_pid), time.process_time(),
              services_cpu_seconds())
    procs = [subprocess.Popen(command, cwd=ROOT, env=child_env(events)) for _ in range(workers)]
    for proc in procs:
        if proc.wait(timeout=900) != 0:
            raise RuntimeError(f"a worker exited with {proc.returncode}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {
        "workers": children.ru_utime + children.ru_stime - before[0].ru_utime - before[0].ru_stime,
        "server": cpu_seconds(server_pid) - before[1],
        "clients": time.process_time() - before[2],
    }
    after = services_cpu_seconds()
    cpu.update({who: after[who] - seconds for who, seconds in before[3].items() if who in after})
    # Fewer jobs per claim or completion show up as more transactions.
    cpu["transactions"] = _commits() - commits
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float8"
            " FROM jobs_job WHERE status = 'completed'"
        )
        done, seconds = cursor.fetchone()
    if done != per_owner * len(owners):
        raise RuntimeError(f"only {done} of {per_owner * len(owners)} jobs completed")
    return done / seconds, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="runworker processes")
    parser.add_argument("--sockets", type=int, default=10, help="open dashboards in the 'dashboard' mode")
    parser.add_argument("--skip-events-mode", action="store_true",
                        help="Alternate 'off' and 'dashboard' only, without the 'events' mode.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON line and exit 0.")
    args = parser.parse_args(argv)
    modes = ("off", "dashboard") if args.skip_events_mode else ("off", "events", "dashboard")

    recreate_database()
    setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    User = get_user_model()
    # No passwords: the sessions are made directly, and hashing one takes a fifth of a second.
    owners = [User.objects.create_user(f"owner{n}") for n in range(OWNERS)]
    staff = [User.objects.create_user(f"staff{n}", is_staff=True) for n in range(args.sockets // 2)]
    watchers = staff + owners[: args.sockets - len(staff)]
    cookies = sessions(watchers)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "queueproject.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "5"],
        cwd=ROOT, env=child_env(True),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/accounts/login/", timeout=2).read()  # noqa: S310 - an http URL of the server this run started
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.2)
        rates = {mode: [] for mode in modes}
        cpu = {mode: [] for mode in modes}
        received = []
        fetched = []
        for round_number in range(args.rounds):
            for mode in modes if round_number % 2 == 0 else reversed(modes):
                dashboards = None
                if mode == "dashboard":
                    dashboards = Dashboards(base, cookies)
                    dashboards.start()
                rate, used = drain(args.jobs, args.workers, mode != "off", owners, server.pid)
                cpu[mode].append(used)
                if dashboards is not None:
                    time.sleep(1.5)  # the last coalesced messages
                    dashboards.stop()
                    received.append(statistics.mean(dashboards.messages))
                    fetched.append(statistics.mean(dashboards.fetches))
                rates[mode].append(rate)
                log(f"round {round_number + 1} {mode:9s} {rate:8.0f} jobs/s")
    finally:
        server.terminate()
        try:
            # --timeout-graceful-shutdown bounds uvicorn's wait for open
            # connections to 5 s, as in the Dockerfile.
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    off, on = statistics.median(rates["off"]), statistics.median(rates["dashboard"])
    # Each round's modes run back to back, so a round's own ratio leaves out
    # the drift of this machine's speed between rounds (which, on a shared
    # 2-core machine, moves a mode's rate by 20 % from one minute to the next).
    slowdown = statistics.median((o - d) / o * 100 for o, d in zip(rates["off"], rates["dashboard"], strict=True))
    summary = {
        "jobs": args.jobs, "workers": args.workers, "sockets": args.sockets, "rounds": args.rounds,
        "events_off_jobs_per_s": round(off), "dashboard_open_jobs_per_s": round(on),
        "slowdown_percent": round(slowdown, 1),
        "slowdown_percent_per_round": [round((o - d) / o * 100, 1) for o, d in zip(rates["off"], rates["dashboard"], strict=True)],
        "slowdown_percent_of_medians": round((off - on) / off * 100, 1),
        "messages_per_socket_per_drain": round(statistics.mean(received), 1),
        "http_refetches_per_socket_per_drain": round(statistics.mean(fetched), 1),
        # Median CPU seconds per drain, by whom: where the cost of the dashboards goes
        # (and the transactions committed in the database meanwhile).
        "cpu_seconds_per_drain": {
            mode: {who: round(statistics.median(d[who] for d in cpu[mode]), 2) for who in cpu[mode][0]}
            for mode in modes
        },
    }
    if "events" in rates:
        summary["events_on_no_dashboard_jobs_per_s"] = round(statistics.median(rates["events"]))
        summary["publishing_slowdown_percent"] = round(
            statistics.median((o - e) / o * 100 for o, e in zip(rates["off"], rates["events"], strict=True)), 1
        )
    if args.json:
        print(json.dumps(summary))
        return 0
    print(json.dumps(summary, indent=2))
    print(f"\nWorkers drain {on:.0f} jobs/s with {args.sockets} dashboards open and {off:.0f} jobs/s with "
          f"events off: {slowdown:+.1f} % ({'within' if slowdown < 10 else 'over'} the 10 % budget).")
    return 0 if slowdown < 10 else 1


if __name__ == "__main__":
    sys.exit(main())

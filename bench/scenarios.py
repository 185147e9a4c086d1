"""The benchmark scenarios, in the order the issue lists them, and the registry that runs them.

A scenario is a function `run(ctx, system) -> dict` registered with
@scenario; its figures fill the rows of bench/report.py that name it.
"""

import contextlib
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

from bench.lib import BENCH_DIR, Database, Probes, WorkerGroup, free_port, log, percentile, run_json

BULK_BATCH = 1000  # jobs per bulk enqueue call (one statement / one transaction where supported)
LATENCY_RATE = 50.0  # jobs/s offered while measuring pickup latency
API_RATE = 100.0  # POST /api/jobs/ requests/s offered
STABILITY_LOAD = 0.65  # stability offers this share of the system's drain rate from the same run


@dataclass
class Mode:
    name: str
    single_jobs: int
    drain_jobs: dict  # per system: the slow peers drain fewer jobs so the run stays short
    drain_rounds: int  # each drain figure is the median of this many drains: one lasts a few seconds
    latency_seconds: float
    api_seconds: float
    dashboard_jobs: int
    dashboard_rounds: int  # each round drains once with the stream off and once with dashboards open
    stability_seconds: float
    stability_bucket: float


MODES = {
    "quick": Mode("quick", 1000, {"skipjack": 20000, "pgqueuer": 20000, "procrastinate": 2000, "celery": 4000,
                                  "skipjack_tasks": 20000, "django_tasks_db": 2000}, 1,
                  latency_seconds=6, api_seconds=8, dashboard_jobs=20000, dashboard_rounds=1,
                  stability_seconds=24, stability_bucket=4),
    # django-tasks-db drains about 100 tasks/s (its workers take one row at a time): 20,000 would
    # outlast a drain's deadline (count / 100 seconds), and 5,000 already takes a minute a round.
    "full": Mode("full", 5000, {"skipjack": 20000, "pgqueuer": 20000, "procrastinate": 20000, "celery": 20000,
                                 "skipjack_tasks": 20000, "django_tasks_db": 5000}, 3,
                 latency_seconds=30, api_seconds=30, dashboard_jobs=100000, dashboard_rounds=5,
                 stability_seconds=600, stability_bucket=60),
}
BACKLOG_JOBS = 50000  # the drain_backlog scenario: how throughput holds up with a deeper queue


@dataclass
class Context:
    mode: Mode
    jobs: int | None = None  # --jobs: one drain size for every system
    stability_peers: bool = False
    vacuum_every: float = 0.0  # --vacuum-every: seconds between VACUUMs of the queue tables during stability
    results: dict = field(default_factory=dict)  # system -> scenario -> figures
    probes: Probes = field(default_factory=Probes)

    def drain_jobs(self, system) -> int:
        return self.jobs or self.mode.drain_jobs[system.name]


@dataclass
class Scenario:
    key: str
    title: str
    run: Callable
    systems: tuple | None = None  # None: every system
    modes: tuple = ("quick", "full")
    skipjack_only: Callable | None = None  # given the context, True: run for Skipjack only


SCENARIOS: dict[str, Scenario] = {}


def scenario(key: str, title: str, *, systems=None, modes=("quick", "full"), skipjack_only=None):
    def register(func):
        SCENARIOS[key] = Scenario(key, title, func, systems, modes, skipjack_only)
        return func

    return register


def _run(system, ctx: Context, *args: str, timeout: float = 600) -> dict:
    return run_json(system.app_command(*args), env=system.env(), cwd=system.cwd, timeout=timeout)


def _workers(system, name: str, *, drain: bool) -> WorkerGroup:
    return WorkerGroup(system.worker_commands(drain=drain), system.env(), system.cwd, f"{system.name}-{name}").start()


def _warm_up(ctx: Context, system, group: WorkerGroup, timeout: float = 90) -> None:
    """Offer a trickle of jobs until every worker process has run one and the queue is empty."""
    offered = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group.running() < len(group.procs):
            raise RuntimeError(f"{system.label}: a worker exited during warm-up; see bench/.work/")
        offered += _run(system, ctx, "offer", "--rate", "100", "--duration", "0.5")["offered"]
        ctx.probes.wait_for_total(offered, timeout=10)
        if len(ctx.probes.processes()) >= len(group.procs) and ctx.probes.total() >= offered:
            return
    raise RuntimeError(f"{system.label}: workers not all ready after {timeout:.0f}s")


# --- 1. enqueue --------------------------------------------------------------


@scenario("enqueue_single", "Enqueue, one job per call")
def enqueue_single(ctx: Context, system) -> dict:
    system.reset()
    ctx.probes.clear()
    count = ctx.mode.single_jobs
    done = _run(system, ctx, "enqueue", "--count", str(count), "--batch", "1")
    system.reset()
    return {"jobs": count, "rate": count / done["seconds"]}


# --- 2. drain (and bulk enqueue, and memory) --------------------------------------


@scenario("drain", "Bulk enqueue N no-op jobs, then drain them with 2 worker processes")
def drain(ctx: Context, system) -> dict:
    return _drains(ctx, system, ctx.drain_jobs(system))


@scenario("drain_backlog", f"Drain a deeper queue ({BACKLOG_JOBS:,} jobs)", systems=("skipjack", "pgqueuer"),
          modes=("full",))
def drain_backlog(ctx: Context, system) -> dict:
    return _drains(ctx, system, ctx.jobs or BACKLOG_JOBS)


@scenario("drain_large_batches", "Drain with larger batches (Skipjack prefetch 400, pgqueuer batch-size 100)",
          systems=("skipjack", "pgqueuer"), modes=("full",))
def drain_large_batches(ctx: Context, system) -> dict:
    system.large_batches = True
    try:
        return {"settings": system.settings(), **_drains(ctx, system, ctx.drain_jobs(system))}
    finally:
        system.large_batches = False


@scenario("tasks", "Django's Tasks API: a no-op @task enqueued one per call and 1000 per transaction, then drained",
          systems=("skipjack", "skipjack_tasks", "django_tasks_db"))
def tasks(ctx: Context, system) -> dict:
    """Skipjack's @task beside django-tasks-db's, and beside Skipjack's own enqueue of a no-op job type.

    The Tasks API enqueues one task a call and has no batch: its "batch" is
    1000 calls inside one transaction (Skipjack's own enqueue uses
    enqueue_many, one statement). The drain is the drain scenario's.
    """
    system.reset()
    ctx.probes.clear()
    count = min(ctx.jobs or ctx.mode.single_jobs, ctx.mode.single_jobs)
    single = _run(system, ctx, "enqueue", "--count", str(count), "--batch", "1")
    drained = _drains(ctx, system, ctx.drain_jobs(system))
    return {"single_jobs": count, "single_enqueue_rate": count / single["seconds"], **drained}


def _drains(ctx: Context, system, count: int) -> dict:
    """Drain `count` jobs mode.drain_rounds times; report the median round, with every round's rates."""
    rounds = sorted((_drain(ctx, system, count) for _ in range(ctx.mode.drain_rounds)), key=lambda r: r["rate"])
    median = rounds[len(rounds) // 2]
    bulk = sorted(r["bulk_enqueue_rate"] for r in rounds)
    return {
        **median,
        "bulk_enqueue_rate": bulk[len(bulk) // 2],
        "rounds": len(rounds),
        "rate_per_round": [round(r["rate"]) for r in rounds],
        "bulk_enqueue_rate_per_round": [round(b) for b in bulk],
        "peak_rss_mb": max((r["peak_rss_mb"] for r in rounds if r["peak_rss_mb"]), default=None),
        "all_started_once_every_round": all(r["all_started_once"] for r in rounds),
    }


def _drain(ctx: Context, system, count: int) -> dict:
    system.reset()
    ctx.probes.clear()
    enqueued = _run(system, ctx, "enqueue", "--count", str(count), "--batch", str(BULK_BATCH))
    group = _workers(system, "drain", drain=True)
    end = None
    deadline = time.monotonic() + max(120.0, count / 100)
    try:
        # Watch the probes (Redis) until 90 % of the jobs have started, then
        # the system's own store, every 10 ms, until nothing is left: the
        # harness's queries then touch the database only at the very end.
        store_from = int(count * 0.9)
        while time.monotonic() < deadline:
            if ctx.probes.total() >= store_from and not system.pending():
                end = time.time()
                break
            if group.running() == 0 and system.pending():
                raise RuntimeError(f"{system.label}: workers exited with jobs left; see bench/.work/")
            time.sleep(0.01 if ctx.probes.total() >= store_from else 0.02)
        else:
            raise RuntimeError(f"{system.label}: drain of {count} jobs did not finish in time")
        counted = ctx.probes.wait_for_total(count, timeout=15)
        processes = ctx.probes.processes()
        # Each process's series starts at its first flush; anchor it at its first job.
        series = {pid: [(processes[pid]["first"], 0), *points]
                  for pid, points in ctx.probes.series().items() if pid in processes}
    finally:
        group.stop()
    start = min(p["first"] for p in processes.values())
    last = max(p["last"] for p in processes.values())
    if system.name == "celery":
        # Redis holds no record of a finished task (results are off, acks come
        # on receipt): the last job's start is the end of the drain.
        end = last
    return {
        "jobs": count,
        "bulk_enqueue_rate": count / enqueued["seconds"],
        "rate": count / (end - start),
        "seconds": end - start,
        "startup_seconds": start - group.started_at,
        "all_started_once": counted and int(sum(p["count"] for p in processes.values())) == count,
        "jobs_per_process": sorted(int(p["count"]) for p in processes.values()),
        "started_per_second": _per_second(series, start, end),
        "peak_rss_mb": max(group.peak_rss_mb) if group.peak_rss_mb else None,
        "peak_rss_mb_per_process": group.peak_rss_mb,
        **system.finished_check(count),
    }


def _per_second(series: dict, start: float, end: float) -> list[int]:
    """Jobs started in each whole second of the drain, to show whether the rate holds up."""
    edges = [start + i for i in range(int(end - start) + 1)] + [end]
    counts = [_cumulative(series, t) for t in edges]
    return [round(b - a) for a, b in pairwise(counts)]


# --- 3. pickup latency ------------------------------------------------------------


@scenario("latency", f"Pickup latency (enqueue -> handler start) at {LATENCY_RATE:g} jobs/s")
def latency(ctx: Context, system) -> dict:
    system.reset()
    ctx.probes.clear()
    group = _workers(system, "latency", drain=False)
    try:
        _warm_up(ctx, system, group)
        ctx.probes.clear_latencies()
        before = ctx.probes.total()
        offered = _run(system, ctx, "offer", "--rate", str(LATENCY_RATE), "--duration", str(ctx.mode.latency_seconds),
                       "--latency", timeout=ctx.mode.latency_seconds + 120)
        ctx.probes.wait_for_total(before + offered["offered"], timeout=30)
        time.sleep(0.3)  # the probes' last flush
        samples = [s * 1000 for s in ctx.probes.latencies()]
    finally:
        group.stop()
    return {
        "offered": offered["offered"],
        "samples": len(samples),
        "offer_max_behind_ms": offered["max_behind_seconds"] * 1000,
        "p50_ms": percentile(samples, 50),
        "p95_ms": percentile(samples, 95),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples) if samples else None,
    }


# --- 4. the REST API ----------------------------------------------------------------

# Non-staff users may submit 10 jobs a minute, hold 5 unfinished ones and
# have 2 held by workers at once (jobs/conf.py); the benchmark's one user
# submits thousands a minute, so the server runs with the first two raised
# and the third off (its jobs then carry no owner key, as before it). The
# checks still run on every request.
API_SERVER_ENV = {"JOBS_USER_SUBMISSIONS_PER_MINUTE": "1000000", "JOBS_USER_MAX_ACTIVE": "1000000",
                  "JOBS_USER_MAX_RUNNING": "0"}
API_MAX_SECONDS = 3.0  # then a closed loop on API_MAX_CONNECTIONS connections: the most requests/s
API_MAX_CONNECTIONS = 4
WEB_CONCURRENCY = 2  # the image's default


@scenario("api", f"POST /api/jobs/ at {API_RATE:g} requests/s offered (open loop), 2 workers consuming the jobs",
          systems=("skipjack",))
def api(ctx: Context, system) -> dict:
    system.reset()
    ctx.probes.clear()  # also the server's cache, where the login and register throttles count
    with contextlib.ExitStack() as stack:
        group = _workers(system, "api", drain=False)
        stack.callback(group.stop)
        url = _serve(stack, system, API_SERVER_ENV)
        _warm_up(ctx, system, group)
        before = ctx.probes.total()
        load = run_json(
            [system.python, str(BENCH_DIR / "api_load.py"), "--url", url, "--rate", str(API_RATE),
             "--duration", str(ctx.mode.api_seconds), "--max-seconds", str(API_MAX_SECONDS),
             "--max-connections", str(API_MAX_CONNECTIONS)],
            env=system.env(), cwd=system.cwd, timeout=ctx.mode.api_seconds + API_MAX_SECONDS + 120,
        )
        deadline = time.monotonic() + 60
        while system.pending() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # the probes' last flush
        return {
            **load,
            "server": f"uvicorn queueproject.asgi:application, {WEB_CONCURRENCY} processes (WEB_CONCURRENCY, as in"
                      " the image), --no-access-log, LOG_LEVEL=WARNING",
            "server_env": API_SERVER_ENV,
            "workers": system.settings(),
            "queue_empty_after": not system.pending(),
            "jobs_run_by_workers": ctx.probes.total() - before,
        }


def _serve(stack: contextlib.ExitStack, system, extra_env: dict) -> str:
    """Start uvicorn serving the project as the Dockerfile does, stopped by `stack`; return its URL once ready.

    Like the image: WEB_CONCURRENCY processes, their metrics merged through a
    fresh PROMETHEUS_MULTIPROC_DIR, no access log.
    """
    port = free_port()
    metrics_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="skipjack-metrics-"))
    command = [system.python, "-m", "uvicorn", "queueproject.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--no-access-log", "--workers", str(WEB_CONCURRENCY),
               "--timeout-graceful-shutdown", "5"]
    env = {**system.env(), **extra_env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    server = WorkerGroup([command], env, system.cwd, f"{system.name}-server").start()
    stack.callback(server.stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/readyz/", timeout=2).read()  # noqa: S310 - an http URL of the server this run started
            return url
        except OSError:
            if server.running() == 0 or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not get ready; see bench/.work/") from None
            time.sleep(0.2)


# --- 5. the dashboard's event stream ----------------------------------------------------

DASHBOARD_SOCKETS = 10  # dashboards open (WebSocket clients re-fetching the overview) in the "on" drains


@scenario("dashboard_stream",
          f"Drain with the dashboard's event stream off, then with {DASHBOARD_SOCKETS} dashboards open",
          systems=("skipjack",))
def dashboard_stream(ctx: Context, system) -> dict:
    """Run bench/dashboard_overhead.py, which has its own database and Redis (see there)."""
    command = [system.python, str(BENCH_DIR / "dashboard_overhead.py"), "--json", "--skip-events-mode",
               "--jobs", str(ctx.jobs or ctx.mode.dashboard_jobs), "--rounds", str(ctx.mode.dashboard_rounds),
               "--sockets", str(DASHBOARD_SOCKETS)]
    figures = run_json(command, env=dict(os.environ), cwd=system.cwd, timeout=1800)
    return {**figures, "cost": figures["slowdown_percent"] / 100}


# --- flow control ------------------------------------------------------------------------

FLOW_KEYS = 100


@scenario("flow_limits", f"Drain with no limits, then with a per-key limit on {FLOW_KEYS} keys, in alternating rounds",
          systems=("skipjack",))
def flow_limits(ctx: Context, system) -> dict:
    """The cost of flow control: the same drain with jobs spread over keys at 2 held each (bench_keyed)."""
    count = ctx.drain_jobs(system)
    plain, keyed = [], []
    try:
        for _ in range(ctx.mode.drain_rounds):
            system.keys = 0
            plain.append(_drain(ctx, system, count)["rate"])
            system.keys = FLOW_KEYS
            keyed.append(_drain(ctx, system, count)["rate"])
    finally:
        system.keys = 0
    costs = sorted(1 - k / p for p, k in zip(plain, keyed, strict=True))
    return {
        "plain_rate": sorted(plain)[len(plain) // 2], "keyed_rate": sorted(keyed)[len(keyed) // 2],
        "cost": costs[len(costs) // 2], "plain_per_round": [round(r) for r in plain],
        "keyed_per_round": [round(r) for r in keyed], "keys": FLOW_KEYS, "key_limit": 2,
    }


# --- 6. stability ----------------------------------------------------------------------


def _cumulative(series: dict, t: float) -> float:
    """Jobs started by time `t`, summed over processes, interpolated between probe samples."""
    total = 0.0
    for points in series.values():
        if not points or t < points[0][0]:
            continue  # the process had not published yet
        previous = points[0]
        for point in points[1:]:
            if point[0] >= t:
                share = (t - previous[0]) / (point[0] - previous[0]) if point[0] > previous[0] else 1.0
                total += previous[1] + share * (point[1] - previous[1])
                break
            previous = point
        else:
            total += points[-1][1]
    return total


@scenario("stability", "Steady offered load for a long run: throughput of the last interval against the first",
          skipjack_only=lambda ctx: not ctx.stability_peers)
def stability(ctx: Context, system) -> dict:
    drained = ctx.results.get(system.name, {}).get("drain", {})
    rate = round(STABILITY_LOAD * drained["rate"]) if drained.get("rate") else 2000
    seconds, bucket = ctx.mode.stability_seconds, ctx.mode.stability_bucket
    system.reset()
    ctx.probes.clear()
    group = _workers(system, "stability", drain=False)
    vacuums = _Vacuums(system, ctx.vacuum_every)
    try:
        _warm_up(ctx, system, group)
        vacuums.start()
        log(f"  {system.label}: offering {rate} jobs/s for {seconds:g}s")
        before = ctx.probes.total()
        t0 = time.time()
        offered = _run(system, ctx, "offer", "--rate", str(rate), "--duration", str(seconds),
                       timeout=seconds + 300)
        t1 = t0 + seconds
        time.sleep(1.5)  # let the probes publish the last full second
        series = ctx.probes.series()
        backlog = offered["offered"] - (_cumulative(series, t1) - _cumulative(series, t0))
        ctx.probes.wait_for_total(before + offered["offered"], timeout=120)
    finally:
        vacuums.stop()
        group.stop()
        system.reset()  # a long run leaves millions of rows behind
    edges = [t0 + i * bucket for i in range(int(seconds // bucket) + 1)]
    counts = [_cumulative(series, t) for t in edges]
    per_bucket = [(b - a) / bucket for a, b in pairwise(counts)]
    return {
        "offered_rate": rate,
        "offered": offered["offered"],
        "offer_max_behind_s": offered["max_behind_seconds"],
        "seconds": seconds,
        "bucket_seconds": bucket,
        "throughput_per_bucket": [round(x, 1) for x in per_bucket],
        "first": per_bucket[0] if per_bucket else None,
        "last": per_bucket[-1] if per_bucket else None,
        "ratio": per_bucket[-1] / per_bucket[0] if per_bucket and per_bucket[0] else None,
        "backlog_at_end": max(0, round(backlog)),
        "vacuum_every_s": ctx.vacuum_every or None,
        "vacuum_seconds": [round(v, 2) for v in vacuums.durations],
        "peak_rss_mb": max(group.peak_rss_mb) if group.peak_rss_mb else None,
    }


class _Vacuums:
    """VACUUM a system's queue tables every `every` seconds in a thread, standing in for autovacuum."""

    def __init__(self, system, every: float):
        self.system, self.every = system, every
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> None:
        if self.every and self.system.queue_tables():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        db = Database(self.system.database)  # its own connection: the harness's is not shared across threads
        while not self._stop.wait(self.every):
            started = time.monotonic()
            try:
                self.system.vacuum(db)
            except Exception as exc:  # noqa: BLE001 - report it, keep the run going
                log(f"  vacuum failed: {exc}")
            self.durations.append(time.monotonic() - started)
        db.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

"""The results table: each figure per system, its ratio to pgqueuer, and Skipjack's target."""

import json
from collections.abc import Callable
from dataclasses import dataclass

BASELINE = "pgqueuer"


@dataclass
class Row:
    label: str
    scenario: str
    figure: str
    fmt: str
    target: str = ""
    # (skipjack value, baseline value) -> "PASS" / "MISS" / ...; None: no target
    check: Callable | None = None


def _at_least(limit):
    return lambda v, base: "PASS" if v >= limit else "MISS"


def _at_most(limit):
    return lambda v, base: "PASS" if v <= limit else "MISS"


def _below(limit):
    return lambda v, base: "PASS" if v < limit else "MISS"


def _drain_check(v, base):
    if base is None:
        return "no baseline"
    if v >= 2 * base:
        return "PASS"
    return "MISS (>= 1x)" if v >= base else "MISS (< 1x)"


ROWS = [
    Row("Enqueue, single (jobs/s)", "enqueue_single", "rate", "{:,.0f}", ">= 2,000/s", _at_least(2000)),
    Row("Enqueue, bulk of 1000 (jobs/s)", "drain", "bulk_enqueue_rate", "{:,.0f}", ">= 40,000/s", _at_least(40000)),
    Row("Drain throughput (jobs/s)", "drain", "rate", "{:,.0f}", ">= 2x pgqueuer", _drain_check),
    Row("Drain, 50,000 queued (jobs/s)", "drain_backlog", "rate", "{:,.0f}"),
    Row("Drain, larger batches (jobs/s)", "drain_large_batches", "rate", "{:,.0f}"),
    Row("Drain, no limits (jobs/s, rounds alternating with the next)", "flow_limits", "plain_rate", "{:,.0f}"),
    Row("Drain, 100 keys at 2 held each (jobs/s)", "flow_limits", "keyed_rate", "{:,.0f}"),
    Row("Flow control cost (median of rounds, 1 - keyed/plain)", "flow_limits", "cost", "{:.1%}", "<= 15 %",
        _at_most(0.15)),
    # Django's Tasks API (Skipjack's column: its own enqueue and enqueue_many of a no-op job type, beside it).
    Row("Tasks API: enqueue, one per call (tasks/s)", "tasks", "single_enqueue_rate", "{:,.0f}"),
    Row("Tasks API: enqueue, 1000 per transaction (tasks/s)", "tasks", "bulk_enqueue_rate", "{:,.0f}"),
    Row("Tasks API: drain, 2 worker processes (tasks/s)", "tasks", "rate", "{:,.0f}"),
    Row("Pickup latency p50 (ms)", "latency", "p50_ms", "{:.1f}", "<= 5 ms", _at_most(5)),
    Row("Pickup latency p95 (ms)", "latency", "p95_ms", "{:.1f}"),
    Row("Pickup latency p99 (ms)", "latency", "p99_ms", "{:.1f}", "<= 10 ms", _at_most(10)),
    Row("POST /api/jobs/ p50 at 100 req/s (ms)", "api", "p50_ms", "{:.1f}"),
    Row("POST /api/jobs/ p95 at 100 req/s (ms)", "api", "p95_ms", "{:.1f}"),
    Row("POST /api/jobs/ p99 at 100 req/s (ms)", "api", "p99_ms", "{:.1f}", "<= 20 ms", _at_most(20)),
    Row("POST /api/jobs/ answered at 100 offered (req/s)", "api", "rps", "{:.1f}"),
    Row("POST /api/jobs/ errors at 100 req/s (non-2xx)", "api", "errors", "{:,}", "0", _at_most(0)),
    Row("POST /api/jobs/ max, 4 connections (req/s)", "api", "max_rps", "{:,.0f}"),
    Row("Drain, dashboard stream off (jobs/s)", "dashboard_stream", "events_off_jobs_per_s", "{:,.0f}"),
    Row("Drain, 10 dashboards open (jobs/s)", "dashboard_stream", "dashboard_open_jobs_per_s", "{:,.0f}"),
    Row("Dashboard stream cost (median of rounds, 1 - open/off)", "dashboard_stream", "cost", "{:.1%}", "< 10 %", _below(0.10)),
    Row("Dashboard messages per socket per drain", "dashboard_stream", "messages_per_socket_per_drain", "{:.1f}"),
    Row("Stability: offered (jobs/s)", "stability", "offered_rate", "{:,.0f}"),
    Row("Stability: last / first interval", "stability", "ratio", "{:.2f}", ">= 0.9", _at_least(0.9)),
    # Last against first passes even at capacity, with a backlog growing all along: this shows it.
    Row("Stability: still queued at the end (jobs)", "stability", "backlog_at_end", "{:,}"),
    Row("Peak RSS per worker process (MB)", "drain", "peak_rss_mb", "{:.0f}", "<= 150 MB", _at_most(150)),
    Row("Peak RSS after the stability run (MB)", "stability", "peak_rss_mb", "{:.0f}", "<= 150 MB", _at_most(150)),
]


def _value(results, system, row):
    figures = results.get(system, {}).get(row.scenario)
    if not isinstance(figures, dict):
        return None, None
    if "error" in figures:
        return None, "error"
    if figures.get("status"):
        return None, figures["status"]
    return figures.get(row.figure), None


def table(meta: dict, results: dict, systems: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["Figure", *[meta["labels"][s] for s in systems], "Skipjack target", "Skipjack"]
    body = []
    for row in ROWS:
        cells = [row.label]
        base, _ = _value(results, BASELINE, row)
        for system in systems:
            value, status = _value(results, system, row)
            if value is None:
                cells.append(status or "-")
                continue
            cell = row.fmt.format(value)
            if system != BASELINE and isinstance(base, (int, float)) and base:
                cell += f" ({value / base:.2f}x)"
            cells.append(cell)
        skipjack, status = _value(results, "skipjack", row)
        cells.append(row.target)
        if status:
            cells.append(status)
        elif skipjack is None or row.check is None:
            cells.append("-" if row.check is None or "skipjack" not in systems else "not measured")
        else:
            cells.append(row.check(skipjack, base if isinstance(base, (int, float)) else None))
        body.append(cells)
    return header, body


def render_text(header, body) -> str:
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(out)


def render_markdown(header, body) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(out)


def notes(meta: dict) -> list[str]:
    lines = [
        f"Mode: {meta['mode']}; started {meta['started']}; took {meta['duration_s']:.0f} s.",
        (f"Machine: {meta['cpus']} CPUs; load average (1/5/15 min) before {meta['load_before']}, "
         f"after {meta['load_after']}."),
        "PostgreSQL: " + ", ".join(f"{k}={v}" for k, v in meta["postgres"].items()) + ".",
        "Each cell: the figure, and in brackets its ratio to pgqueuer's in the same run.",
        "Worker processes per system: 2. How each runs:",
    ]
    for system, text in meta["settings"].items():
        lines.append(f"  - {meta['labels'][system]}: {text}; versions {meta['versions'].get(system, {})}")
    lines += [
        "What is measured:",
        "  - Enqueue, single: one client, one call per job, each call its own transaction.",
        "  - Enqueue, bulk: one client, one call per 1000 jobs (Celery has no batch publish: one message per job).",
        "  - Drain: N no-op jobs are queued first, then 2 worker processes start; throughput is N / (time the",
        "    system's own store shows no unfinished job - time the first job started). Worker start-up is excluded",
        "    (reported as startup_seconds in the JSON). Celery keeps no record of finished tasks (results off,",
        "    acks on receipt), so its end is the start of its last job. Bulk enqueue and drain figures are the",
        "    median of 3 rounds (quick: 1); every round's figure is in the JSON.",
        "  - Tasks API: a no-op @task enqueued with .enqueue(), one call per task (each its own transaction),",
        "    then 1000 calls per transaction (the Tasks API has no batch enqueue), then drained as in Drain:",
        "    Skipjack's backend (jobs.tasks.SkipjackBackend, manage.py runworker) beside django-tasks-db",
        "    (db_worker --batch). Skipjack's own column is its enqueue / enqueue_many of a no-op job type.",
        "  - Pickup latency: after a warm-up, one client offers 50 jobs/s, one call per job, each carrying",
        "    time.time() at enqueue; the handler records time.time() at start. Same clock, same machine.",
        "  - POST /api/jobs/ (Skipjack only): uvicorn as the image runs it (2 processes), with 2 workers",
        "    consuming the jobs. A user registered through the API, non-staff, with a JWT from /api/auth/token/,",
        "    submits no-op jobs. Open loop: 100 requests/s are due on schedule whatever the server does, sent",
        "    over 16 keep-alive connections, and each latency runs from the request's due time (no coordinated",
        "    omission); 30 s (quick: 8 s). Then 3 s of closed loop on 4 connections: the most requests/s. The",
        "    server runs with JOBS_USER_SUBMISSIONS_PER_MINUTE and JOBS_USER_MAX_ACTIVE raised to 1,000,000, or",
        "    the per-user limits would refuse the load (their checks still run on every request), and with",
        "    JOBS_USER_MAX_RUNNING=0, so the one user's jobs are not held to 2 at a time.",
        "  - Dashboard stream (Skipjack only): bench/dashboard_overhead.py drains the same jobs, spread over 50",
        "    owners, with JOBS_EVENTS=0, then with events on and 10 dashboards open (WebSocket clients that",
        "    re-fetch the overview page at most every 2 s), back to back, 5 rounds of 100,000 jobs (quick: 1 of",
        "    20,000). The cost is the median of the rounds' own slowdowns; the rates shown are medians. A drain",
        "    runs from its first job's start to its last job's finish in the jobs table.",
        "  - Stability: a steady offered load (65 % of the system's drain rate in this run) for the whole",
        "    duration; throughput per interval from the handlers' counters; last interval / first interval.",
        "  - Peak RSS: ru_maxrss of each worker process, from the kernel when the process is reaped.",
        f"  - Drain sizes: {meta['drain_jobs']}.",
    ]
    if meta.get("vacuum_every"):
        lines.append(f"  - During the stability run the harness ran VACUUM (ANALYZE) on the queue tables every "
                     f"{meta['vacuum_every']:g} s (--vacuum-every), standing in for autovacuum.")
    elif meta["postgres"].get("autovacuum") == "off":
        lines.append("  - The server runs with autovacuum=off and the harness did not vacuum: no table was vacuumed "
                     "during the run (see --vacuum-every).")
    if meta.get("problems"):
        lines.append("Problems in this run:")
        lines += [f"  - {p}" for p in meta["problems"]]
    return lines


def markdown_document(meta: dict, results: dict, systems: list[str], details: str) -> str:
    header, body = table(meta, results, systems)
    parts = [f"# Skipjack benchmark ({meta['mode']}, {meta['started']})", "", render_markdown(header, body), ""]
    parts += notes(meta)
    parts += ["", "## Details", "", "```", details, "```", ""]
    return "\n".join(parts)


def details_text(results: dict) -> str:
    return json.dumps(results, indent=2, default=str)

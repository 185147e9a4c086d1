#!/usr/bin/env python3
"""Benchmark Skipjack side by side with pgqueuer, Procrastinate and Celery.

    .venv/bin/python bench/run.py            # full run (about 20 minutes: the stability run is 10)
    .venv/bin/python bench/run.py --quick    # under 2 minutes once the peers' virtualenvs exist
    .venv/bin/python bench/run.py --only skipjack,pgqueuer --jobs 50000

Needs the local PostgreSQL (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432)
and Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379/9, which is flushed).
Prints the results table and writes bench/results/<timestamp>-<mode>.json and .md.
See bench/README.md.
"""

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.lib import RESULTS_DIR, loadavg, log, server_settings
from bench.scenarios import MODES, SCENARIOS, Context
from bench.systems import SYSTEMS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Short everyday run (under 2 minutes).")
    parser.add_argument("--only", default=",".join(SYSTEMS), help="Comma-separated systems (default: all).")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="Comma-separated scenarios (default: all).")
    parser.add_argument("--jobs", type=int, default=None, help="Jobs per drain, the same for every system.")
    parser.add_argument("--stability-peers", action="store_true",
                        help="Run the stability scenario for the peers too (by default only Skipjack).")
    parser.add_argument("--vacuum-every", type=float, default=0.0, metavar="SECONDS",
                        help="During the stability run, VACUUM each system's queue tables this often, "
                             "standing in for autovacuum where the server has it off (default: never).")
    parser.add_argument("--no-save", action="store_true", help="Print the table; write nothing under bench/results/.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        sys.exit(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    ctx = Context(mode=mode, jobs=args.jobs, stability_peers=args.stability_peers, vacuum_every=args.vacuum_every)
    started = time.time()
    meta = {
        "mode": mode.name,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "cpus": os.cpu_count(),
        "load_before": loadavg(),
        "postgres": server_settings(),
        "labels": {n: SYSTEMS[n].label for n in names},
        "settings": {},
        "versions": {},
        "drain_jobs": {n: args.jobs or mode.drain_jobs[n] for n in names},
        "vacuum_every": args.vacuum_every or None,
        "problems": [],
    }
    # Scenario by scenario, each system in turn: the figures compared in one
    # row are measured minutes apart, not a whole run apart, on a shared machine.
    systems = {}
    for name in names:
        system = SYSTEMS[name]()
        ctx.results.setdefault(name, {})
        log(f"{system.label}: preparing")
        try:
            system.prepare()
            meta["settings"][name] = system.settings()
            meta["versions"][name] = system.versions()
            systems[name] = system
        except Exception as exc:  # noqa: BLE001 - a peer that cannot install must not stop the others
            meta["problems"].append(f"{system.label}: could not prepare: {exc}")
            log(traceback.format_exc())
    for key, sc in SCENARIOS.items():
        if key not in wanted:
            continue
        for name, system in systems.items():
            results = ctx.results[name]
            if mode.name not in sc.modes:
                results[key] = {"status": "full mode only"}
                continue
            if (sc.systems is not None and name not in sc.systems) or (
                    system.scenarios is not None and key not in system.scenarios):
                results[key] = {"status": "-"}
                continue
            if name != "skipjack" and sc.skipjack_only is not None and sc.skipjack_only(ctx):
                results[key] = {"status": "Skipjack only"}
                continue
            log(f"{system.label}: {sc.title} (load {loadavg()[0]})")
            t = time.monotonic()
            try:
                results[key] = sc.run(ctx, system)
            except Exception as exc:  # noqa: BLE001 - one failed scenario must not lose the others' figures
                meta["problems"].append(f"{system.label} / {key}: {exc}")
                results[key] = {"error": str(exc)}
                log(traceback.format_exc())
            results[key]["elapsed_s"] = round(time.monotonic() - t, 1)
            results[key]["load_after"] = loadavg()
            log(f"  done in {results[key]['elapsed_s']}s: " + json.dumps(_brief(results[key]), default=str))
    for system in systems.values():
        system.close()
    meta["load_after"] = loadavg()
    meta["duration_s"] = time.time() - started

    header, body = report.table(meta, ctx.results, names)
    print()
    print(report.render_text(header, body))
    print()
    print("\n".join(report.notes(meta)))
    if not args.no_save:
        write_results(meta, ctx.results, names, started)
    return 1 if meta["problems"] else 0


def _brief(figures: dict) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()
            if not isinstance(v, list) or len(v) <= 4}


def write_results(meta: dict, results: dict, names: list[str], started: float) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S", time.localtime(started)) + f"-{meta['mode']}"
    document = {"meta": meta, "results": results}
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    markdown = report.markdown_document(meta, results, names, report.details_text(results))
    (RESULTS_DIR / f"{stem}.md").write_text(markdown)
    latest = "latest.md" if meta["mode"] == "full" else "latest-quick.md"
    (RESULTS_DIR / latest).write_text(markdown)
    log(f"wrote bench/results/{stem}.json, {stem}.md and {latest}")


if __name__ == "__main__":
    sys.exit(main())

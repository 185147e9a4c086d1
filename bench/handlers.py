"""Skipjack's benchmark job types, loaded with JOBS_HANDLER_MODULES=bench.handlers."""

import os

from bench.peers.probe import probe
from jobs.registry import job_handler

# bench_keyed: at most this many jobs of one concurrency key held at once (the flow_limits scenario).
KEY_LIMIT = int(os.environ.get("BENCH_KEY_LIMIT", "2"))


@job_handler("bench_noop", max_retries=0)
def bench_noop(job):
    """Do nothing but tell the benchmark probe that the job started."""
    probe.hit(job.payload.get("t"))


@job_handler("bench_keyed", max_retries=0, concurrency_key=lambda payload: payload.get("k"),
             key_concurrency=KEY_LIMIT)
def bench_keyed(job):
    """bench_noop with a concurrency key from its payload, at most KEY_LIMIT of a key at once."""
    probe.hit(job.payload.get("t"))

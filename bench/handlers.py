"""Skipjack's benchmark job type, loaded with JOBS_HANDLER_MODULES=bench.handlers."""

from bench.peers.probe import probe
from jobs.registry import job_handler


@job_handler("bench_noop", max_retries=0)
def bench_noop(job):
    """Do nothing but tell the benchmark probe that the job started."""
    probe.hit(job.payload.get("t"))

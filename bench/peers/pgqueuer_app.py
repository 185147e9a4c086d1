"""pgqueuer's side of the benchmark (runs in bench/.venvs/pgqueuer).

    python pgqueuer_app.py worker --batch-size 10 [--drain]   a worker
    python pgqueuer_app.py enqueue|offer ...                  the enqueue side (see driver.py)

Uses the asyncpg driver and uvloop, as `pgq run` does. The worker is started
here rather than with `pgq run` because pgqueuer 1.6.0's CLI fails while
setting up its logging ('str' object has no attribute 'name').
"""

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import timedelta

import asyncpg
import uvloop
from driver import main
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode
from probe import probe

DSN = os.environ["BENCH_DSN"]


async def run_worker(batch_size: int, drain: bool) -> None:
    connection = await asyncpg.connect(DSN)
    qm = QueueManager(Queries(AsyncpgDriver(connection)))

    @qm.entrypoint("bench_noop")
    async def bench_noop(job: Job) -> None:
        probe.hit(json.loads(job.payload)["t"] if job.payload else None)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, qm.shutdown.set)
    mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
    await qm.run(batch_size=batch_size, mode=mode, dequeue_timeout=timedelta(seconds=30))
    await connection.close()


_state = {}


async def setup():
    _state["connection"] = await asyncpg.connect(DSN)
    _state["queries"] = Queries(AsyncpgDriver(_state["connection"]))


async def teardown():
    await _state["connection"].close()


def _encode(payload: dict) -> bytes | None:
    return json.dumps(payload).encode() if payload else None


async def enqueue_one(payload):
    await _state["queries"].enqueue("bench_noop", _encode(payload))


async def enqueue_batch(payloads):
    n = len(payloads)
    await _state["queries"].enqueue(["bench_noop"] * n, [_encode(p) for p in payloads], [0] * n)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("--batch-size", type=int, default=10)
        parser.add_argument("--drain", action="store_true")
        args = parser.parse_args(sys.argv[2:])
        uvloop.run(run_worker(args.batch_size, args.drain))
    else:
        main(enqueue_one, enqueue_batch, setup=setup, teardown=teardown)

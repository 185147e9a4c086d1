"""Skipjack's enqueue side for the benchmark driver (runs in the project's virtualenv).

Jobs are enqueued the way application code would: `jobs.queue.enqueue` and
`enqueue_many`, outside any transaction (each call commits on its own).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "queueproject.settings")
# The driver's loop is asyncio, but these calls are plain blocking ones made
# one at a time: nothing else runs on the loop meanwhile.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

import django  # noqa: E402 - after the environment it reads

django.setup()

from bench.peers.driver import main  # noqa: E402 - after django.setup()
from jobs import queue  # noqa: E402

# With BENCH_SKIPJACK_KEYS=N, jobs are bench_keyed, spread round-robin over N concurrency keys.
KEYS = int(os.environ.get("BENCH_SKIPJACK_KEYS", "0"))
_next_key = 0


def _keyed(payloads):
    global _next_key
    keyed = []
    for payload in payloads:
        keyed.append({**payload, "k": f"tenant:{_next_key % KEYS}"})
        _next_key += 1
    return keyed


async def enqueue_one(payload):
    if KEYS:
        queue.enqueue("bench_keyed", _keyed([payload])[0])
    else:
        queue.enqueue("bench_noop", payload)


async def enqueue_batch(payloads):
    if KEYS:
        queue.enqueue_many("bench_keyed", _keyed(payloads))
    else:
        queue.enqueue_many("bench_noop", payloads)


if __name__ == "__main__":
    main(enqueue_one, enqueue_batch)

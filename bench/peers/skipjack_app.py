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


async def enqueue_one(payload):
    queue.enqueue("bench_noop", payload)


async def enqueue_batch(payloads):
    queue.enqueue_many("bench_noop", payloads)


if __name__ == "__main__":
    main(enqueue_one, enqueue_batch)

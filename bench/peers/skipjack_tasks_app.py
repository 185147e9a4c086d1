"""Skipjack's enqueue side through Django's Tasks API, for the benchmark driver (runs in the project's virtualenv).

A no-op @task enqueued as application code would: one `.enqueue()` a call,
outside any transaction (each call commits on its own). The Tasks API has
no batch enqueue, so a "batch" is that many calls inside one transaction,
which Skipjack's enqueue joins.
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

from django.db import transaction  # noqa: E402

from bench.peers.driver import main  # noqa: E402 - after django.setup()
from bench.tasks import bench_noop  # noqa: E402


async def enqueue_one(payload):
    bench_noop.enqueue(**payload)


async def enqueue_batch(payloads):
    with transaction.atomic():
        for payload in payloads:
            bench_noop.enqueue(**payload)


if __name__ == "__main__":
    main(enqueue_one, enqueue_batch)

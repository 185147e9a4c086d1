"""Skipjack's enqueue side through Django's Tasks API, for the benchmark driver (runs in the project's virtualenv).

A no-op @task enqueued as application code would (driver.main_for_task);
Skipjack's enqueue joins the transaction a "batch" runs in.
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

from bench.peers.driver import main_for_task  # noqa: E402 - after django.setup()
from bench.tasks import bench_noop  # noqa: E402

if __name__ == "__main__":
    main_for_task(bench_noop)

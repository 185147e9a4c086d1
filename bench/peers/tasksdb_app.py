"""django-tasks-db's side of the benchmark (runs in bench/.venvs/django_tasks_db).

    django-admin db_worker ...                 a worker (DJANGO_SETTINGS_MODULE=tasksdb_settings)
    python tasksdb_app.py enqueue|offer ...    the enqueue side (see driver.py)

The task is enqueued as application code would through the Tasks API: one
`.enqueue()` a call, each its own transaction; the Tasks API has no batch
enqueue, so a "batch" is that many calls inside one transaction.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksdb_settings")
# The driver's loop is asyncio, but these calls are plain blocking ones made
# one at a time: nothing else runs on the loop meanwhile.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

import django  # noqa: E402 - after the environment it reads

django.setup()

from django.db import transaction  # noqa: E402
from driver import main  # noqa: E402
from tasksdb_tasks import bench_noop  # noqa: E402


async def enqueue_one(payload):
    bench_noop.enqueue(**payload)


async def enqueue_batch(payloads):
    with transaction.atomic():
        for payload in payloads:
            bench_noop.enqueue(**payload)


if __name__ == "__main__":
    main(enqueue_one, enqueue_batch)

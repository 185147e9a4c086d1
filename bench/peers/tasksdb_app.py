"""django-tasks-db's side of the benchmark (runs in bench/.venvs/django_tasks_db).

    django-admin db_worker ...                 a worker (DJANGO_SETTINGS_MODULE=tasksdb_settings)
    python tasksdb_app.py enqueue|offer ...    the enqueue side (see driver.py)

The task is enqueued as application code would through the Tasks API
(driver.main_for_task).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksdb_settings")
# The driver's loop is asyncio, but these calls are plain blocking ones made
# one at a time: nothing else runs on the loop meanwhile.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

import django  # noqa: E402 - after the environment it reads

django.setup()

from driver import main_for_task  # noqa: E402
from tasksdb_tasks import bench_noop  # noqa: E402

if __name__ == "__main__":
    main_for_task(bench_noop)

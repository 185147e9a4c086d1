"""Django's Tasks API on Skipjack (`django.tasks`, or the `django-tasks` backport on Django 5.2).

    TASKS = {"default": {"BACKEND": "jobs.tasks.SkipjackBackend"}}
    JOBS_TASK_MODULES = ["myapp.tasks"]

base has the task class, its options and the backend but for its enqueue,
which backend adds; results maps a job to a TaskResult, and runtime is what
the worker does with a task's job.
"""

from jobs.tasks.backend import SkipjackBackend
from jobs.tasks.base import SkipjackTask, task

__all__ = ["SkipjackBackend", "SkipjackTask", "task"]

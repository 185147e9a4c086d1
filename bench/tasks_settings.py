"""Skipjack's settings for the benchmark's @task: TASKS on Skipjack's backend, and bench.tasks allowed to run."""

import django

from queueproject.settings import *  # noqa: F403 - the project's settings, plus the Tasks API's
from queueproject.settings import INSTALLED_APPS

TASKS = {"default": {"BACKEND": "jobs.tasks.SkipjackBackend", "OPTIONS": {"max_retries": 0}}}
JOBS_TASK_MODULES = ["bench.tasks"]
if django.VERSION < (6, 0) and "django_tasks" not in INSTALLED_APPS:  # the backport, on Django 5.2
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks"]

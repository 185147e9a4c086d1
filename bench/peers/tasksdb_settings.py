"""The Django project django-tasks-db's side runs in (bench/.venvs/django_tasks_db): the least it needs."""

import os

import dj_database_url

SECRET_KEY = "bench-only-key-that-signs-nothing-and-never-leaves-this-machine"  # noqa: S105 - a benchmark's project
INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
DATABASES = {"default": dj_database_url.parse(os.environ["BENCH_DSN"], engine="django.db.backends.postgresql")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

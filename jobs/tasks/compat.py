"""The Tasks API: Django's own `django.tasks` from 6.0, else the `django-tasks` backport.

Everything jobs.tasks uses of the API is imported from here, under the
names Django 6.0 gives it. The backport's releases up to 0.12 call two of
the exceptions by older names (InvalidTaskError, InvalidTaskBackendError).
"""

from typing import TYPE_CHECKING

import django

# Type-checked against Django's own (django-stubs): the backport's classes are the same.
if TYPE_CHECKING or django.VERSION >= (6, 0):
    from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        DEFAULT_TASK_PRIORITY,
        TASK_MAX_PRIORITY,
        TASK_MIN_PRIORITY,
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json  # type: ignore[attr-defined, unused-ignore]

    signals_module = "django.tasks.signals"
else:
    from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, task_backends
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import (
        DEFAULT_TASK_PRIORITY,
        TASK_MAX_PRIORITY,
        TASK_MIN_PRIORITY,
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    signals_module = "django_tasks.signals"

    try:
        from django_tasks.exceptions import InvalidTask, InvalidTaskBackend
    except ImportError:  # django-tasks 0.12 and older
        from django_tasks.exceptions import (
            InvalidTaskBackendError as InvalidTaskBackend,
            InvalidTaskError as InvalidTask,
        )

__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS", "DEFAULT_TASK_PRIORITY", "DEFAULT_TASK_QUEUE_NAME", "TASK_MAX_PRIORITY", "TASK_MIN_PRIORITY", "BaseTaskBackend",
    "InvalidTask", "InvalidTaskBackend", "Task", "TaskContext", "TaskError", "TaskResult", "TaskResultDoesNotExist",
    "TaskResultStatus", "normalize_json", "signals_module", "task_backends", "task_enqueued", "task_finished", "task_started",
]

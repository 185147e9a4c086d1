"""System checks of the jobs app's settings: `manage.py check`, and every command at start-up."""

from django.apps import apps
from django.core import checks

from jobs import flow


@checks.register(checks.Tags.compatibility)
def check_queue_settings(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """JOBS_QUEUES must parse: a worker applies it at start-up."""
    try:
        flow.configured_queues()
    except ValueError as exc:
        return [checks.Error(str(exc), hint="See jobs/flow.py for the options of JOBS_QUEUES.", id="jobs.E001")]
    return []


@checks.register(checks.Tags.compatibility)
def check_runworker_comes_first(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """`manage.py runworker` must be the queue's: Django runs the command of the first app that defines one."""
    names = [config.name for config in apps.get_app_configs()]
    if "channels" in names and names.index("channels") < names.index("jobs"):
        return [checks.Error(
            '"channels" comes before "jobs" in INSTALLED_APPS, so manage.py runworker would run Channels\' worker.',
            hint='Put "jobs" before "channels" in INSTALLED_APPS.', id="jobs.E004",
        )]
    return []


@checks.register(checks.Tags.compatibility)
def check_task_settings(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Each Skipjack backend of TASKS must load, and each task of JOBS_TASK_MODULES be one it accepts."""
    from importlib import import_module

    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from jobs import conf
    from jobs.tasks.base import SkipjackBackendBase
    from jobs.tasks.compat import InvalidTask, Task, task_backends

    messages: list[checks.CheckMessage] = []
    broken = set()
    for alias, params in getattr(settings, "TASKS", {}).items():
        if not isinstance(params, dict) or params.get("BACKEND") != "jobs.tasks.SkipjackBackend":
            continue
        try:
            task_backends[alias]
        except ImproperlyConfigured as exc:
            broken.add(alias)
            messages.append(checks.Error(str(exc), hint="See the README's Django Tasks section.", id="jobs.E002"))
    for module_name in conf.get("JOBS_TASK_MODULES"):
        module = import_module(module_name)  # imported at start-up already: jobs.apps
        tasks = [value for value in vars(module).values()
                 if isinstance(value, Task) and value.func.__module__ == module_name]
        if not tasks:
            messages.append(checks.Warning(f"JOBS_TASK_MODULES names {module_name!r}, which defines no task.",
                                           id="jobs.W001"))
        for task in tasks:
            if task.backend in broken:  # said already
                continue
            try:
                backend = task_backends[task.backend]
                if not isinstance(backend, SkipjackBackendBase):
                    raise InvalidTask(f"its backend {task.backend!r} is not Skipjack's, so workers do not run it")
                backend.validate_task(task)
            except (InvalidTask, ImproperlyConfigured) as exc:
                messages.append(checks.Error(f"Task {task.module_path!r}: {exc}", id="jobs.E003"))
    return messages

from importlib import import_module

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self):
        from jobs import checks, conf, handlers  # noqa: F401 - registers the built-in handlers and the checks

        for module in (*conf.get("JOBS_HANDLER_MODULES"), *conf.get("JOBS_TASK_MODULES")):
            import_module(module)

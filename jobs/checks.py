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
            hint='Put "jobs" before "channels" in INSTALLED_APPS.', id="jobs.E002",
        )]
    return []

"""System checks of the jobs app's settings: `manage.py check`, and every command at start-up."""

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

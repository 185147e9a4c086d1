from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The REST API (jobs.api.urls), for a project that installs Skipjack: needs "rest_framework" too."""

    name = "jobs.api"
    label = "skipjack_api"
    verbose_name = "Skipjack API"

    def ready(self):
        from jobs.api import checks  # noqa: F401 - registers the check below

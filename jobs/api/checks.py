"""The API's system check: DRF must be installed for its views to render."""

from django.apps import apps
from django.core import checks


@checks.register(checks.Tags.compatibility)
def check_rest_framework_installed(app_configs, **kwargs) -> list[checks.CheckMessage]:
    if apps.is_installed("rest_framework"):
        return []
    return [checks.Error('"jobs.api" needs "rest_framework" in INSTALLED_APPS.', id="skipjack_api.E001")]

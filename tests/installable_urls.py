"""URLs as a project of its own might mount Skipjack's (tests/db/test_installable.py)."""

from django.urls import include, path

urlpatterns = [
    path("ops/skipjack/", include("jobs.urls")),
    path("ops/skipjack/", include("dashboard.urls")),
    path("ops/skipjack/api/", include("jobs.api.urls")),
]

"""The queue's own URLs: its Prometheus metrics, for a project to mount where it likes.

    path("skipjack/", include("jobs.urls"))      # /skipjack/metrics

The dashboard (dashboard.urls) and the REST API (jobs.api.urls) mount on their own.
"""

from django.urls import path

from jobs.metrics import metrics_view

urlpatterns = [
    path("metrics", metrics_view, name="skipjack-metrics"),
]

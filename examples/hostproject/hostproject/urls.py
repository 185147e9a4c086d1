from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # Skipjack, under a prefix of this project's choosing.
    path("skipjack/", include("dashboard.urls")),
    path("skipjack/api/", include("jobs.api.urls")),
    path("skipjack/", include("jobs.urls")),  # /skipjack/metrics, for Prometheus
]

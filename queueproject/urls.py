from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.forms import AdminLoginForm
from accounts.views import admin_login, session_login
from jobs.metrics import metrics_view

# Admin logins are throttled on the API's login counters, as the dashboard's are.
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    # Before the admin's own: the same view, answering 429 while throttled.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    # Dashboard: session login (the same accounts as the admin) and the live pages.
    path("accounts/login/", session_login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("dashboard.urls")),
    # REST API
    path("api/auth/", include("accounts.urls")),
    path("api/", include("jobs.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's setup script as a file, which the Content-Security-Policy allows.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # Operations: Prometheus scrapes /metrics; /healthz/ and /readyz/ are
    # answered by jobs.health.HealthCheckMiddleware before URL routing.
    path("metrics", metrics_view, name="metrics"),
]

handler404 = "queueproject.views.not_found"
# An unreachable database is a 503 with Retry-After, not a 500.
handler500 = "queueproject.views.server_error"

"""A Django project of its own that installs Skipjack: its own user model, settings and URLs.

Needs DATABASE_URL (PostgreSQL); REDIS_URL, if set, carries the dashboard's live updates.
"""

import os
from pathlib import Path

import dj_database_url
import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "hostproject-development-key-not-for-production-use-0123456789")
DEBUG = os.environ.get("DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "shop",
    # Skipjack: the queue (models, admin, manage.py runworker), before "channels",
    # whose runworker command it replaces; then the API and the dashboard.
    "jobs",
    "jobs.api",
    "dashboard",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
]
if django.VERSION < (6, 0):  # Django 5.2: the Tasks API comes from the django-tasks backport.
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hostproject.urls"
ASGI_APPLICATION = "hostproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Django's own PostgreSQL backend: Skipjack needs PostgreSQL and psycopg 3, nothing more.
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], engine="django.db.backends.postgresql")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "shop.Customer"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/skipjack/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
}

# The Tasks API on Skipjack: @task functions enqueue jobs, `manage.py runworker` runs them.
TASKS = {
    "default": {
        "BACKEND": "jobs.tasks.SkipjackBackend",
        "QUEUES": ["default", "emails"],
        # A failed task is tried again 30 s later, then 60 s, then 120 s; then it is in the DLQ.
        "OPTIONS": {"max_retries": 3, "backoff_base": 30},
    }
}
# The modules whose @task functions workers run; nothing else is ever imported from a job's row.
JOBS_TASK_MODULES = ["shop.tasks"]

# Live updates of the dashboard go through Channels; without a channel layer the pages work, not live.
REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "hostproject"},
        }
    }
    DASHBOARD_WEBSOCKET_URL = "/skipjack/ws/events/"
else:
    JOBS_EVENTS = False
    DASHBOARD_WEBSOCKET_URL = None
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "Europe/Paris"
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

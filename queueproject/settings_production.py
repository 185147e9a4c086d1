"""Settings for production: the base settings, hardened.

Selected with DJANGO_SETTINGS_MODULE=queueproject.settings_production, as
the Docker image does. Compared with queueproject.settings:

- DATABASE_URL, REDIS_URL, SECRET_KEY and ALLOWED_HOSTS must be set: no
  embedded database, no generated key, no default host names; the key must
  be long and random enough to sign with, and the hosts must be named, not *;
- DEBUG is refused, and logs are JSON unless LOG_FORMAT says otherwise;
- the site is assumed to be reached over HTTPS (usually through a proxy
  that terminates TLS): HTTP is redirected, cookies are secure, HSTS is on.
  Each of these can be set from the environment, and SKIPJACK_HTTPS=0 turns
  them all off to try the stack over plain HTTP.
- /metrics answers no one unless METRICS_TOKEN or METRICS_ALLOW_IPS is set.

`manage.py check --deploy` passes with these defaults.
"""

import os

from django.core.exceptions import ImproperlyConfigured

_missing = [name for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS") if not os.environ.get(name)]
if _missing:
    raise ImproperlyConfigured(f"Set {', '.join(_missing)} in the environment to run in production.")
# The bar of Django's own deployment check (security.W009): a key that
# signs sessions, password resets and tokens must not be guessable.
_key = os.environ["SECRET_KEY"]
if len(_key) < 50 or len(set(_key)) < 5 or _key.startswith("django-insecure-"):
    raise ImproperlyConfigured(
        "SECRET_KEY must be at least 50 random characters, e.g. "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )
# "*" would answer any Host header, and so build links and redirects to
# whatever host a client names.
if "*" in (host.strip() for host in os.environ["ALLOWED_HOSTS"].split(",")):
    raise ImproperlyConfigured("ALLOWED_HOSTS must name the site's host names; * is refused in production.")
os.environ["SKIPJACK_REQUIRE_SECRET_KEY"] = "1"  # noqa: S105 - a flag, not a password
os.environ.setdefault("LOG_FORMAT", "json")

from queueproject.settings import *  # noqa: E402, F403
from queueproject.settings import DEBUG, env_bool, env_networks  # noqa: E402

if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production.")

HTTPS = env_bool("SKIPJACK_HTTPS", True)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# The preload directive lets the domain be submitted to browsers' HSTS
# preload lists; set SECURE_HSTS_PRELOAD=0 if it must never be.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets X-Forwarded-Proto itself and drops the
    # client's: otherwise any client could claim its request was HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Prometheus scrapes over the internal network, in plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
# /metrics answers only METRICS_TOKEN's bearer or METRICS_ALLOW_IPS: no address
# is let in by default, loopback neither (a proxy on the same host makes every
# client look local).
METRICS_ALLOW_IPS = env_networks("METRICS_ALLOW_IPS", "")

"""Throttles for logins and registrations.

Their counters live in Redis, so the limits hold across every web process,
and the session logins of the dashboard and the admin count on the same
counters as the API's. A client is its REMOTE_ADDR (REST_FRAMEWORK's
NUM_PROXIES is 0): the address uvicorn gives, taken from X-Forwarded-For
only when the connection comes from FORWARDED_ALLOW_IPS.
"""

import hashlib
import math
import uuid

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from accounts.backends import username_for_login
from jobs.registry import unstorable
from queueproject.cache import SharedConnectionPool

# One sliding window, as SimpleRateThrottle keeps it, in one step: drop the
# hits older than the window, refuse if as many as the limit are left (and
# return the seconds until the oldest leaves), or else record this hit.
# SimpleRateThrottle reads the history, appends and writes it back in three
# steps, so concurrent requests all read the same count and all pass.
# KEYS[1]: the counter; ARGV: window in seconds, limit, a unique member.
SLIDING_WINDOW = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(window))
return false
"""

_script = None


def _sliding_window():
    global _script
    if _script is None:
        client = redis.Redis(connection_pool=SharedConnectionPool.from_url(settings.REDIS_URL))
        _script = client.register_script(SLIDING_WINDOW)
    return _script


class SharedRateThrottle(SimpleRateThrottle):
    """SimpleRateThrottle's limit over a sliding window, counted atomically in Redis."""

    # Not SimpleRateThrottle's "throttle_%(scope)s_%(ident)s", whose values are pickled lists.
    cache_format = "throttle:%(scope)s:%(ident)s"
    retry_after: float | None = None
    # Set by SimpleRateThrottle.__init__ from the rate (and missing from its stubs).
    num_requests: int | None
    duration: int | None

    def allow_request(self, request, view):
        return self.allow_key(self.get_cache_key(request, view))

    def allow_key(self, key: str | None) -> bool:
        """Count one hit on `key`; return False, with the wait in self.retry_after, if the limit is used up."""
        if self.rate is None or key is None:
            return True
        wait = _sliding_window()(keys=[cache.make_key(key)], args=[self.duration, self.num_requests, uuid.uuid4().hex])
        self.retry_after = None if wait is None else max(float(wait), 0.0)
        return wait is None

    def wait(self):
        return self.retry_after

    def key_for(self, ident: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginIPThrottle(SharedRateThrottle):
    """Limit login attempts from one address."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self.key_for(self.get_ident(request))


class LoginAccountThrottle(SharedRateThrottle):
    """Limit login attempts against one account, from anywhere, by whichever of its names they use."""

    scope = "login_account"

    def get_cache_key(self, request, view):
        login = request.data.get("username") if hasattr(request.data, "get") else None
        # As the token serializer's CharField will, before it authenticates.
        return self.key_for_login(login.strip() if isinstance(login, str) else None)

    def key_for_login(self, login: str | None) -> str | None:
        if not login:
            return None
        if unstorable(login):  # no account's name, and PostgreSQL would refuse to look it up
            return self.key_for("name-" + hashlib.sha256(login.lower().encode(errors="surrogatepass")).hexdigest())
        User = get_user_model()
        user_id = (
            User._default_manager.filter(**{User.USERNAME_FIELD: username_for_login(login)})
            .values_list("pk", flat=True).first()
        )
        if user_id is not None:
            return self.key_for(f"user-{user_id}")
        # No such account: count per name, so guessing at it costs the same.
        return self.key_for("name-" + hashlib.sha256(login.lower().encode()).hexdigest())


class RegisterThrottle(SharedRateThrottle):
    """Limit registrations from one address."""

    scope = "register"

    def get_cache_key(self, request, view):
        return self.key_for(self.get_ident(request))


def session_login_refusal(request, login: str | None) -> int | None:
    """Count a session login attempt on the API's login counters; return the seconds to wait if it is refused.

    `login` is the username or email address as it will be authenticated.
    """
    address, account = LoginIPThrottle(), LoginAccountThrottle()
    waits = [
        throttle.retry_after or 0.0  # always set when allow_key() refuses
        for throttle, key in ((address, address.get_cache_key(request, None)), (account, account.key_for_login(login)))
        if not throttle.allow_key(key)
    ]
    return max(1, math.ceil(max(waits))) if waits else None

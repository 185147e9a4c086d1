"""WebSocket handshakes from this site's own pages only.

A browser sends the session cookie with a WebSocket handshake whatever page
opened it, and cookies tell neither ports nor (without Secure) schemes apart:
a page served from another port of the same host, or over plain HTTP, could
otherwise open a signed-in socket. So the handshake's Origin must be the
origin the request was made to, scheme, host and port, as Django's CSRF check
requires of a POST: the scheme is https if the socket came over TLS, or the
proxy says so through SECURE_PROXY_SSL_HEADER; the host is the Host header,
which must be one of ALLOWED_HOSTS. An origin listed in CSRF_TRUSTED_ORIGINS
is accepted as well.
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}


class SameOriginValidator:
    """Refuse a WebSocket handshake (HTTP 403) unless its Origin is the site's own."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not same_origin(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


class HandshakeRequest(HttpRequest):
    """The handshake as an HttpRequest, for Django's own reading of its host and scheme."""

    def __init__(self, scope):
        super().__init__()
        self.scope = scope
        server = scope.get("server") or ("unknown", "0")
        self.META = {"SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1] or "0")}
        for name, value in scope.get("headers", ()):
            key = "HTTP_" + name.decode("latin1").upper().replace("-", "_")
            value = value.decode("latin1")
            self.META[key] = f"{self.META[key]},{value}" if key in self.META else value

    def _get_scheme(self):
        return "https" if self.scope.get("scheme") in ("wss", "https") else "http"


def same_origin(scope) -> bool:
    """Return whether the handshake in `scope` comes from a page of this site."""
    request = HandshakeRequest(scope)
    origin = _origin(request.META.get("HTTP_ORIGIN", ""))
    if origin is None:
        return False
    try:
        host = request.get_host()
    except DisallowedHost:
        return False
    if origin == _origin(f"{request.scheme}://{host}"):
        return True
    return any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)


def _origin(url: str) -> tuple[str, str, int] | None:
    """Return (scheme, host, port) of an http(s) origin, the port made explicit; None for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _trusted(origin: tuple[str, str, int], pattern: str) -> bool:
    """Return whether `origin` matches `pattern` of CSRF_TRUSTED_ORIGINS (https://*.example.com too), as Django does."""
    if "://*." in pattern:
        scheme, domain = pattern.split("://*.", 1)
        trusted = _origin(f"{scheme}://{domain}")
        return (trusted is not None and origin[0] == trusted[0] and origin[2] == trusted[2]
                and is_same_domain(origin[1], "." + trusted[1]))
    return origin == _origin(pattern)

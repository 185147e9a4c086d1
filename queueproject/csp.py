"""The Content-Security-Policy header of every response.

Scripts come from this site's own static files only: no inline script, no
eval, nothing from another origin. That is what the dashboard (htmx and its
WebSocket extension, vendored under dashboard/static/dashboard/), the
admin and Swagger UI (drf-spectacular's split view, which serves its
setup script as a file) need, so an injected <script> or on* attribute
runs nowhere. Style elements and sheets come from this site too; style
attributes are allowed, for the widths the dashboard's progress bars and
charts are drawn with. Images may be data: URLs, as Swagger UI's icons are.
Pages cannot be framed, forms post to this site only, and connect-src
'self' covers the dashboard's WebSocket to this host.
"""

from django.conf import settings

DEFAULT_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "style-src-attr": ["'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def header_value(policy: dict[str, list[str]]) -> str:
    """Return `policy` as the value of a Content-Security-Policy header."""
    return "; ".join(f"{directive} {' '.join(sources)}" for directive, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    """Give every response settings.CONTENT_SECURITY_POLICY (DEFAULT_POLICY unless set), unless it has one."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.value = header_value(getattr(settings, "CONTENT_SECURITY_POLICY", DEFAULT_POLICY))

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.value)
        return response

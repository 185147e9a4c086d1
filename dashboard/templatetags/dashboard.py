"""Template filters and tags of the dashboard. None of them marks its output safe."""

import json
from datetime import UTC, datetime, timedelta

from django import template
from django.conf import settings
from django.utils import timezone

from dashboard.selectors import COUNT_CAP

register = template.Library()

# Where the pages open their WebSocket for live updates: the path a project's
# ASGI routing mounts dashboard.routing.websocket_urlpatterns under.
DEFAULT_WEBSOCKET_URL = "/ws/events/"


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds else "0 s"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds / 86400:.1f} days"


@register.filter
def ago(value: datetime | None) -> str:
    """Return how long ago `value` was ("12 s ago"), or "in 5 min" for a future time."""
    if not value:
        return ""
    seconds = (timezone.now() - value).total_seconds()
    return f"in {_span(seconds)}" if seconds < -0.5 else f"{_span(seconds)} ago"


@register.filter
def duration(value: timedelta | float | None) -> str:
    """Return a timedelta or a number of seconds as "1.4 s", "3 min 2 s"."""
    if value is None or value == "":
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return _span(seconds)


@register.filter
def elapsed(start, end) -> str:
    """Return the time from `start` to `end` (now if `end` is empty); either may be an ISO string."""
    start, end = parse_time(start), parse_time(end)
    if not start:
        return ""
    return _span(((end or timezone.now()) - start).total_seconds())


@register.filter
def get_item(mapping, key):
    """Return mapping[key], or None."""
    return mapping.get(key) if mapping else None


@register.filter
def count(value: int) -> str:
    """Return a capped count with thousands separators: "1,234", or "10,000+" at the cap."""
    if value is None:
        return ""
    if value > COUNT_CAP:
        return f"{COUNT_CAP:,}+"
    return f"{value:,}"


@register.filter
def pretty_json(value) -> str:
    """Return `value` as indented JSON text (escaped by the template like any other string)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@register.filter
def parse_time(value) -> datetime | None:
    """Return an ISO timestamp from a job's history as an aware datetime."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """Return the current query string with `changes` applied (None or "" removes a key)."""
    query = context["request"].GET.copy()
    for key, value in changes.items():
        query.pop(key, None)
        if value not in (None, ""):
            query[key] = value
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag
def dashboard_websocket_url() -> str:
    """Return DASHBOARD_WEBSOCKET_URL, the live updates' WebSocket path; empty (or None) turns them off."""
    return getattr(settings, "DASHBOARD_WEBSOCKET_URL", DEFAULT_WEBSOCKET_URL) or ""

"""Trace ids: one per request, carried by the jobs it enqueues into every log line about them.

The request's `X-Trace-Id` header is accepted when it is a safe token, and
one is generated otherwise. It is returned in the response header, stored
on every job the request enqueues (jobs.queue.enqueue reads it from here),
and the worker binds a job's trace id while it runs that job, so the
handler's own log lines, and any job it enqueues, carry it too.

The ids live in a context variable, so they follow a request or a job
across threads started with the context (as asgiref does for sync views)
and never leak from one request into another.
"""

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from django.utils.functional import empty

HEADER = "X-Trace-Id"
META_KEY = "HTTP_X_TRACE_ID"
# Letters, digits, dot, underscore and dash, at most the length Job.trace_id holds.
VALID_TRACE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

request_logger = logging.getLogger("jobs.requests")

# Fields added to every log line made while they are bound: trace_id, and
# for a running job job_id, type, queue, attempt, user_id and worker_id.
# The default is read-only: every context that binds nothing shares it, so
# a change made to it in place would show in all of them.
_log_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "skipjack_log_context", default=MappingProxyType({})
)


def new_trace_id() -> str:
    return uuid.uuid4().hex


def current_trace_id() -> str:
    """Return the trace id bound to the current request or job, or ""."""
    return _log_context.get().get("trace_id") or ""


def log_context() -> Mapping[str, Any]:
    """Return the log fields bound to the current context."""
    return _log_context.get()


@contextmanager
def bound(**fields):
    """Bind log fields (trace_id, job_id, ...) for the duration of the block."""
    token = _log_context.set({**_log_context.get(), **fields})
    try:
        yield
    finally:
        _log_context.reset(token)


def trace_id_from(request) -> str:
    """Return the request's X-Trace-Id if it is a safe token, else a new trace id."""
    given = request.META.get(META_KEY, "")
    return given if VALID_TRACE_ID.fullmatch(given) else new_trace_id()


def _user_id(request):
    """Return the id of the request's user if authentication already ran and found one.

    A lazy user nobody looked at is left alone: resolving it would cost a
    session query the request itself did not need.
    """
    user = request.__dict__.get("user")
    if user is None or getattr(user, "_wrapped", None) is empty:
        return None
    return user.pk if getattr(user, "is_authenticated", False) else None


class TraceIdMiddleware:
    """Bind a trace id to each request, echo it in the response and log the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        trace_id = request.trace_id = trace_id_from(request)
        started = time.monotonic()
        with bound(trace_id=trace_id):
            response = self.get_response(request)
            self._finish(request, response, trace_id, started)
        return response

    def _finish(self, request, response, trace_id: str, started: float) -> None:
        response[HEADER] = trace_id
        request_logger.info(
            "%s %s %s", request.method, request.path, response.status_code,
            extra={
                "event": "request", "method": request.method, "path": request.path,
                "status": response.status_code, "user_id": _user_id(request),
                "duration_ms": round((time.monotonic() - started) * 1000, 3),
            },
        )

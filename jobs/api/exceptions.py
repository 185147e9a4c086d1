import math

from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from jobs.errors import IllegalTransition
from jobs.metrics import count_rate_limit_rejection
from jobs.models import Job
from jobs.outage import RETRY_AFTER, is_database_unavailable, unavailable_message
from jobs.submission import IdempotencyConflict, SubmissionRefused


def rate_limited_response(message: str, retry_after: int | None) -> Response:
    body: dict[str, object] = {"detail": message}
    headers = {}
    if retry_after is not None:
        body["retry_after"] = retry_after
        headers["Retry-After"] = str(retry_after)
    return Response(body, status=status.HTTP_429_TOO_MANY_REQUESTS, headers=headers)


def database_unavailable_response() -> Response:
    return Response(
        {"detail": unavailable_message(), "retry_after": RETRY_AFTER},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def exception_handler(exc, context):
    """Map the queue's refusals to HTTP: 404, 409 and 429 with Retry-After; an unreachable database to 503.

    The 503 covers a failure anywhere in the view, authentication included
    (the JWT's user is read from the database).
    """
    if isinstance(exc, Job.DoesNotExist):
        return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, IllegalTransition):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IdempotencyConflict):
        return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    if isinstance(exc, SubmissionRefused):
        return rate_limited_response(exc.message, exc.retry_after)
    if isinstance(exc, Throttled):
        count_rate_limit_rejection(getattr(context.get("view"), "rate_limit_kind", "api"))
        wait = math.ceil(exc.wait) if exc.wait is not None else None  # type: ignore[attr-defined]  # set by Throttled(), not in its stubs
        return rate_limited_response(f"Too many requests. Try again in {wait or 1} seconds.", wait)
    if is_database_unavailable(exc):
        return database_unavailable_response()
    return drf_exception_handler(exc, context)

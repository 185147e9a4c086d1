import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.http.request import RawPostDataException

from jobs import conf

# A job request is its payload plus a few small fields.
ENVELOPE_BYTES = 16 * 1024


def max_body_bytes() -> int:
    return conf.get("JOBS_MAX_PAYLOAD_BYTES") + ENVELOPE_BYTES


class MalformedContentLengthMiddleware:
    """Answer 400 to a request whose Content-Length is not a non-negative integer.

    HTTP servers refuse such a request before the application sees it, but
    anything that reads the header as a number (django-prometheus does, for
    every request) must not be the first to find out.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        length = request.headers.get("content-length") or "0"
        if not length.isascii() or not length.isdigit():
            return JsonResponse({"detail": "Malformed Content-Length header."}, status=400)
        return self.get_response(request)


class ApiBodySizeLimitMiddleware:
    """Answer 413 to an API request whose body is larger than any valid request can be."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/") and self.too_large(request):
            return JsonResponse(
                {"detail": f"Request body is larger than {max_body_bytes()} bytes."}, status=413
            )
        return self.get_response(request)

    def too_large(self, request) -> bool:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > max_body_bytes():
            return True
        if not length and request.method in ("POST", "PUT", "PATCH"):
            # No length given (chunked): read the body, which Django caps.
            try:
                return len(request.body) > max_body_bytes()
            except RequestDataTooBig:
                return True
            except RawPostDataException:
                return False
        return False


def body_limit(path: str) -> int | None:
    """Return the most bytes of body a request to `path` may send, or None for no limit."""
    if path.startswith("/api/"):
        return max_body_bytes()
    # No page takes a file upload, so no body needs more than Django reads of a form.
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


async def read_body_within_limit(scope, receive, send):
    """Read an HTTP request's body up to its limit, before Django does; return a `receive` that replays it.

    Django's ASGI handler reads every byte of a body into a temporary file,
    spooled to disk past 2.5 MB, before any middleware can look at the
    request: a 10 GB body was written out in full only to be answered 413.
    Here a Content-Length over the limit is answered 413 at once, without
    reading anything, and a body without one (chunked) is read only until
    it passes the limit. Return None once the 413 is sent.
    """
    limit = body_limit(scope["path"])
    if limit is None:
        return receive
    length = dict(scope.get("headers") or ()).get(b"content-length", b"")
    if length.isdigit() and int(length) > limit:
        await _send_too_large(scope, send, limit)
        return None
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # a disconnect: Django sees it and gives up on the request
        size += len(message.get("body", b""))
        if size > limit:
            await _send_too_large(scope, send, limit)
            return None
        if not message.get("more_body", False):
            break

    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay


async def _send_too_large(scope, send, limit: int) -> None:
    if scope["path"].startswith("/api/"):
        body = json.dumps({"detail": f"Request body is larger than {limit} bytes."}).encode()
        content_type = b"application/json"
    else:
        body = f"Request body is larger than {limit} bytes.".encode()
        content_type = b"text/plain; charset=utf-8"
    await send({
        "type": "http.response.start", "status": 413,
        # The rest of the body is never read, so the connection cannot be reused.
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})

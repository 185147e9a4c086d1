from django.http import JsonResponse
from django.http.request import RawPostDataException
from django.core.exceptions import RequestDataTooBig

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

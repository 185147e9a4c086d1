import sys

from django.http import HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error as django_server_error

from jobs.outage import RETRY_AFTER, is_database_unavailable, unavailable_message

UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en">
<head>
  <title>Service Unavailable (503)</title>
</head>
<body>
  <h1>Service Unavailable (503)</h1><p>{message}</p>
</body>
</html>
"""


def not_found(request, exception=None):
    """Answer JSON under /api/, Django's page everywhere else."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def server_error(request):
    """Answer 503 with Retry-After if the database is unreachable (JSON under /api/), Django's 500 page otherwise.

    Django calls this for an exception that nothing else handled, in a view
    or in a middleware (a session saved on the way out), while handling it:
    sys.exc_info() is that exception.
    """
    if not is_database_unavailable(sys.exc_info()[1]):
        return django_server_error(request)
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": unavailable_message(), "retry_after": RETRY_AFTER}, status=503)
    else:
        response = HttpResponse(UNAVAILABLE_PAGE.format(message=unavailable_message()), status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response

"""The base of the API's views: the same API in any project that mounts jobs.api.urls.

A view of DRF takes its parsers, renderers, permissions and error handler
from the project's REST_FRAMEWORK setting, which a project that installs
Skipjack writes for its own API. So the API's views name theirs: JSON in and
out, signed-in users only (a project's default may be AllowAny), and the
queue's refusals mapped to HTTP (jobs.api.exceptions). Authentication stays
the project's own: whatever DEFAULT_AUTHENTICATION_CLASSES it uses (the
monolith's JWT, sessions, tokens) signs users in here too.
"""

from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from jobs.api.exceptions import exception_handler
from jobs.api.negotiation import JsonWhateverTheAccept
from jobs.api.parsers import SafeJSONParser


class ApiView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [SafeJSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonWhateverTheAccept

    def get_exception_handler(self):
        return exception_handler

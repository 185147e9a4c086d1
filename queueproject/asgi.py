import gc
import os

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "queueproject.settings")

from jobs.api.middleware import read_body_within_limit  # noqa: E402 -- reads settings only when called


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, running each request's middleware and view in one thread hop.

    Django's own runs the middleware chain in async mode. Every sync
    middleware or view then costs a hop to a thread and back, and the
    innermost handler is adapted to async and back to sync again for the
    view: four hand-offs between the event loop and a thread for one of our
    requests, 0.8 ms of CPU out of 4.8 (bench/PROFILE.md). Here the chain is
    sync and runs in one call on the request's thread. An async view would
    still work, through Django's async_to_sync, but there is none: the
    asynchronous side of the project is the Channels consumers.
    """

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def handle(self, scope, receive, send):
        # Refuse an oversized body before Django would spool all of it to disk.
        receive = await read_body_within_limit(scope, receive, send)
        if receive is not None:
            await super().handle(scope, receive, send)


# Build the Django app first: it sets up the app registry the rest imports need.
django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from dashboard.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The dashboard's live events at /ws/events/: pages of this very
        # origin (scheme, host and port) only, signed in with the session cookie.
        "websocket": websocket_application(),
    }
)

# Import every view now instead of on the first request, then put everything
# loaded so far out of the garbage collector's reach: it lives as long as the
# process, and a full collection that walks it (100,000 objects, 20 ms) stalls
# every request in flight. Frozen, one takes well under a millisecond.
get_resolver().url_patterns  # noqa: B018
gc.freeze()

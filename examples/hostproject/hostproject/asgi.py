import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostproject.settings")
http_application = get_asgi_application()  # sets Django up before the routing is imported

from channels.routing import ProtocolTypeRouter  # noqa: E402

from dashboard.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter({
    "http": http_application,
    # The dashboard's live updates, at DASHBOARD_WEBSOCKET_URL.
    "websocket": websocket_application("skipjack/"),
})

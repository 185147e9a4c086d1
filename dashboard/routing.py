from django.urls import path

from dashboard.consumers import JobEventsConsumer

websocket_urlpatterns = [
    # Channels routes ASGI apps with Django's path(), whose stubs take views only.
    path("ws/events/", JobEventsConsumer.as_asgi()),  # type: ignore[arg-type]
]


def websocket_application(prefix: str = ""):
    """Return the ASGI app of the dashboard's WebSocket, for a project's ProtocolTypeRouter.

    Its path is `prefix` + "ws/events/" (set DASHBOARD_WEBSOCKET_URL to it);
    handshakes come from this site's own pages only, signed in with the session cookie.
    """
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter

    from dashboard.origin import SameOriginValidator

    routes = [path(prefix, URLRouter(websocket_urlpatterns))] if prefix else websocket_urlpatterns  # type: ignore[arg-type]
    # (Channels' stubs take only a URLPattern subclass of their own, which path() never returns.)
    return SameOriginValidator(AuthMiddlewareStack(URLRouter(routes)))  # type: ignore[arg-type]

from django.urls import path

from dashboard.consumers import JobEventsConsumer

websocket_urlpatterns = [
    # Channels routes ASGI apps with Django's path(), whose stubs take views only.
    path("ws/events/", JobEventsConsumer.as_asgi()),  # type: ignore[arg-type]
]

from django.urls import path

from dashboard.consumers import JobEventsConsumer

websocket_urlpatterns = [
    path("ws/events/", JobEventsConsumer.as_asgi()),
]

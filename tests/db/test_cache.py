"""The shared cache on Redis: one connection pool per process, sessions read from it."""

import asyncio
import contextvars

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.cache import caches
from django.test import AsyncClient, Client

from tests.factories import UserFactory


def test_every_cache_object_of_the_process_shares_one_redis_pool():
    """Hand each cache object (Django makes one per async context, so per ASGI request) the same pool."""
    first, second = caches.create_connection("default"), caches.create_connection("default")
    assert first is not second
    assert first._cache._get_connection_pool(write=True) is second._cache._get_connection_pool(write=True)


@pytest.mark.django_db(transaction=True)
def test_asgi_requests_reuse_redis_connections(settings):
    """Serve signed-in ASGI requests (session and overview from the cache) without connecting to Redis for each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    sync_client = Client()
    sync_client.force_login(UserFactory())
    client = AsyncClient()
    client.cookies = sync_client.cookies
    server = redis.Redis.from_url(settings.REDIS_URL)

    async def fetch(times: int):
        for _ in range(times):
            # Each in a task of its own, with a context of its own, as a server runs requests.
            response = await asyncio.create_task(client.get("/dashboard/"), context=contextvars.Context())
            assert response.status_code == 200

    async_to_sync(fetch)(2)
    before = server.info("stats")["total_connections_received"]
    async_to_sync(fetch)(10)
    assert server.info("stats")["total_connections_received"] - before < 3


def test_sessions_are_read_from_the_cache():
    """Keep sessions in the cache, written through to the database."""
    assert settings.SESSION_ENGINE == "django.contrib.sessions.backends.cached_db"

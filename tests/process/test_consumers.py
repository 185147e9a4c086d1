"""Live job events: the coalescing buffer, and the WebSocket consumer on the real Redis channel layer.

The sockets go through the real ASGI application (origin check, session
auth, routing), signed in with a session cookie as a browser is.
"""

import asyncio
import time

import pytest

from tests.db.test_consumers import (
    cookie_for,
    fast_password_hashing,  # noqa: F401 - fixtures
)
from tests.factories import UserFactory


@pytest.mark.process
def test_a_real_server_accepts_sockets_from_its_own_origin_only(start_server, settings):
    """Over uvicorn, accept the page's own origin, and refuse another port, another scheme and another host."""
    import websockets

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cookie = cookie_for(UserFactory()).decode()
    server = start_server().wait_until_up()
    port = server.port
    url = f"ws://127.0.0.1:{port}/ws/events/"

    async def status(origin: str, **headers) -> int:
        try:
            async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin, **headers}):
                return 101
        except websockets.InvalidStatus as refused:
            return refused.response.status_code

    async def scenario():
        return {
            "own": await status(f"http://127.0.0.1:{port}"),
            "other port": await status(f"http://127.0.0.1:{port + 1}"),
            "https page": await status(f"https://127.0.0.1:{port}"),
            "other host": await status(f"http://localhost:{port}"),
            # uvicorn takes the scheme from a trusted proxy (FORWARDED_ALLOW_IPS: 127.0.0.1).
            "https behind a proxy": await status(f"https://127.0.0.1:{port}", **{"X-Forwarded-Proto": "https"}),
            "http behind an https proxy": await status(f"http://127.0.0.1:{port}", **{"X-Forwarded-Proto": "https"}),
        }

    assert asyncio.run(scenario()) == {
        "own": 101, "other port": 403, "https page": 403, "other host": 403,
        "https behind a proxy": 101, "http behind an https proxy": 403,
    }


@pytest.mark.process
def test_the_cap_holds_across_web_processes(start_server, settings):
    """Count a user's sockets on every server against one cap, and free a slot on one server for a socket on another."""
    import websockets

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    alice, bob = cookie_for(UserFactory()).decode(), cookie_for(UserFactory()).decode()
    env = {"DASHBOARD_MAX_SOCKETS_PER_USER": "3"}
    servers = [start_server(env) for _ in range(2)]
    for server in servers:
        server.wait_until_up()

    async def open_on(server, cookie):
        url = server.url.replace("http://", "ws://") + "/ws/events/"
        try:
            return await websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": server.url})
        except websockets.InvalidStatus as refused:
            assert refused.response.status_code == 403
            return None

    async def scenario():
        first, second = servers
        held = [await open_on(first, alice), await open_on(first, alice), await open_on(second, alice)]
        assert None not in held
        assert await open_on(first, alice) is None
        assert await open_on(second, alice) is None
        bobs = await open_on(second, bob)
        assert bobs is not None
        await held[0].close()
        deadline = time.monotonic() + 5
        while (another := await open_on(second, alice)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert another is not None
        assert await open_on(first, alice) is None
        for socket in [*held[1:], bobs, another]:
            await socket.close()

    asyncio.run(scenario())

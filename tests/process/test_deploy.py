"""Deployment files: docker-compose, the Dockerfile, monitoring provisioning, and the production settings."""

import re
import secrets
import time

import pytest
from django.test import Client

from tests.conftest import ROOT
from tests.unit.test_deploy import _answers, compose, compose_environment, needs_compose, published_on


def _web_shutdown_options() -> list[str]:
    cmd = re.search(r"exec uvicorn ([^\"]+)", (ROOT / "Dockerfile").read_text()).group(1).split()
    index = cmd.index("--timeout-graceful-shutdown")
    return cmd[index:index + 2]


def test_web_server_stops_within_docker_stops_grace_after_websockets_close(start_server, settings):
    """Exit on SIGTERM within the Dockerfile's graceful timeout, even after dashboards' sockets came and went."""
    import asyncio
    import signal

    import websockets

    from jobs.stack import WEB_SHUTDOWN_OPTIONS
    from tests.factories import UserFactory

    options = _web_shutdown_options()
    assert list(WEB_SHUTDOWN_OPTIONS) == options
    grace = float(options[1])
    assert grace < 10  # `docker stop` kills after 10 s
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    for _ in range(3):
        server = start_server(extra_args=options).wait_until_up()

        async def come_and_go(server):
            url = server.url.replace("http://", "ws://") + "/ws/events/"
            headers = {"Cookie": cookie, "Origin": server.url}
            sockets = [await websockets.connect(url, additional_headers=headers) for _ in range(4)]
            await asyncio.sleep(0.5)
            for socket in sockets:
                await socket.close()

        asyncio.run(come_and_go(server))
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=grace + 5)
        assert time.monotonic() - started < grace + 2


@needs_compose
@pytest.mark.process
def test_compose_does_not_trust_x_forwarded_proto_on_the_port_it_publishes(start_server):
    """Redirect a plain-HTTP request that claims X-Forwarded-Proto: https, on a real server with compose's defaults."""
    import requests

    from tests.conftest import wait_for

    env = compose_environment("web", SECRET_KEY=secrets.token_urlsafe(50))
    for name in ("DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY"):
        env.pop(name)  # the test's own databases, and one process
    # In the container a client of the published port is not loopback, so
    # uvicorn does not take the header from it either; here the test is.
    env["FORWARDED_ALLOW_IPS"] = "192.0.2.1"
    server = start_server({**env, "DJANGO_SETTINGS_MODULE": "queueproject.settings_production"})
    wait_for(lambda: _answers(f"{server.url}/healthz/"), timeout=30, message="the server")

    response = requests.get(f"{server.url}/accounts/login/", headers={"X-Forwarded-Proto": "https"},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 301, response.status_code
    assert response.headers["Location"].startswith("https://127.0.0.1")
    assert published_on(compose("config").stdout) == "0.0.0.0"  # noqa: S104 - an address compared to, not bound
    assert published_on(compose("config", env={"WEB_PORT": "127.0.0.1:8000"}).stdout) == "127.0.0.1"

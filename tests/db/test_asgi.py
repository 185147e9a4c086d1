"""The HTTP side of the ASGI application: one hop to a thread per request."""

import asyncio
import json

import pytest
from asgiref.sync import AsyncToSync, SyncToAsync, async_to_sync

from queueproject.asgi import application


async def asgi_get(path: str) -> tuple[int, dict]:
    """Send one GET through the ASGI application as a server would; return the status and the JSON body."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected until the response is sent

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


@pytest.mark.django_db(transaction=True)
def test_an_http_request_runs_middleware_and_view_in_one_hop_to_a_thread(monkeypatch):
    """Run the middleware chain and the view in one call to a thread, never handing back to the event loop between them."""
    hops = {"to_thread": [], "to_loop": []}
    to_thread, to_loop = SyncToAsync.__call__, AsyncToSync.__call__

    def count_to_thread(self, *args, **kwargs):
        hops["to_thread"].append(getattr(self.func, "__qualname__", repr(self.func)))
        return to_thread(self, *args, **kwargs)

    def count_to_loop(self, *args, **kwargs):
        hops["to_loop"].append(getattr(self.awaitable, "__qualname__", repr(self.awaitable)))
        return to_loop(self, *args, **kwargs)

    async def request():
        monkeypatch.setattr(SyncToAsync, "__call__", count_to_thread)
        monkeypatch.setattr(AsyncToSync, "__call__", count_to_loop)
        try:
            return await asgi_get("/api/jobs/")
        finally:
            monkeypatch.undo()

    status, body = async_to_sync(request)()
    assert status == 401 and "detail" in body
    assert hops["to_loop"] == []
    # The request's signals and the response's close aside, one hop: the whole chain.
    assert [name for name in hops["to_thread"] if "get_response" in name] == ["BaseHandler.get_response"]

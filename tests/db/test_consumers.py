"""Live job events: the coalescing buffer, and the WebSocket consumer on the real Redis channel layer.

The sockets go through the real ASGI application (origin check, session
auth, routing), signed in with a session cookie as a browser is.
"""

import asyncio
import time
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from dashboard import sockets
from jobs import events, queue
from jobs.models import JobStatus
from queueproject.asgi import application
from tests.factories import UserFactory

ORIGIN = b"http://testserver"
HOST = b"testserver"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The factories set a password on every user; the real hasher's work factor is not under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_changes_in_a_transaction_wait_for_the_commit(monkeypatch, db, django_capture_on_commit_callbacks):
    """Buffer a change only when its transaction commits, and never for a rollback."""
    added = []
    monkeypatch.setattr(events.publisher, "add", added.append)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ZeroDivisionError):
            with transaction.atomic():
                events.jobs_changed([1], [7], "queued", 0)
                raise ZeroDivisionError
        events.jobs_changed([2], [7], "queued", 0)
        assert added == []
    assert [c.ids for c in added] == [[2]]


# --- The consumer on Redis -------------------------------------------------------------

pytestmark_live = pytest.mark.django_db(transaction=True)


def cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_socket(cookie: bytes | None = None, origin: bytes | None = ORIGIN, host: bytes | None = HOST,
                      scheme: str = "ws", headers=()) -> tuple[WebsocketCommunicator, bool]:
    headers = [*headers, *([(b"host", host)] if host else []), *([(b"origin", origin)] if origin else [])]
    if cookie:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def receive(communicator, timeout=10.0) -> dict:
    return await communicator.receive_json_from(timeout=timeout)


async def receive_for_job(communicator, job_id: int, timeout=10.0) -> dict:
    """Return the first message that names `job_id`, skipping others (worker heartbeats)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await receive(communicator, timeout=max(0.01, deadline - time.monotonic()))
        if message["resync"] or job_id in [row[0] for row in message["jobs"]]:
            return message


@pytestmark_live
def test_anonymous_sockets_are_refused():
    """Refuse the handshake of a socket without a signed-in session."""

    async def scenario():
        communicator, connected = await open_socket()
        assert not connected
        communicator, connected = await open_socket(b"sessionid=not-a-session")
        assert not connected

    async_to_sync(scenario)()


@pytestmark_live
@pytest.mark.parametrize("origin, host, scheme", [
    (b"http://evil.example", HOST, "ws"),
    (b"http://testserver:8080", HOST, "ws"),  # another port of the same host
    (b"http://testserver", b"testserver:8000", "ws"),
    (b"https://testserver", HOST, "ws"),  # a page over HTTPS, the socket over plain HTTP
    (b"http://testserver", HOST, "wss"),  # and the other way round
    (b"http://localhost", HOST, "ws"),  # allowed host, but another one than this request's
    (b"null", HOST, "ws"),
    (None, HOST, "ws"),
    (b"http://evil.example", b"evil.example", "ws"),  # a Host outside ALLOWED_HOSTS
    (b"http://testserver", None, "ws"),
])
def test_sockets_from_other_origins_are_refused(origin, host, scheme):
    """Refuse a signed-in socket unless its page has this request's scheme, host and port."""
    cookie = cookie_for(UserFactory())

    async def scenario():
        _, connected = await open_socket(cookie, origin=origin, host=host, scheme=scheme)
        assert not connected
        communicator, connected = await open_socket(cookie)
        assert connected
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_sockets_from_the_sites_own_origin_are_accepted(settings):
    """Accept a socket whose page has the request's scheme, host and port, as a proxy reports them, or a trusted origin."""
    cookie = cookie_for(UserFactory())
    settings.ALLOWED_HOSTS = ["testserver", "jobs.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.org"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    async def scenario():
        accepted = [
            await open_socket(cookie, origin=b"http://testserver:8000", host=b"testserver:8000"),
            await open_socket(cookie, origin=b"https://jobs.example.com", host=b"jobs.example.com", scheme="wss"),
            await open_socket(cookie, origin=b"https://JOBS.example.com:443", host=b"jobs.example.com", scheme="wss"),
            # Behind a proxy that terminates TLS and says so.
            await open_socket(cookie, origin=b"https://jobs.example.com", host=b"jobs.example.com",
                              headers=[(b"x-forwarded-proto", b"https")]),
            await open_socket(cookie, origin=b"https://app.example.org"),
        ]
        assert [connected for _, connected in accepted] == [True] * len(accepted)
        for communicator, _ in accepted:
            await communicator.disconnect()
        _, connected = await open_socket(cookie, origin=b"http://jobs.example.com", host=b"jobs.example.com",
                                         headers=[(b"x-forwarded-proto", b"https")])
        assert not connected

    async_to_sync(scenario)()


@pytestmark_live
def test_a_user_receives_their_own_jobs_events():
    """Deliver a committed job's creation to its owner.

    How fast is measured by the benchmark (bench/), not asserted here: a
    loaded machine must not fail the suite.
    """
    alice = UserFactory()
    cookie = cookie_for(alice)

    async def scenario():
        communicator, connected = await open_socket(cookie)
        assert connected
        job = await sync_to_async(queue.enqueue)("reverse_string", "hi", owner=alice)
        message = await receive(communicator)
        assert message == {"jobs": [[job.pk, "queued", 0]], "resync": False, "created": True, "workers": False}
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_users_are_isolated_and_staff_see_everything():
    """Send a job's events to its owner and to staff, never to another user."""
    alice, bob, staff = UserFactory(), UserFactory(), UserFactory(is_staff=True)
    cookies = [cookie_for(u) for u in (alice, bob, staff)]

    async def scenario():
        (a, _), (b, _), (s, _) = [await open_socket(c) for c in cookies]
        bobs = await sync_to_async(queue.enqueue)("reverse_string", "bob's", owner=bob)
        assert (await receive_for_job(b, bobs.pk))["jobs"] == [[bobs.pk, "queued", 0]]
        assert [row[0] for row in (await receive_for_job(s, bobs.pk))["jobs"]] == [bobs.pk]
        assert await a.receive_nothing(timeout=0.6)
        alices = await sync_to_async(queue.enqueue)("reverse_string", "alice's", owner=alice)
        assert (await receive_for_job(a, alices.pk))["jobs"] == [[alices.pk, "queued", 0]]
        assert [row[0] for row in (await receive_for_job(s, alices.pk))["jobs"]] == [alices.pk]
        assert await b.receive_nothing(timeout=0.6)
        for communicator in (a, b, s):
            await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_events_follow_a_job_through_the_worker_transitions():
    """Announce the claim, progress and completion of a job, each with its new state."""
    alice = UserFactory()
    cookie = cookie_for(alice)

    def run_job(job_id):
        [claimed] = queue.claim_jobs(worker_id=uuid.uuid4(), limit=1)
        assert claimed.id == job_id
        time.sleep(0.4)  # one flush interval apart, so each change gets its own message
        queue.set_progress(claimed, 50)
        time.sleep(0.4)
        queue.complete_jobs([queue.Completion(claimed, "ih")])

    async def scenario():
        communicator, _ = await open_socket(cookie)
        job = await sync_to_async(queue.enqueue)("reverse_string", "hi", owner=alice)
        await receive_for_job(communicator, job.pk)
        runner = asyncio.ensure_future(sync_to_async(run_job)(job.pk))
        seen = [(await receive_for_job(communicator, job.pk))["jobs"][0] for _ in range(3)]
        await runner
        assert seen == [[job.pk, "running", 0], [job.pk, "running", 50], [job.pk, "completed", 100]]
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_a_failing_job_is_announced_when_it_reaches_the_dlq():
    """Announce a job moved to the DLQ with status dead."""
    alice = UserFactory()
    cookie = cookie_for(alice)

    def fail(job_id):
        [claimed] = queue.claim_jobs(worker_id=uuid.uuid4(), limit=1)
        queue.fail_job(claimed, error="RuntimeError: no", permanent=True)

    async def scenario():
        communicator, _ = await open_socket(cookie)
        job = await sync_to_async(queue.enqueue)("fail", {}, owner=alice, max_retries=0)
        await receive_for_job(communicator, job.pk)
        await sync_to_async(fail)(job.pk)
        statuses = []
        while not statuses or statuses[-1] != JobStatus.DEAD:
            message = await receive_for_job(communicator, job.pk)
            statuses.append(message["jobs"][0][1])
        assert statuses[-1] == JobStatus.DEAD
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_nothing_is_sent_before_commit_or_for_a_rollback():
    """Send a change only once its transaction commits, and never for a rolled-back one."""
    alice = UserFactory()
    cookie = cookie_for(alice)

    def rolled_back():
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                queue.enqueue("reverse_string", "never", owner=alice)
                raise RuntimeError("roll back")

    def slow_commit():
        with transaction.atomic():
            job = queue.enqueue("reverse_string", "later", owner=alice)
            time.sleep(0.8)
        return job

    async def scenario():
        communicator, _ = await open_socket(cookie)
        await sync_to_async(rolled_back)()
        assert await communicator.receive_nothing(timeout=0.8)
        committing = asyncio.ensure_future(sync_to_async(slow_commit)())
        assert await communicator.receive_nothing(timeout=0.6), "sent before the commit"
        job = await committing
        message = await receive(communicator)
        assert message["jobs"] == [[job.pk, "queued", 0]]
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_a_burst_is_coalesced_into_one_message():
    """Send one resync message for 500 jobs created at once, and one message for five changes in one commit."""
    alice = UserFactory()
    cookie = cookie_for(alice)

    def five_in_one_transaction():
        with transaction.atomic():
            return [queue.enqueue("reverse_string", str(n), owner=alice).pk for n in range(5)]

    async def scenario():
        communicator, _ = await open_socket(cookie)
        await sync_to_async(queue.enqueue_many)("reverse_string", ["x"] * 500, owner=alice)
        message = await receive(communicator)
        assert message == {"jobs": [], "resync": True, "created": True, "workers": False}
        assert await communicator.receive_nothing(timeout=0.6)
        ids = await sync_to_async(five_in_one_transaction)()
        message = await receive(communicator)
        assert [row[0] for row in message["jobs"]] == sorted(ids)
        assert await communicator.receive_nothing(timeout=0.6)
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_after_a_resync_the_next_flush_waits_the_busy_window(settings):
    """Follow a flush that said "resync" with the longer window, and a quiet one with the short one again."""
    settings.JOBS_EVENTS_BUSY_FLUSH_INTERVAL = 3.0
    alice = UserFactory()
    cookie = cookie_for(alice)

    async def scenario():
        communicator, _ = await open_socket(cookie)
        await sync_to_async(queue.enqueue_many)("reverse_string", ["x"] * 500, owner=alice)
        assert (await receive(communicator))["resync"] is True
        job = await sync_to_async(queue.enqueue)("reverse_string", "one", owner=alice)
        # Held back for the busy window after the resync, then sent.
        assert await communicator.receive_nothing(timeout=1.5)
        message = await receive(communicator)
        assert [row[0] for row in message["jobs"]] == [job.pk] and not message["resync"]
        # That flush listed its jobs, so the next change goes out after the short window.
        started = time.monotonic()
        job = await sync_to_async(queue.enqueue)("reverse_string", "two", owner=alice)
        message = await receive(communicator)
        assert [row[0] for row in message["jobs"]] == [job.pk]
        assert time.monotonic() - started < 2.0
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_the_socket_ignores_what_the_browser_sends():
    """Accept and ignore messages from the browser; the socket only carries events out."""
    cookie = cookie_for(UserFactory())

    async def scenario():
        communicator, _ = await open_socket(cookie)
        await communicator.send_json_to({"subscribe": "staff"})
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_only_groups_with_an_open_socket_are_watched():
    """Mark the groups of an open socket as watched, and no one else's."""
    from channels.layers import get_channel_layer

    alice, bob, staff = UserFactory(), UserFactory(), UserFactory(is_staff=True)
    cookies = [cookie_for(alice), cookie_for(staff)]

    async def scenario():
        sockets = [(await open_socket(cookie))[0] for cookie in cookies]
        watched = await events.watched_groups(get_channel_layer())
        assert {f"user.{alice.pk}", f"user.{staff.pk}", "staff"} <= watched
        assert f"user.{bob.pk}" not in watched
        for communicator in sockets:
            await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_an_idle_socket_stays_open():
    """Keep a socket with nothing to say open past the channel layer's 5 s wait for messages."""
    alice = UserFactory()
    cookie = cookie_for(alice)

    async def scenario():
        communicator, _ = await open_socket(cookie)
        assert await communicator.receive_nothing(timeout=6.5)
        job = await sync_to_async(queue.enqueue)("reverse_string", "still here", owner=alice)
        assert (await receive(communicator))["jobs"] == [[job.pk, "queued", 0]]
        await communicator.disconnect()

    async_to_sync(scenario)()


# --- What a socket holds, and when it ends ---------------------------------------------


def renewals() -> list[asyncio.Task]:
    """Return the tasks that renew a socket's subscriptions, in this event loop."""
    return [task for task in asyncio.all_tasks() if "_stay_subscribed" in repr(task.get_coro())]


@pytest.fixture
def fast_renewal(monkeypatch):
    """Renew a socket's watch mark every 0.2 s, each mark lasting 0.6 s, so a socket that stopped renewing is soon seen."""
    monkeypatch.setattr(events, "WATCH_RENEW", 0.2)
    monkeypatch.setattr(events, "WATCH_SECONDS", 0.6)


@pytestmark_live
def test_a_frame_that_is_not_json_is_ignored(fast_renewal):
    """Ignore text that is not JSON and binary frames, keep relaying events, and stop renewing once the socket closes."""
    from channels.layers import get_channel_layer

    alice = UserFactory()
    cookie = cookie_for(alice)

    async def scenario():
        communicator, _ = await open_socket(cookie)
        await communicator.send_to(text_data="this is not JSON {")
        await communicator.send_to(bytes_data=b"\x00\xff")
        job = await sync_to_async(queue.enqueue)("reverse_string", "still here", owner=alice)
        assert (await receive_for_job(communicator, job.pk))["jobs"] == [[job.pk, "queued", 0]]
        await communicator.disconnect()
        await asyncio.sleep(1.0)
        assert renewals() == []
        assert f"user.{alice.pk}" not in await events.watched_groups(get_channel_layer())

    async_to_sync(scenario)()


async def eventually(predicate, timeout=10.0):
    """Await `predicate()` until it is true; return its last value."""
    deadline = time.monotonic() + timeout
    while not (value := await predicate()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return value


async def holds_slots(layer, user, count: int) -> bool:
    """Return whether `user`'s sockets hold `count` slots now."""
    return await layer.connection(0).zcard(sockets.slots_key(layer, user.pk)) == count


@pytestmark_live
def test_a_mass_disconnect_past_the_redis_pool_limit_leaves_nothing_renewed(settings):
    """Stop every socket's renewal, and give back every slot, when many close at once on a channel layer short of connections.

    The layer's pool has 4 connections, fewer than the sockets that close at
    once, as thousands of sockets are to redis-py's default of 100.
    """
    from channels.layers import get_channel_layer

    layers = {"default": {**settings.CHANNEL_LAYERS["default"]}}
    config = layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"]}
    config["hosts"] = [{**config["hosts"][0], "max_connections": 4}]
    settings.CHANNEL_LAYERS = layers
    settings.DASHBOARD_MAX_SOCKETS_PER_USER = 100
    users = [UserFactory() for _ in range(6)]
    cookies = [cookie_for(user) for user in users]

    async def scenario():
        layer = get_channel_layer()
        communicators = []
        for cookie in cookies * 5:
            communicator, connected = await open_socket(cookie)
            assert connected
            communicators.append(communicator)
        assert len(renewals()) == 30
        await asyncio.gather(*(c.disconnect(timeout=5) for c in communicators), return_exceptions=True)
        await asyncio.sleep(0.1)
        assert renewals() == []

        async def slots_held():
            connection = layer.connection(0)
            return [await connection.zcard(sockets.slots_key(layer, user.pk)) for user in users]

        async def all_given_back():
            try:
                return await slots_held() == [0] * 6
            except Exception:  # noqa: BLE001 - this test's own command may find the pool busy too
                return False

        assert await eventually(all_given_back), await slots_held()

    async_to_sync(scenario)()


@pytestmark_live
def test_a_user_holds_at_most_the_cap_of_open_sockets(settings):
    """Refuse a user's socket past DASHBOARD_MAX_SOCKETS_PER_USER, let other users in, and take one again once one closes."""
    from channels.layers import get_channel_layer

    settings.DASHBOARD_MAX_SOCKETS_PER_USER = 3
    alice, bob = UserFactory(), UserFactory()
    alices, bobs = cookie_for(alice), cookie_for(bob)

    async def scenario():
        layer = get_channel_layer()
        held = [await open_socket(alices) for _ in range(3)]
        assert [connected for _, connected in held] == [True] * 3
        _, connected = await open_socket(alices)
        assert not connected
        bobs_socket, connected = await open_socket(bobs)
        assert connected
        await held[0][0].disconnect()
        assert await eventually(lambda: holds_slots(layer, alice, 2))
        another, connected = await open_socket(alices)
        assert connected
        _, connected = await open_socket(alices)
        assert not connected
        for communicator in [another, bobs_socket, *(c for c, _ in held[1:])]:
            await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_slots_left_by_a_process_that_died_count_until_they_expire(settings):
    """Count another process's live slots against the cap, and not the ones it stopped renewing once they lapsed."""
    from channels.layers import get_channel_layer

    settings.DASHBOARD_MAX_SOCKETS_PER_USER = 2
    alice = UserFactory()
    cookie = cookie_for(alice)

    async def scenario():
        layer = get_channel_layer()
        key = sockets.slots_key(layer, alice.pk)
        now = time.time()
        # As a web process that was killed leaves them: one slot renewed a moment ago, one past its time.
        await layer.connection(0).zadd(key, {"specific.gone!live": now + 50, "specific.gone!lapsed": now - 1})
        communicator, connected = await open_socket(cookie)
        assert connected
        _, connected = await open_socket(cookie)
        assert not connected
        await communicator.disconnect()
        assert await eventually(lambda: holds_slots(layer, alice, 1))
        assert await layer.connection(0).zrange(key, 0, -1) == [b"specific.gone!live"]
        await layer.connection(0).delete(key)

    async_to_sync(scenario)()


async def closed_with(communicator, timeout=5.0) -> int:
    """Return the code the server closed `communicator` with, skipping events sent before; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        output = await communicator.receive_output(timeout=max(0.01, deadline - time.monotonic()))
        if output["type"] == "websocket.close":
            return output.get("code", 1000)


@pytestmark_live
@pytest.mark.parametrize("change", ["save", "update", "delete"])
def test_the_sockets_of_a_deactivated_or_deleted_user_close_within_seconds(change):
    """Close every socket of a user deactivated (saved, or by a queryset update) or deleted; refuse new ones; keep others'."""
    from django.contrib.auth import get_user_model

    alice, bob = UserFactory(), UserFactory()
    alices, bobs = cookie_for(alice), cookie_for(bob)

    def deactivate():
        if change == "save":
            alice.is_active = False
            alice.save()
        elif change == "update":
            get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
        else:
            alice.delete()

    async def scenario():
        mine = [(await open_socket(alices))[0] for _ in range(2)]
        theirs, _ = await open_socket(bobs)
        await sync_to_async(deactivate)()
        started = time.monotonic()
        assert [await closed_with(communicator) for communicator in mine] == [sockets.ACCESS_REVOKED] * 2
        assert time.monotonic() - started < 5
        _, connected = await open_socket(alices)
        assert not connected
        job = await sync_to_async(queue.enqueue)("reverse_string", "bob's", owner=bob)
        assert (await receive_for_job(theirs, job.pk))["jobs"] == [[job.pk, "queued", 0]]
        for communicator in [*mine, theirs]:
            await communicator.disconnect()

    async_to_sync(scenario)()


@pytestmark_live
def test_a_staff_socket_closes_when_its_user_is_no_longer_staff():
    """Close the staff socket of a user who lost the staff role; the socket opened again hears only about their own jobs."""
    from django.contrib.auth import get_user_model

    former, other = UserFactory(is_staff=True), UserFactory()
    cookie = cookie_for(former)

    def both_in_one_transaction():
        # One flush: staff would hear of both jobs in one message.
        with transaction.atomic():
            return (queue.enqueue("reverse_string", "not for former staff", owner=other),
                    queue.enqueue("reverse_string", "own", owner=former))

    async def scenario():
        communicator, _ = await open_socket(cookie)
        await sync_to_async(get_user_model().objects.filter(pk=former.pk).update)(is_staff=False)
        assert await closed_with(communicator) == sockets.ROLE_CHANGED
        await communicator.disconnect()
        communicator, connected = await open_socket(cookie)
        assert connected
        theirs, own = await sync_to_async(both_in_one_transaction)()
        message = await receive_for_job(communicator, own.pk)
        assert message["jobs"] == [[own.pk, "queued", 0]]
        assert await communicator.receive_nothing(timeout=0.6)
        await communicator.disconnect()

    async_to_sync(scenario)()

"""Publish job changes to the channel layer, after commit and coalesced.

jobs.queue reports every transition here with `jobs_changed()`. Nothing is
sent from the caller's thread: the change is registered with
`transaction.on_commit` (so a rolled-back change is never announced, and an
autocommit statement is announced at once), and the commit hook only puts
the change in this process's buffer. A flusher thread, started on first use,
waits JOBS_EVENTS_FLUSH_INTERVAL seconds after the first change, then empties
the buffer and sends one message per affected group:

    user.<id>   the changed jobs that user owns
    staff       every changed job

However many jobs change in an interval, each group gets one message, and a
message lists at most JOBS_EVENTS_MAX_JOBS jobs; past that it carries
`resync: true` instead, and the page reloads what it shows over HTTP. A
page reloads a part at most once a second, so while changes come faster
than messages can list them, more resyncs would only cost: after a flush
that sent one, the flusher waits JOBS_EVENTS_BUSY_FLUSH_INTERVAL instead.
A burst of thousands of jobs a second thus costs a worker a dict update per
job and one flush a second, and a browser one small message a second.

Only groups someone watches get a message. Each open dashboard socket marks
its groups as watched in a Redis sorted set (score: until when), and a flush
reads that set once, after taking its batch: a change committed before the
flush that skips a newly opened socket is one that socket's page already
reads when it re-syncs on opening. So the work per flush follows the number
of open dashboards, not the number of users whose jobs changed.

Events are notifications, not a log: a subscriber that misses one (a
reconnect, a Redis restart) re-reads the state over HTTP.
"""

import asyncio
import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction

from jobs import conf

logger = logging.getLogger("jobs.events")

STAFF_GROUP = "staff"
# The channel-layer message type; the consumer's method `jobs_changed` handles it.
MESSAGE_TYPE = "jobs.changed"
# Seconds one flush may spend sending before its messages are dropped.
SEND_TIMEOUT = 2.0
# Past this many distinct changed jobs in one interval, stop tracking ids and
# send resync hints only, so a stalled flusher cannot grow the buffer.
MAX_BUFFERED_JOBS = 10_000
# An open socket marks its groups watched for WATCH_SECONDS, renewed every WATCH_RENEW.
WATCH_SECONDS = 60
WATCH_RENEW = 20

# (job_id, owner_id, status, progress); a None status or progress means "unchanged".
Change = tuple[int, int | None, str | None, int | None]


def user_group(user_id: int) -> str:
    """Return the channel-layer group of the user with `user_id`."""
    return f"user.{user_id}"


@dataclass
class Batch:
    """What changed during one flush interval, coalesced per job."""

    # job_id -> (owner_id, status, progress); the latest values win.
    jobs: dict[int, tuple[int | None, str | None, int | None]] = field(default_factory=dict)
    created: set[int] = field(default_factory=set)
    # Owners (None: unowned jobs) whose changes no longer fit MAX_BUFFERED_JOBS.
    overflowed: set[int | None] = field(default_factory=set)
    workers: bool = False

    def add(self, changes: Iterable[Change], *, created: bool) -> None:
        for job_id, owner_id, status, progress in changes:
            if self.overflowed or len(self.jobs) >= MAX_BUFFERED_JOBS:
                self._overflow(owner_id)
                continue
            previous = self.jobs.get(job_id)
            if previous is not None:
                # A progress report carries no status and a transition no progress: keep the other.
                status = previous[1] if status is None else status
                progress = previous[2] if progress is None else progress
            self.jobs[job_id] = (owner_id, status, progress)
            if created:
                self.created.add(job_id)

    def _overflow(self, owner_id: int | None) -> None:
        if not self.overflowed:
            self.overflowed.update(owner for owner, _, _ in self.jobs.values())
            self.jobs.clear()
            self.created.clear()
        self.overflowed.add(owner_id)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.overflowed or self.workers)

    def messages(self, max_jobs: int) -> dict[str, dict]:
        """Return {group: message}: one for each user whose jobs changed, and one for staff."""
        by_owner: dict[int | None, list[list]] = {}
        for job_id, (owner_id, status, progress) in self.jobs.items():
            by_owner.setdefault(owner_id, []).append([job_id, status, progress])
        messages = {}
        for owner_id in (by_owner.keys() | self.overflowed) - {None}:
            rows = by_owner.get(owner_id, [])
            messages[user_group(owner_id)] = _message(
                rows, max_jobs=max_jobs, resync=owner_id in self.overflowed,
                created=any(row[0] in self.created for row in rows),
            )
        everything = [row for rows in by_owner.values() for row in rows]
        messages[STAFF_GROUP] = _message(
            everything, max_jobs=max_jobs, resync=bool(self.overflowed), created=bool(self.created),
            workers=self.workers,
        )
        return messages


def _message(rows: list[list], *, max_jobs: int, resync: bool, created: bool, workers: bool = False) -> dict:
    resync = resync or len(rows) > max_jobs
    return {
        "type": MESSAGE_TYPE,
        # [[job_id, status, progress], ...]; empty when resync is set.
        "jobs": [] if resync else sorted(rows),
        # Too many changes to list: reload everything shown.
        "resync": resync,
        # New jobs appeared (or, with resync, may have).
        "created": created or resync,
        # A worker started, stopped or sent a heartbeat.
        "workers": workers,
    }


class Publisher:
    """This process's buffer of changes and the thread that flushes it to the channel layer."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._batch = Batch()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_error_logged = float("-inf")
        # Whether the last flush had more changes than its messages could list.
        self.busy = False

    def add(self, changes: Iterable[Change], *, created: bool = False) -> None:
        with self._lock:
            self._batch.add(changes, created=created)
        self._wake.set()
        self._ensure_thread()

    def add_workers(self) -> None:
        with self._lock:
            self._batch.workers = True
        self._wake.set()
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits the attributes but not the thread: it starts its own.
            self._pid = os.getpid()
            self._loop = None
            self._thread = threading.Thread(target=self._run, name="skipjack-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            # The coalescing window: whatever else changes meanwhile goes in the same messages.
            window = conf.get("JOBS_EVENTS_FLUSH_INTERVAL")
            if self.busy:
                window = max(window, conf.get("JOBS_EVENTS_BUSY_FLUSH_INTERVAL"))
            time.sleep(window)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the flusher must outlive any one bad flush
                logger.exception("publishing job events failed")

    def flush(self) -> int:
        """Send what the buffer holds now, one message per group; return how many were sent.

        Sets `busy` when a message had to say "resync".
        """
        with self._flush_lock:
            with self._lock:
                batch, self._batch = self._batch, Batch()
            if not batch:
                self.busy = False
                return 0
            messages = batch.messages(conf.get("JOBS_EVENTS_MAX_JOBS"))
            self.busy = any(message["resync"] for message in messages.values())
            # One loop for the life of the thread, so the channel layer keeps its Redis connections.
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(asyncio.wait_for(_send(messages), SEND_TIMEOUT))
            except Exception as exc:  # noqa: BLE001 - Redis down or slow: drop them, subscribers re-sync
                now = time.monotonic()
                if now - self._last_error_logged > 60:
                    self._last_error_logged = now
                    logger.warning("could not publish %d job event messages: %s", len(messages), exc)
                return 0
            return len(messages)

    def flush_at_exit(self) -> None:
        # A worker that stops gracefully announces its last changes (the jobs
        # it released) instead of leaving them to the next resync.
        if self._pid == os.getpid():
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - nothing more to do at exit
                logger.debug("final flush of job events failed", exc_info=True)


def _watch_key(layer) -> str:
    return f"{layer.prefix}:dashboard:watching"


def _presence_connection(layer):
    """Return the layer's Redis connection that holds the watched set, or None for other layers."""
    if not hasattr(layer, "connection") or not hasattr(layer, "consistent_hash"):
        return None
    return layer.connection(layer.consistent_hash(_watch_key(layer)))


async def watch(layer, groups: list[str]) -> None:
    """Mark `groups` as watched by an open socket for the next WATCH_SECONDS."""
    connection = _presence_connection(layer)
    if connection is not None and groups:
        until = time.time() + WATCH_SECONDS
        await connection.zadd(_watch_key(layer), {group: until for group in groups})


async def watched_groups(layer) -> set[str] | None:
    """Return the groups an open socket watches now, or None if the layer cannot tell."""
    connection = _presence_connection(layer)
    if connection is None:
        return None
    now = time.time()
    key = _watch_key(layer)
    members = await connection.zrangebyscore(key, now, "+inf")
    if random.random() < 0.01:  # now and then, drop what expired
        await connection.zremrangebyscore(key, "-inf", now)
    return {m.decode() if isinstance(m, bytes) else m for m in members}


async def _send(messages: dict[str, dict]) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    watched = await watched_groups(layer)
    await asyncio.gather(*(
        layer.group_send(group, message)
        for group, message in messages.items()
        if watched is None or group in watched
    ))


publisher = Publisher()
atexit.register(publisher.flush_at_exit)


def jobs_changed(changes: Iterable[Change], *, created: bool = False) -> None:
    """Announce changes of jobs once the current transaction commits (at once in autocommit).

    `changes` holds (job_id, owner_id, status, progress) tuples. Never
    raises into the caller: a failure to publish must not undo a transition.
    """
    if not conf.get("JOBS_EVENTS"):
        return
    changes = list(changes)
    if changes:
        transaction.on_commit(lambda: publisher.add(changes, created=created), robust=True)


def workers_changed() -> None:
    """Announce that a worker started, stopped or sent a heartbeat."""
    if conf.get("JOBS_EVENTS"):
        publisher.add_workers()

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
A burst of thousands of jobs a second thus costs a worker one buffer entry
per statement, not per job, and one flush a second; a browser gets one small
message a second.

Only groups someone watches get a message. Each open dashboard socket marks
its groups as watched in a Redis sorted set (score: until when), and a flush
reads that set once, after taking its batch: a change committed before the
flush that skips a newly opened socket is one that socket's page already
reads when it re-syncs on opening. Jobs are looked at one by one only for
watched groups, and only there, in the flusher: the work per flush follows
the number of open dashboards, not the number of users whose jobs changed.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.db import transaction

from jobs import conf

logger = logging.getLogger("jobs.events")

STAFF_GROUP = "staff"
# The channel-layer message type; the consumer's method `jobs_changed` handles it.
MESSAGE_TYPE = "jobs.changed"
# Seconds one flush may spend sending before its messages are dropped.
SEND_TIMEOUT = 2.0
# Past this many changes in one interval, keep only whose jobs changed and
# send resync hints, so a stalled flusher cannot grow the buffer.
MAX_BUFFERED_JOBS = 10_000
# An open socket marks its groups watched for WATCH_SECONDS, renewed every WATCH_RENEW.
WATCH_SECONDS = 60
WATCH_RENEW = 20


def user_group(user_id: int) -> str:
    """Return the channel-layer group of the user with `user_id`."""
    return f"user.{user_id}"


@dataclass(slots=True)
class Chunk:
    """Jobs that changed the same way at once: one report, as jobs_changed() got it."""

    ids: Sequence[int]
    owners: Sequence[int | None]  # each job's owner, in the order of ids
    status: str | None  # None: unchanged (a progress report)
    progress: int | None  # None: unchanged
    created: bool


@dataclass
class Batch:
    """What changed during one flush interval, kept as it was reported.

    Adding costs the same for one job or a thousand: the per-job work
    happens once per flush, in messages(), and only for the groups someone
    watches.
    """

    chunks: list[Chunk] = field(default_factory=list)
    size: int = 0  # changes held in chunks
    # Owners (None: unowned jobs) whose changes no longer fit MAX_BUFFERED_JOBS.
    overflowed: set[int | None] = field(default_factory=set)
    workers: bool = False

    def add(self, chunk: Chunk) -> None:
        if self.overflowed or self.size + len(chunk.ids) > MAX_BUFFERED_JOBS:
            for held in self.chunks:
                self.overflowed.update(held.owners)
            self.chunks.clear()
            self.size = 0
            self.overflowed.update(chunk.owners)
            return
        self.chunks.append(chunk)
        self.size += len(chunk.ids)

    def __bool__(self) -> bool:
        return bool(self.chunks or self.overflowed or self.workers)

    def messages(self, max_jobs: int, watched: set[str] | None = None) -> dict[str, dict]:
        """Return {group: message} for the watched groups (all when `watched` is None) that have news.

        A user's group hears about the jobs they own, staff about every job,
        each job listed once with its latest status and progress; a group
        with more than `max_jobs` jobs to list gets a resync hint instead.
        """
        staff = watched is None or STAFF_GROUP in watched
        # The owners to list jobs for; None stands for every owner.
        owners = None if watched is None else {
            int(group[5:]) for group in watched if group.startswith("user.") and group[5:].isdigit()
        }
        everything: dict[int, list] | None = {} if staff and not self.overflowed else None
        everything_created = False
        mine: dict[int, dict[int, list]] = {}
        created_by: set[int] = set()
        resync = {owner for owner in self.overflowed if owner is not None and (owners is None or owner in owners)}
        for chunk in self.chunks:
            if everything is not None:
                everything_created |= chunk.created
                if not _merge(everything, chunk.ids, chunk, max_jobs):
                    everything = None  # too many to list: staff resync
            if owners is not None and owners.isdisjoint(chunk.owners):
                continue  # nobody watching any of these owners: skip the chunk without a loop in Python
            for job_id, owner in zip(chunk.ids, chunk.owners, strict=True):
                if owner is None or owner in resync or (owners is not None and owner not in owners):
                    continue
                if chunk.created:
                    created_by.add(owner)
                if not _merge(mine.setdefault(owner, {}), (job_id,), chunk, max_jobs):
                    resync.add(owner)  # too many to list
                    del mine[owner]
        messages = {user_group(owner): _message(jobs, created=owner in created_by) for owner, jobs in mine.items()}
        messages.update({user_group(owner): _message(None) for owner in resync})
        if staff and (self.chunks or self.overflowed or self.workers):
            messages[STAFF_GROUP] = _message(everything, created=everything_created, workers=self.workers)
        return messages


def _merge(jobs: dict[int, list], ids: Iterable[int], chunk: Chunk, max_jobs: int) -> bool:
    """Record `chunk`'s change of each of `ids` in `jobs`; return False once `jobs` holds too many to list."""
    status, progress = chunk.status, chunk.progress
    for job_id in ids:
        row = jobs.get(job_id)
        if row is None:
            if len(jobs) >= max_jobs:
                return False
            jobs[job_id] = [job_id, status, progress]
            continue
        # A progress report carries no status and a transition no progress: keep the other.
        if status is not None:
            row[1] = status
        if progress is not None:
            row[2] = progress
    return True


def _message(jobs: dict[int, list] | None, *, created: bool = False, workers: bool = False) -> dict:
    resync = jobs is None
    return {
        "type": MESSAGE_TYPE,
        # [[job_id, status, progress], ...]; empty when resync is set.
        "jobs": [] if jobs is None else sorted(jobs.values()),
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

    def add(self, chunk: Chunk) -> None:
        with self._lock:
            self._batch.add(chunk)
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
        """Send what the buffer holds now, one message per watched group; return how many were sent.

        Sets `busy` when a message had to say "resync".
        """
        with self._flush_lock:
            with self._lock:
                batch, self._batch = self._batch, Batch()
            if not batch:
                self.busy = False
                return 0
            # One loop for the life of the thread, so the channel layer keeps its Redis connections.
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            try:
                sent = self._loop.run_until_complete(asyncio.wait_for(self._publish(batch), SEND_TIMEOUT))
            except Exception as exc:  # noqa: BLE001 - Redis down or slow: drop them, subscribers re-sync
                now = time.monotonic()
                if now - self._last_error_logged > 60:
                    self._last_error_logged = now
                    logger.warning("could not publish job events: %s", exc)
                return 0
            return sent

    async def _publish(self, batch: Batch) -> int:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return 0
        # Read after the batch was taken: a socket that opens later re-reads
        # its page anyway, and one that closed meanwhile costs one message.
        watched = await watched_groups(layer)
        messages = batch.messages(conf.get("JOBS_EVENTS_MAX_JOBS"), watched)
        self.busy = any(message["resync"] for message in messages.values())
        await asyncio.gather(*(layer.group_send(group, message) for group, message in messages.items()))
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
    if random.random() < 0.01:  # noqa: S311 - not a secret: now and then, drop what expired
        await connection.zremrangebyscore(key, "-inf", now)
    return {m.decode() if isinstance(m, bytes) else m for m in members}


publisher = Publisher()
atexit.register(publisher.flush_at_exit)


def prepare() -> None:
    """Load the channel layer now, if events are on, rather than in the first flush."""
    if conf.get("JOBS_EVENTS"):
        from channels.layers import get_channel_layer

        get_channel_layer()


def jobs_changed(ids: Sequence[int], owners: Sequence[int | None], status: str | None,
                 progress: int | None = None, *, created: bool = False) -> None:
    """Announce that jobs `ids` changed, once the current transaction commits (at once in autocommit).

    `owners` holds each job's owner id (None for no owner), in the order of
    `ids`. Every job took the new `status` (None: unchanged) and `progress`
    (None: unchanged). Never raises into the caller: a failure to publish
    must not undo a transition.
    """
    if ids and conf.get("JOBS_EVENTS"):
        chunk = Chunk(ids, owners, status, progress, created)
        transaction.on_commit(lambda: publisher.add(chunk), robust=True)


def workers_changed() -> None:
    """Announce that a worker started, stopped or sent a heartbeat."""
    if conf.get("JOBS_EVENTS"):
        publisher.add_workers()

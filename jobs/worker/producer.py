"""The producer: how much to claim, when, and from where.

It claims while there is room (capacity: the slots plus the prefetch), as
soon as a NOTIFY says jobs arrived, and otherwise once per poll interval.
ClaimFront keeps each claim from re-reading the part of the claim index
that earlier claims left behind.

Flow control (jobs.flow): the producer reads what it asks (queue.flow_state)
at least once a second, and at once when an operator changes a control
(a FLOW_CHANGED notice). While jobs with a concurrency key wait, or a queue
it serves has limits of its own, each claim first takes what the limits
allow (queue.claim_limited_jobs), then fills the rest of the room with the
plain claim, which never takes such jobs.
"""

import logging
import math
import threading
import uuid
from collections import deque

import psycopg
from django.db import connection

from jobs import queue
from jobs.models import NAMED_PRIORITIES

logger = logging.getLogger("jobs.worker")


class ClaimFront:
    """Which priorities a worker's claims read, and where each starts reading job_claim_idx.

    A claim reads each priority it knows of, highest first: the named ones,
    those the last sweep found jobs of (queue.ready_priorities), those of
    jobs it claimed, and any a NOTIFY named since (learn()). A sweep forgets
    the ones it no longer finds, so a priority seen once costs its probe
    only until then.

    The claim index keeps an entry for every job that left the ready
    statuses until VACUUM removes it, and all of them sit in front of the
    oldest ready job. A claim that reads from the start walks through them
    all: after a million jobs and no vacuum, 2,600 index pages and 10 ms per
    claim, more with every job. So a claim starts LOOKBACK seconds before
    the newest job this worker claimed so far. Every job due before that was
    claimed already, unless its transaction committed more than LOOKBACK
    after it began (a job is due from its INSERT, visible from its COMMIT).
    For those, a sweep from the very start runs every poll interval, and
    less often, up to MAX_SWEEP_INTERVAL, while sweeps find no such job.
    """

    LOOKBACK = 2.0
    MAX_SWEEP_INTERVAL = 10.0

    def __init__(self, sweep_interval: float):
        self.sweep_interval = self.base_interval = sweep_interval
        self.next_sweep = 0.0
        self.front: dict[int, float] = {}
        self.known: set[int] = set(NAMED_PRIORITIES)

    def start(self, now: float) -> dict[int, float] | None:
        """Return where the next claim starts in each priority it reads, or None when it is due to sweep."""
        if now >= self.next_sweep:
            return None
        return {p: self.front.get(p, -math.inf) - self.LOOKBACK for p in self.known}

    def sweep(self, present: list[int]) -> dict[int, float]:
        """Return where a sweep starts: every priority from the start, of those `present` and the named ones.

        The priorities no longer present are forgotten, with their fronts.
        """
        self.known = {*NAMED_PRIORITIES, *present}
        self.front = {p: due for p, due in self.front.items() if p in self.known}
        return dict.fromkeys(self.known, -math.inf)

    def learn(self, priorities) -> None:
        """Read these priorities from now on (a NOTIFY named them: jobs of them were enqueued)."""
        self.known.update(priorities)

    def claimed(self, jobs: list[queue.ClaimedJob], *, swept: bool, now: float) -> None:
        """Move the front past `jobs`; after a sweep, schedule the next one."""
        if swept:
            behind = any(job.due < self.front.get(job.priority, -math.inf) - self.LOOKBACK for job in jobs)
            self.sweep_interval = (
                self.base_interval if behind else min(self.sweep_interval * 2, self.MAX_SWEEP_INTERVAL)
            )
            self.next_sweep = now + self.sweep_interval
        for job in jobs:
            self.known.add(job.priority)
            if job.due > self.front.get(job.priority, -math.inf):
                self.front[job.priority] = job.due


# What follows a queue's name and ":" in a NOTIFY (jobs.queue.produce.wake_name).
KEYED = queue.KEYED_SUFFIX.removeprefix(":")
PRIORITY = queue.PRIORITY_SUFFIX.removeprefix(":")

# Seconds between reads of flow control's state, at most: a pause takes effect within this.
FLOW_INTERVAL = 1.0
# Seconds between limited claims of a worker that still has jobs for its free slots. A
# limited claim costs a few milliseconds whatever it finds (it reads every waiting key),
# and finishing jobs free a few keys at a time: spaced out, each claim takes what many
# finished jobs freed. A worker with an idle slot and nothing for it claims at once.
LIMITED_CLAIM_INTERVAL = 0.01
# Seconds between full limited claims while the fast path (claim_keyed_jobs) serves keyed
# jobs: the full claim offers every waiting key its turn, which the fast path's window does
# not, so no key waits longer than this for a look of its own.
FULL_LIMITED_CLAIM_INTERVAL = 1.0
# The fast path reads this many keyed jobs for each free place, and at least this many for
# each waiting key, up to KEYED_WINDOW_MAX.
KEYED_WINDOW = 4
KEYED_WINDOW_PER_KEY = 2
KEYED_WINDOW_MAX = 2000


class Producer:
    def __init__(self, *, queues: list[str] | None, capacity: int, poll_interval: float, lease_seconds: float,
                 wake: threading.Event, stopping: threading.Event):
        self.queues = queues
        self.capacity = capacity
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.worker_id: uuid.UUID | None = None
        self.front = ClaimFront(poll_interval)
        # When a full limited claim is due next, and before when the fast path is not tried again.
        self.next_full_limited = 0.0
        self.keyed_fast_after = 0.0
        self.swept = False
        self.next_poll = 0.0
        # A full claim suggests more jobs wait: claim again without waiting.
        self.more_likely = True
        self.notified = threading.Event()
        # Flow control: its state, when to read it again, and notices that it changed or keyed jobs arrived.
        self.flow = queue.FlowState()
        self.next_flow = 0.0
        self.flow_changed = threading.Event()
        self.keyed_notified = threading.Event()
        # Someone cancelled held jobs: the runner's heartbeat reads which, at once.
        self.cancel_notified = threading.Event()
        # Priorities NOTIFYs named, for the next claim to read (ClaimFront.learn).
        self.learned: deque[int] = deque()
        self.next_limited = 0.0
        # A limited claim was put off (LIMITED_CLAIM_INTERVAL): due at next_limited.
        self.limited_pending = False
        self._wake = wake
        self._stopping = stopping
        self._listener: threading.Thread | None = None

    def wants(self, held: int, now: float) -> bool:
        """Return whether to claim now, holding `held` jobs."""
        return held < self.capacity and (self.more_likely or self.notified.is_set() or now >= self.next_poll
                                         or (self.limited_pending and now >= self.next_limited))

    def next_wake(self) -> float:
        """Return when a put-off limited claim is due (infinity: none is)."""
        return self.next_limited if self.limited_pending else math.inf

    def refresh_flow(self, now: float) -> bool:
        """Read flow control's state if it is due or changed; return True if it was read."""
        if not self.flow_changed.is_set() and now < self.next_flow:
            return False
        self.flow_changed.clear()
        self.flow = queue.flow_state()
        self.next_flow = now + min(self.poll_interval, FLOW_INTERVAL)
        self.limited_room()
        return True

    def limited_room(self) -> None:
        """Note that limits may have room now (held jobs finished, or the limits changed)."""
        if self.flow.limited_work(self.queues):
            self.limited_pending = True

    def claim(self, *, held: int, starting: int, now: float) -> list[queue.ClaimedJob]:
        """Claim what there is room for; the first `starting` jobs start at once, for free slots.

        The limited claim runs while flow control has work for it, at most
        every LIMITED_CLAIM_INTERVAL unless a slot idles; the plain claim
        when jobs may wait for it (a full claim before, a NOTIFY, the poll),
        so that finishing keyed jobs do not send it to find nothing.
        """
        if self.worker_id is None:
            raise RuntimeError("The worker claims only once it is registered.")
        plain_due = self.more_likely or self.notified.is_set() or now >= self.next_poll
        self.notified.clear()
        free = self.capacity - held
        jobs: list[queue.ClaimedJob] = []
        if self.keyed_notified.is_set() or self.flow.limited_work(self.queues):
            limited = None
            if now >= self.next_limited or starting > 0:
                self.next_limited = now + LIMITED_CLAIM_INTERVAL
                limited = self._claim_limited(self.worker_id, free=free, starting=max(0, starting), now=now)
            if limited is None:  # put off, or another worker's claim had the turn
                self.limited_pending = True
            else:
                self.keyed_notified.clear()
                jobs = limited
                free -= len(jobs)
                starting -= sum(1 for job in jobs if job.started)
                # A full claim suggests more: claim again once there is room.
                self.limited_pending = free <= 0
        if free <= 0 or not plain_due:
            return jobs
        while self.learned:
            self.front.learn([self.learned.popleft()])
        start = self.front.start(now)
        self.swept = start is None
        if start is None:
            start = self.front.sweep(queue.ready_priorities())
        plain = queue.claim_jobs(worker_id=self.worker_id, limit=free, queues=self.queues,
                                 lease_seconds=self.lease_seconds, start=start, starting=max(0, starting),
                                 controlled=self.flow.controlled)
        self.front.claimed(plain, swept=self.swept, now=now)
        self.more_likely = len(plain) == free
        return jobs + plain

    def _claim_limited(self, worker_id: uuid.UUID, *, free: int, starting: int,
                       now: float) -> list[queue.ClaimedJob] | None:
        """Run a limited claim: the fast path where it serves, else the full claim; None if the turn was taken.

        Waits for its turn only with a slot idle and nothing for it.
        """
        if self.flow.keyed_only(self.queues) and self.keyed_fast_after <= now < self.next_full_limited:
            window = min(max(KEYED_WINDOW * free, KEYED_WINDOW_PER_KEY * self.flow.waiting_keys), KEYED_WINDOW_MAX)
            got = queue.claim_keyed_jobs(worker_id=worker_id, limit=free, queues=self.queues,
                                         lease_seconds=self.lease_seconds, starting=starting, window=window,
                                         controlled=self.flow.controlled, wait=starting > 0)
            if got is None:
                return None
            jobs, keys_read = got
            if len(jobs) < free and keys_read < self.flow.waiting_keys:
                # Short, and some waiting keys had no job in the window (one key's jobs in
                # front, at its limit): full claims look at every key, for a while.
                self.next_full_limited = now
                self.keyed_fast_after = now + FULL_LIMITED_CLAIM_INTERVAL
            return jobs
        self.next_full_limited = now + FULL_LIMITED_CLAIM_INTERVAL
        return queue.claim_limited_jobs(worker_id=worker_id, limit=free, queues=self.queues,
                                        lease_seconds=self.lease_seconds, starting=starting, wait=starting > 0)

    def sweep_now(self, now: float) -> None:
        """Have the next claims read from the start (burst mode's last look before it stops)."""
        self.front.next_sweep = self.next_full_limited = now
        self.more_likely = True

    # --- LISTEN/NOTIFY -----------------------------------------------------

    def listen(self) -> None:
        self._listener = threading.Thread(target=self._listen, name="skipjack-listen", daemon=True)
        self._listener.start()

    def join(self) -> None:
        if self._listener is not None:
            self._listener.join(timeout=2)  # it notices the stop within a second and closes its connection

    def _noticed(self, payload: str) -> None:
        """Act on one NOTIFY: a queue's name (with a suffix, perhaps: queue.wake_name), FLOW_CHANGED or CANCEL_REQUESTED."""
        if payload == queue.FLOW_CHANGED:
            self.flow_changed.set()
            self._wake.set()
            return
        if payload == queue.CANCEL_REQUESTED:
            self.cancel_notified.set()
            self._wake.set()
            return
        name, _, suffix = payload.partition(":")
        if self.queues is None or name in self.queues:
            if suffix == KEYED:
                self.keyed_notified.set()
            elif suffix.startswith(PRIORITY):
                try:
                    self.learned.append(int(suffix.removeprefix(PRIORITY)))
                except ValueError:  # not one of ours: polling covers it
                    logger.debug("NOTIFY with an unreadable priority: %r", payload)
            self.notified.set()
            self._wake.set()

    def _listen(self) -> None:
        """Wake the main loop when a NOTIFY announces jobs; polling covers any gap."""
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
                    delay = 0.5
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0, stop_after=1):
                            self._noticed(note.payload)
            except psycopg.Error as exc:
                logger.debug("listener lost its connection: %s", exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 10)

"""Slots: the threads that run handlers, the hand-over of claimed jobs to them, and giving up on jobs.

A handler is never interrupted from outside. A thread cannot be killed, and
an exception raised into it lands wherever the thread happens to be: in the
next job's code, in the slot's own bookkeeping, or inside the logging
module's lock, which then stays held for good. So a job given up on (a
timeout, a cancel, a lease lost while the worker stalled) is abandoned
instead: its stop event is set for handlers that look at it, whatever it
reports afterwards is dropped, and its slot thread is retired and replaced
at once, so the worker keeps its concurrency. A retired thread exits when
its handler returns; past `max_abandoned` of them still running, the worker
restarts its process (jobs.worker.runner).
"""

import logging
import queue as local_queue
import threading
import time
import uuid
from collections import deque

from django.db import connection, connections

from jobs.worker import executor
from jobs.worker.state import Outcome, Running, Slot

logger = logging.getLogger("jobs.worker")


class Slots:
    def __init__(self, *, concurrency: int, max_abandoned: int, wake: threading.Event, stopping: threading.Event):
        self.concurrency = concurrency
        self.max_abandoned = max_abandoned
        self.worker_id: uuid.UUID | None = None
        self._wake = wake
        self._stopping = stopping
        self._todo: local_queue.SimpleQueue = local_queue.SimpleQueue()
        # Finished attempts, for the completer; appended under the lock.
        self.done: deque[Outcome] = deque()
        # Claimed jobs that a slot started, whose start the completer stores.
        self.started: deque[Running] = deque()
        self.threads: list[Slot] = []
        self.abandoned: list[threading.Thread] = []  # retired slot threads whose handler still runs
        # Taken by a slot to start or finish a job and by the main thread to
        # give up on one, so the two never disagree on who reports it.
        self.lock = threading.Lock()

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._add()

    def hand(self, running: Running) -> None:
        """Queue a claimed job for the next free slot."""
        self._todo.put(running)

    def idle(self) -> int:
        return sum(1 for slot in self.threads if slot.current is None)

    def busy(self) -> int:
        return sum(1 for slot in self.threads if slot.current is not None)

    # --- giving up on jobs -------------------------------------------------

    def abandon(self, running: Running) -> bool:
        """Give up on a job: drop whatever it reports from now on, and free its slot at once.

        Return False if its slot had reported it already (its outcome stands).
        Nothing is raised into the handler's thread: the handler sees its
        stop event, and its thread exits when the handler returns.
        """
        with self.lock:
            if running.finished or running.abandoned:
                return False
            running.abandoned = True
            slot = running.slot if running.slot is not None and running.slot.current is running else None
            if slot is not None:
                slot.retired = True
        running.context.stop_requested.set()
        if slot is not None:
            self.threads.remove(slot)
            self.abandoned.append(slot.thread)
            if not self._stopping.is_set():
                self._add()
        return True

    def give_up(self, running: Running, outcome: Outcome) -> None:
        """Abandon `running` and report `outcome` for it, unless its slot reported it first."""
        if self.abandon(running):
            self.done.append(outcome)

    def enforce_timeouts(self, held, now: float) -> None:
        """Stop handlers past their timeout, and those that did not stop within the grace of a cancel."""
        for running in list(held):
            if running.started is None or running.abandoned:
                continue
            if running.cancel_deadline is not None and now >= running.cancel_deadline:
                self.give_up(running, Outcome(
                    running=running, ok=False, kind="cancelled", duration=now - running.started,
                    error="Cancelled: the handler did not stop within the grace period, so it was stopped."))
            elif now >= running.started + running.timeout:
                self.give_up(running, Outcome(running=running, ok=False, error=f"Timed out after {running.timeout:g}s",
                                              kind="timeout", duration=now - running.started))

    def cancel(self, running: Running, deadline: float) -> None:
        """Tell a running handler its job is being cancelled: it has until `deadline` to stop."""
        running.cancel_deadline = deadline
        running.context.cancel_requested.set()
        running.context.stop_requested.set()

    def check(self) -> None:
        """Replace a slot thread that died, and fail the job it was running."""
        for slot in [s for s in self.threads if not s.thread.is_alive()]:
            logger.error("slot thread %s died; starting a new one", slot.thread.name,
                         extra={"event": "slot_died", "worker_id": str(self.worker_id)})
            running = slot.current
            if running is not None and self.abandon(running):  # which replaces the slot
                self.done.append(Outcome(running=running, ok=False, error="The worker's slot thread running it died.",
                                         duration=time.monotonic() - (running.started or time.monotonic())))
            elif slot in self.threads:
                self.threads.remove(slot)
                if not self._stopping.is_set():
                    self._add()

    def still_abandoned(self) -> int:
        """Return how many retired threads still run a handler given up on."""
        self.abandoned = [thread for thread in self.abandoned if thread.is_alive()]
        return len(self.abandoned)

    # --- stopping ----------------------------------------------------------

    def take_back(self) -> list[Running]:
        """Take back every claimed job no slot has started."""
        drained = []
        while True:
            try:
                running = self._todo.get_nowait()
            except local_queue.Empty:
                break
            if running is not None:
                drained.append(running)
        with self.lock:
            for running in drained:
                running.abandoned = True
        return drained

    def withdraw(self, held, queues: frozenset[str]) -> list[Running]:
        """Take back the held jobs of `queues` that no slot has started (their queue was paused)."""
        withdrawn = []
        with self.lock:
            for running in held:
                if running.started is None and not running.abandoned and running.job.queue in queues:
                    running.abandoned = True  # a slot that takes it from the queue skips it
                    withdrawn.append(running)
        return withdrawn

    def stop(self) -> None:
        for _ in self.threads:
            self._todo.put(None)

    # --- the threads -------------------------------------------------------

    def _add(self) -> None:
        slot = Slot()
        slot.thread = threading.Thread(target=self._loop, args=(slot,), daemon=True,
                                       name=f"skipjack-slot-{len(self.threads)}")
        self.threads.append(slot)
        slot.thread.start()

    def _loop(self, slot: Slot) -> None:
        while True:
            running = self._todo.get()
            if running is None:
                return
            with self.lock:
                if running.abandoned:  # released at shutdown before it started
                    continue
                running.slot, running.started = slot, time.monotonic()
                slot.current = running
                if running.job.begin():  # it was `claimed`: its attempt starts now, its start is stored next
                    running.context.attempt = running.job.attempts
                    self.started.append(running)
            outcome = executor.execute(running, self.worker_id)
            with self.lock:
                slot.current = None
                if not running.abandoned:
                    running.finished = True
                    self.done.append(outcome)
                retired = slot.retired
            self._wake.set()
            if connection.connection is not None:
                # The handler used the ORM: hand the connection back to the pool.
                connections.close_all()
            if retired:
                return

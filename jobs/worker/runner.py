"""The `runworker` loop: one process, one Worker, made of parts.

    producer    claims ready jobs in batches while there is room (LISTEN, polling)
    slots       `concurrency` threads that run handlers, and give up on jobs
    executor    one attempt: resolve the handler -> run -> normalise -> outcome
    completer   writes outcomes and starts back, in batches
    maintainer  rescue, expiry, staging, the scheduler, roll-ups and pruning, on the leader only

The main thread runs the loop: each tick it enforces timeouts, writes back
what finished, stores starts, renews the leases of the jobs it holds with
the heartbeat, claims, and, once per poll interval, asks to lead the
maintenance. Then it sleeps until a slot finishes, a NOTIFY says new jobs
arrived, or the next deadline comes.

Handlers never run inside a transaction, and no database error, bad job or
misbehaving handler ends the loop. Only SIGTERM/SIGINT do, after the
running jobs finish or are given up within the shutdown grace period, and
a restart: past `max_abandoned` handlers still running jobs the worker gave
up on, it stops claiming, shuts down gracefully and starts itself afresh
(RESTART), which is the only way to end a handler stuck for good.
"""

import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque

from django.db import connection

from jobs import conf, db, events, queue
from jobs.errors import UnknownJobType
from jobs.registry import Handler, JobContext
from jobs.tasks.runtime import handler_for
from jobs.worker.completer import DB_ERRORS, Completer
from jobs.worker.maintainer import Maintainer
from jobs.worker.producer import Producer
from jobs.worker.slots import Slots
from jobs.worker.state import Outcome, Running, log_job

logger = logging.getLogger("jobs.worker")

# Exit code of a worker that must be replaced by a fresh process; runworker
# re-executes itself on it.
RESTART = 75
# Seconds past the shutdown grace period after which a worker that has not
# finished stopping (a database call that hangs) exits anyway.
SHUTDOWN_MARGIN = 3.0


class Worker:
    def __init__(
        self,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        prefetch: int | None = None,
        burst: bool = False,
        shutdown_timeout: float = 30.0,
        poll_interval: float | None = None,
        lease_seconds: float | None = None,
        max_abandoned: int | None = None,
        install_signal_handlers: bool = True,
    ):
        self.queues = queues or None
        self.concurrency = concurrency
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        poll_interval = poll_interval if poll_interval is not None else conf.get("JOBS_POLL_INTERVAL")
        self.lease_seconds = lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS")
        self.heartbeat_interval = self.lease_seconds / 3
        if max_abandoned is None:
            max_abandoned = conf.get("JOBS_MAX_ABANDONED_THREADS")
        self.install_signal_handlers = install_signal_handlers

        self.worker_id: uuid.UUID | None = None
        self.exit_code = 0
        self.held: dict[int, Running] = {}  # every job claimed and not yet written back
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._signals: deque[int] = deque()
        self._next_heartbeat = 0.0
        self.slots = Slots(concurrency=concurrency, max_abandoned=concurrency if max_abandoned is None else max_abandoned,
                           wake=self._wake, stopping=self._stopping)
        self.producer = Producer(queues=self.queues, capacity=concurrency + (concurrency if prefetch is None else prefetch),
                                 poll_interval=poll_interval, lease_seconds=self.lease_seconds, wake=self._wake,
                                 stopping=self._stopping)
        self.completer = Completer(self.slots, self.held)
        self.maintainer = Maintainer()

    @property
    def processed(self) -> int:
        return self.completer.processed

    @property
    def failed(self) -> int:
        return self.completer.failed

    # --- lifecycle ---------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, in burst mode, until the queue is empty); return the exit code."""
        if self.install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        # Before the first claim: claims and completions must not get a generic plan.
        db.plan_every_run_in_this_process()
        self.register()
        self._sync_schedules()
        # The first flush of job events would otherwise import the channel
        # layer (a tenth of a second, holding the GIL) while jobs run.
        events.prepare()
        # Code and settings live as long as the process: keep full garbage
        # collections (20 ms with all of Django to walk) from pausing the loop.
        gc.freeze()
        self.slots.start()
        self.producer.listen()
        logger.info("worker started", extra={"event": "worker_start", "worker_id": str(self.worker_id),
                                               "queues": self.queues or "*", "concurrency": self.concurrency})
        failures = 0
        while not self._stopping.is_set():
            try:
                idle = self.tick()
                failures = 0
            except DB_ERRORS as exc:
                failures += 1
                self._reset_connection()
                delay = min(10.0, 0.25 * 2 ** min(failures, 6))
                logger.warning("database unavailable, retrying in %.1fs: %s", delay, exc,
                               extra={"event": "db_error", "worker_id": str(self.worker_id)})
                self._stopping.wait(delay)
                continue
            if idle and self.burst:
                break
            self._sleep()
        self._stopping.set()  # also after a burst: the listener and the slots watch it
        self._shutdown()
        self.producer.join()
        return self.exit_code

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _on_signal(self, signum, frame):
        # Only flags: a signal handler runs between any two bytecodes of the
        # main thread, which may be inside the logging module at the time.
        self._signals.append(signum)
        if self._stopping.is_set():
            # A second signal: stop waiting for running jobs.
            self.shutdown_timeout = 0
        else:
            # However the main thread is held up, the process ends.
            threading.Thread(target=self._exit_after_grace, name="skipjack-deadline", daemon=True).start()
        self.stop()

    def _exit_after_grace(self) -> None:
        # The margin covers the last write-back; only a hung database call outlasts it.
        time.sleep(self.shutdown_timeout + SHUTDOWN_MARGIN)
        logger.error("shutdown did not finish within its grace period; exiting now (leases will be rescued)")
        os._exit(1)

    def _log_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            logger.info("received %s, shutting down", signal.Signals(signum).name,
                        extra={"event": "worker_stopping", "worker_id": str(self.worker_id)})

    def register(self) -> None:
        delay = 0.5
        while True:
            try:
                worker = queue.register_worker(hostname=socket.gethostname(), pid=os.getpid(),
                                               queues=self.queues or [], concurrency=self.concurrency)
                # JOBS_QUEUES, for queues that have no controls yet: a change made at run time stays.
                queue.apply_queue_settings()
                break
            except DB_ERRORS as exc:
                logger.warning("cannot register worker, retrying in %.1fs: %s", delay, exc)
                self._reset_connection()
                time.sleep(delay)
                delay = min(delay * 2, 10)
        self.worker_id = worker.pk
        for part in (self.slots, self.producer, self.completer, self.maintainer.leadership):
            part.worker_id = worker.pk

    def _sync_schedules(self) -> None:
        """Bring the schedules that code and settings declare into the database (jobs.queue.sync_declared)."""
        try:
            queue.sync_declared()
        except DB_ERRORS as exc:
            # The schedules already stored fire all the same; the next worker to start syncs.
            logger.warning("could not sync the declared schedules: %s", exc, extra={"event": "db_error"})
            self._reset_connection()

    def _registered_id(self) -> uuid.UUID:
        if self.worker_id is None:
            raise RuntimeError("The worker is not registered yet.")
        return self.worker_id

    def _reset_connection(self) -> None:
        try:
            connection.close()
        except Exception:  # the connection is already broken; dropping it is all we want
            logger.debug("closing a broken connection failed", exc_info=True)

    # --- the main loop -----------------------------------------------------

    def tick(self) -> bool:
        """Do one round of work; return True when there was nothing to do."""
        now = time.monotonic()
        self.slots.enforce_timeouts(self.held.values(), now)
        try:
            wrote = self.completer.write_back()
            self.completer.store_starts(now)
        except DB_ERRORS as exc:
            # Retried next round. If the database itself is gone, the
            # heartbeat below fails too, and the loop backs off.
            logger.warning("could not write back finished jobs, retrying: %s", exc,
                           extra={"event": "db_error", "worker_id": str(self.worker_id)})
            self._reset_connection()
            wrote = True
        if now >= self._next_heartbeat or self.producer.cancel_notified.is_set():
            # Also at once when a cancel was asked for: the heartbeat reads which held jobs it names.
            self.producer.cancel_notified.clear()
            self.slots.check()
            self.heartbeat()
            self._next_heartbeat = now + self.heartbeat_interval
        if self._too_many_abandoned():
            return False
        if self.producer.refresh_flow(now) and self.producer.flow.paused:
            self._withdraw(self.producer.flow.paused)
        if wrote:
            self.producer.limited_room()
        claimed = rescued = maintained = False
        poll_due = now >= self.producer.next_poll
        if self.producer.wants(len(self.held), now):
            waiting = sum(1 for r in self.held.values() if r.started is None and not r.abandoned)
            for job in self.producer.claim(held=len(self.held), starting=self.slots.idle() - waiting, now=now):
                handler = self._handler(job.type)
                running = Running(job=job, context=self._context(job), timeout=self._timeout(job, handler),
                                  handler=handler)
                self.held[job.id] = running
                self.slots.hand(running)
                claimed = True
            if poll_due:
                # After the claim, so that maintenance (a few ms, more with a
                # counters roll-up) never delays the pickup of a waiting job.
                # What a rescue makes ready again is claimed next round.
                rescued = self.maintainer.run(now)
                maintained = True
                self.producer.more_likely = self.producer.more_likely or rescued
                self.producer.next_poll = now + self.producer.poll_interval
        if not maintained and now >= self.maintainer.schedules_due_at:
            # A schedule's tick is due between rounds: fired at its time, not at the next poll.
            rescued = self.maintainer.fire_schedules(now)
            self.producer.more_likely = self.producer.more_likely or rescued
        idle = not claimed and not rescued and not wrote and not self.held and not self.completer.pending()
        if idle and self.burst and not self.producer.swept:
            # Burst mode stops on an empty queue: make sure with a claim from the start.
            self.producer.sweep_now(now)
            return False
        return idle

    def _sleep(self) -> None:
        if self.slots.done or (self.producer.more_likely and len(self.held) < self.producer.capacity):
            return
        now = time.monotonic()
        wake_at = min(self.producer.next_poll, self.producer.next_flow, self.producer.next_wake(), self._next_heartbeat,
                      self.maintainer.schedules_due_at, *self._deadlines())
        self._wake.wait(max(0.0, wake_at - now))
        self._wake.clear()

    def _deadlines(self):
        yield from (r.started + r.timeout for r in self.held.values() if r.started is not None and not r.abandoned)
        yield from (r.cancel_deadline for r in self.held.values() if r.cancel_deadline is not None and not r.abandoned)
        start_due = self.completer.next_start_due()
        if start_due is not None:
            yield start_due

    def _too_many_abandoned(self) -> bool:
        """Return True, and start a restart, once too many handlers ignore that they were given up on."""
        still = self.slots.still_abandoned()
        if still <= self.slots.max_abandoned:
            return False
        logger.error(
            "%d handlers are still running jobs this worker gave up on (the limit is %d); "
            "restarting the worker process to free their threads", still, self.slots.max_abandoned,
            extra={"event": "worker_restart", "worker_id": str(self.worker_id)},
        )
        self.exit_code = RESTART
        self.stop()
        return True

    def _context(self, job: queue.ClaimedJob) -> JobContext:
        last = {"percent": -1, "at": 0.0}

        def report_progress(percent: int) -> None:
            # Throttled: a handler may report on every loop iteration.
            now = time.monotonic()
            if percent != last["percent"] and (percent == 100 or now - last["at"] >= 0.2):
                last.update(percent=percent, at=now)
                queue.set_progress(job, percent)

        return JobContext(job_id=job.id, type=job.type, payload=job.payload, attempt=job.attempts,
                          trace_id=job.trace_id, queue=job.queue, report_progress=report_progress)

    @staticmethod
    def _handler(type_name: str) -> Handler | None:
        try:
            return handler_for(type_name)  # a registered type's, or a Django task's
        except UnknownJobType:  # the executor fails it for good, saying so
            return None

    @staticmethod
    def _timeout(job: queue.ClaimedJob, handler: Handler | None) -> float:
        if job.timeout:
            return job.timeout
        return (handler.timeout if handler is not None else None) or conf.get("JOBS_DEFAULT_TIMEOUT")

    def heartbeat(self) -> None:
        # Every held job is waiting for a slot, run by a live slot, or
        # finished and waiting to be written back: nothing else is renewed.
        held = [r for r in self.held.values() if not r.abandoned]
        still_ours = queue.heartbeat(
            self._registered_id(), busy=self.slots.busy(), processed=self.processed, failed=self.failed,
            held=[r.job for r in held], lease_seconds=self.lease_seconds,
        )
        now = time.monotonic()
        for running in held:
            if running.job.id not in still_ours:
                # Cancelled before it started, or rescued by another worker after we stalled.
                log_job(logging.WARNING, "lease_lost", running.job, self.worker_id)
                self.slots.abandon(running)
                self.held.pop(running.job.id, None)
            elif still_ours[running.job.id] and running.cancel_deadline is None:
                log_job(logging.INFO, "cancel_requested", running.job, self.worker_id)
                self.slots.cancel(running, now + conf.get("JOBS_CANCEL_GRACE"))

    # --- shutdown -------------------------------------------------------------

    def _shutdown(self) -> None:
        self._log_signals()
        deadline = time.monotonic() + self.shutdown_timeout
        unstarted = self.slots.take_back()
        self._release(unstarted)
        # Let running jobs finish within the grace period, writing back as they do.
        still_running = self._running()
        if still_running and self.shutdown_timeout > 0:
            names = ", ".join(f"{r.job.type}#{r.job.id}" for r in still_running[:10])
            more = f" and {len(still_running) - 10} more" if len(still_running) > 10 else ""
            logger.warning(
                "waiting up to %gs for %d running job(s) to finish: %s%s (send the signal again to stop now)",
                self.shutdown_timeout, len(still_running), names, more,
                extra={"event": "worker_draining", "worker_id": str(self.worker_id)},
            )
        while self._running() and time.monotonic() < deadline and self.shutdown_timeout > 0:
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
            self._log_signals()
            deadline = min(deadline, time.monotonic() + self.shutdown_timeout)
            self._safely(lambda: self.slots.enforce_timeouts(self.held.values(), time.monotonic()))
            self._safely(self.completer.write_back)
            self._safely(lambda: self.completer.store_starts(time.monotonic()))
            if time.monotonic() >= self._next_heartbeat:
                self._safely(self.heartbeat)
                self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        # What still runs had its attempt: it counts, and the job is retried
        # (or is dead, if that was its last attempt) like any failure.
        now = time.monotonic()
        for running in self._running():
            self.slots.give_up(running, Outcome(running=running, ok=False, kind="interrupted",
                                                error="Interrupted: the worker shut down before the handler finished.",
                                                duration=now - (running.started or now)))
        self._safely(self.completer.write_back)
        self.slots.stop()
        self._safely(self.maintainer.release)
        self._safely(lambda: queue.stop_worker(self._registered_id(), processed=self.processed, failed=self.failed))
        logger.info("worker stopped", extra={"event": "worker_stop", "worker_id": str(self.worker_id),
                                               "processed": self.processed, "released": len(unstarted)})

    def _withdraw(self, paused: frozenset[str]) -> None:
        """Give back the held jobs of paused queues that no slot started: they wait for the resume."""
        self._release(self.slots.withdraw(list(self.held.values()), paused))

    def _running(self) -> list[Running]:
        """Return the held jobs whose handler runs now."""
        return [r for r in self.held.values() if r.started is not None and not r.abandoned and not r.finished]

    def _release(self, unstarted: list[Running]) -> None:
        if not unstarted:
            return
        for attempt in range(5):
            try:
                queue.release_jobs([r.job for r in unstarted])
                break
            except DB_ERRORS as exc:
                # Unreleased jobs are not lost: their leases expire and another worker rescues them.
                logger.warning("could not release %d jobs: %s", len(unstarted), exc)
                self._reset_connection()
                time.sleep(0.2 * 2**attempt)
        for running in unstarted:
            self.held.pop(running.job.id, None)

    def _safely(self, func) -> None:
        try:
            func()
        except DB_ERRORS as exc:
            logger.warning("database error during shutdown: %s", exc)
            self._reset_connection()


def restart_process() -> None:
    """Replace this process with a fresh run of the same command (same pid, new interpreter)."""
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.argv])  # noqa: S606 - this same program again, no shell

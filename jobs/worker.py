"""The `runworker` loop: claim, run, report.

One process runs one Worker: a main thread that talks to the database and
`concurrency` slot threads that run handlers. The main thread

  1. claims ready jobs in batches (one SKIP LOCKED statement each) and hands
     them to the slots through a local queue;
  2. writes finished jobs back in batches (one UPDATE for all successes);
  3. renews the leases of its running jobs and its heartbeat, rescues
     jobs whose worker died, and enforces per-job timeouts;
  4. sleeps until a slot finishes, a NOTIFY says new jobs arrived, or the
     poll interval passes.

Handlers never run inside a transaction, and no database error, bad job or
misbehaving handler ends the loop. Only SIGTERM/SIGINT do, after the
running jobs finish or are released within the shutdown grace period.
"""

import ctypes
import gc
import json
import logging
import os
import queue as local_queue
import signal
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections

from jobs import conf, counters, db, events, queue, tracing
from jobs.errors import JobTimeout, PayloadError, PermanentError, UnknownJobType
from jobs.registry import JobContext, get_handler, validate_payload

logger = logging.getLogger("jobs.worker")

DB_ERRORS = (OperationalError, InterfaceError, DatabaseError, psycopg.Error)


@dataclass(eq=False)
class Running:
    """A claimed job while this process holds it."""

    job: queue.ClaimedJob
    context: JobContext
    timeout: float
    started: float | None = None  # time.monotonic() when a slot picked it up
    thread: threading.Thread | None = None
    # Set once the main thread gave up on it (timeout, lost lease, shutdown):
    # whatever the slot reports afterwards is dropped.
    abandoned: bool = False


@dataclass
class Outcome:
    running: Running
    ok: bool
    result: object = None
    error: str = ""
    traceback: str = ""
    permanent: bool = False
    duration: float = 0.0


@dataclass
class Slot:
    thread: threading.Thread
    retired: threading.Event = field(default_factory=threading.Event)


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise `exc_type` inside `thread` at its next Python instruction.

    A thread cannot be killed; this is how a timed-out handler is stopped
    when it does not check its stop event. A handler blocked in C code is
    interrupted when that call returns; its slot is replaced meanwhile.
    """
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


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
        install_signal_handlers: bool = True,
    ):
        self.queues = queues or None
        self.concurrency = concurrency
        self.capacity = concurrency + (concurrency if prefetch is None else prefetch)
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval if poll_interval is not None else conf.get("JOBS_POLL_INTERVAL")
        self.lease_seconds = lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS")
        self.heartbeat_interval = self.lease_seconds / 3
        self.install_signal_handlers = install_signal_handlers

        self.worker_id = None
        self.processed = 0
        self.failed = 0
        self._held: dict[int, Running] = {}  # every job claimed and not yet written back
        self._todo: local_queue.SimpleQueue = local_queue.SimpleQueue()
        self._done: deque[Outcome] = deque()
        self._unwritten: list[Outcome] = []  # outcomes whose write failed; retried
        self._slots: list[Slot] = []
        self._wake = threading.Event()
        self._notified = threading.Event()
        self._stopping = threading.Event()
        self._more_likely = True
        self._front = queue.ClaimFront(self.poll_interval)
        self._swept = False
        self._next_poll = 0.0
        self._next_heartbeat = 0.0
        self._next_prune = 0.0
        self._next_roll_up = 0.0

    # --- lifecycle ---------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, in burst mode, until the queue is empty); return the exit code."""
        if self.install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        # Before the first claim: claims and completions must not get a generic plan.
        db.plan_every_run_in_this_process()
        self._register()
        # The first flush of job events would otherwise import the channel
        # layer (a tenth of a second, holding the GIL) while jobs run.
        events.prepare()
        # Code and settings live as long as the process: keep full garbage
        # collections (20 ms with all of Django to walk) from pausing the loop.
        gc.freeze()
        for _ in range(self.concurrency):
            self._start_slot()
        listener = threading.Thread(target=self._listen, name="skipjack-listen", daemon=True)
        listener.start()
        logger.info("worker started", extra={"event": "worker_start", "worker_id": str(self.worker_id),
                                               "queues": self.queues or "*", "concurrency": self.concurrency})
        failures = 0
        while not self._stopping.is_set():
            try:
                idle = self._tick()
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
        self._shutdown()
        return 0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _on_signal(self, signum, frame):
        if self._stopping.is_set():
            # A second signal: stop waiting for running jobs.
            self.shutdown_timeout = 0
        logger.info("received %s, shutting down", signal.Signals(signum).name,
                    extra={"event": "worker_stopping", "worker_id": str(self.worker_id)})
        self.stop()

    def _register(self) -> None:
        delay = 0.5
        while True:
            try:
                worker = queue.register_worker(
                    hostname=socket.gethostname(), pid=os.getpid(), queues=self.queues or [], concurrency=self.concurrency
                )
                self.worker_id = worker.pk
                return
            except DB_ERRORS as exc:
                logger.warning("cannot register worker, retrying in %.1fs: %s", delay, exc)
                self._reset_connection()
                time.sleep(delay)
                delay = min(delay * 2, 10)

    def _reset_connection(self) -> None:
        try:
            connection.close()
        except Exception:  # the connection is already broken; dropping it is all we want
            logger.debug("closing a broken connection failed", exc_info=True)

    # --- the main loop -----------------------------------------------------

    def _tick(self) -> bool:
        """Do one round of work; return True when there was nothing to do."""
        now = time.monotonic()
        wrote = self._write_back()
        self._enforce_timeouts(now)
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + self.heartbeat_interval
        claimed = 0
        rescued = False
        free = self.capacity - len(self._held)
        poll_due = now >= self._next_poll
        if free > 0 and (self._more_likely or self._notified.is_set() or poll_due):
            self._notified.clear()
            claimed = self._claim(free, now)
            self._more_likely = claimed == free
            if poll_due:
                # After the claim, so that maintenance (a few ms, more with a
                # counters roll-up) never delays the pickup of a waiting job.
                # What a rescue makes ready again is claimed next round.
                rescued = self._maintain(now)
                self._more_likely = self._more_likely or rescued
                self._next_poll = now + self.poll_interval
        idle = not claimed and not rescued and not wrote and not self._held and not self._unwritten
        if idle and self.burst and not self._swept:
            # Burst mode stops on an empty queue: make sure with a claim from the start.
            self._front.next_sweep = now
            self._more_likely = True
            return False
        return idle

    def _sleep(self) -> None:
        if self._done or (self._more_likely and len(self._held) < self.capacity):
            return
        now = time.monotonic()
        wake_at = min(self._next_poll, self._next_heartbeat, *self._deadlines())
        self._wake.wait(max(0.0, wake_at - now))
        self._wake.clear()

    def _deadlines(self):
        return (r.started + r.timeout for r in self._held.values() if r.started is not None and not r.abandoned)

    def _claim(self, limit: int, now: float) -> int:
        start = self._front.start(now)
        jobs = queue.claim_jobs(
            worker_id=self.worker_id, limit=limit, queues=self.queues, lease_seconds=self.lease_seconds, start=start
        )
        self._swept = start is None
        self._front.claimed(jobs, swept=self._swept, now=now)
        for job in jobs:
            running = Running(job=job, context=self._context(job), timeout=self._timeout(job))
            self._held[job.id] = running
            self._todo.put(running)
        return len(jobs)

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

    def _timeout(self, job: queue.ClaimedJob) -> float:
        if job.timeout:
            return job.timeout
        try:
            handler_timeout = get_handler(job.type).timeout
        except UnknownJobType:
            handler_timeout = None
        return handler_timeout or conf.get("JOBS_DEFAULT_TIMEOUT")

    def _write_back(self) -> bool:
        """Write finished jobs to the database; return True if there were any.

        Outcomes whose write fails stay queued for the next round. Every
        write carries the lease token, so one that landed just before the
        error cannot be applied twice.
        """
        while self._done:
            outcome = self._done.popleft()
            if not outcome.running.abandoned:
                self._unwritten.append(outcome)
        if not self._unwritten:
            return False
        pending, self._unwritten = self._unwritten, []
        successes = [o for o in pending if o.ok]
        failures = [o for o in pending if not o.ok]
        try:
            completed = queue.complete_jobs(
                [(o.running.job.id, o.running.job.lease_token, o.result, o.duration) for o in successes]
            )
        except DB_ERRORS:
            self._unwritten = pending
            raise
        for o in successes:
            self._forget(o.running)
            if o.running.job.id in completed:
                self.processed += 1
                self._log(logging.INFO, "finish", o.running.job, duration=o.duration)
            else:
                self._log(logging.WARNING, "lease_lost", o.running.job, duration=o.duration)
        for index, o in enumerate(failures):
            try:
                status = queue.fail_job(o.running.job, error=o.error, traceback=o.traceback, permanent=o.permanent,
                                        run_seconds=o.duration)
            except DB_ERRORS:
                self._unwritten = failures[index:]
                raise
            self._forget(o.running)
            self._count_failure(o.running.job, status, error=o.error, duration=o.duration)
        return True

    def _count_failure(self, job: queue.ClaimedJob, status: str | None, *, error: str, duration: float) -> None:
        self.failed += 1
        self.processed += 1
        self._log(logging.WARNING, "fail", job, duration=duration, error=error)
        if status is None:
            self._log(logging.WARNING, "lease_lost", job)
        else:
            self._log(logging.WARNING if status == "dead" else logging.INFO, "retry" if status == "retrying" else "dead", job)

    def _forget(self, running: Running) -> None:
        self._held.pop(running.job.id, None)

    def _enforce_timeouts(self, now: float) -> None:
        for running in list(self._held.values()):
            if running.started is None or running.abandoned or now < running.started + running.timeout:
                continue
            self._abandon(running)
            error = f"Timed out after {running.timeout:g}s"
            status = queue.fail_job(running.job, error=error, outcome="timeout", run_seconds=now - running.started)
            self._forget(running)
            self._count_failure(running.job, status, error=error, duration=now - running.started)

    def _abandon(self, running: Running) -> None:
        """Give up on a started job: stop its handler and free its slot at once."""
        running.abandoned = True
        running.context.stop_requested.set()
        thread = running.thread
        if thread is not None and thread.is_alive():
            _raise_in_thread(thread, JobTimeout)
            for slot in self._slots:
                if slot.thread is thread:
                    slot.retired.set()
                    self._slots.remove(slot)
                    if not self._stopping.is_set():
                        self._start_slot()
                    break

    def _heartbeat(self) -> None:
        started = [r for r in self._held.values() if not r.abandoned]
        still_ours = queue.heartbeat(
            self.worker_id, busy=sum(1 for r in started if r.started is not None), processed=self.processed,
            failed=self.failed, running=[r.job for r in started], lease_seconds=self.lease_seconds,
        )
        for running in started:
            if running.job.id not in still_ours:
                # Cancelled, or rescued by another worker after we stalled.
                self._log(logging.WARNING, "lease_lost", running.job)
                self._abandon(running)
                self._forget(running)

    def _maintain(self, now: float) -> bool:
        """Rescue expired leases, expire jobs, roll up counters, prune; return True if any job was rescued."""
        rescued = queue.rescue_expired_leases()
        for job in rescued:
            self._log(logging.WARNING, "rescued", job, error=f"lease expired; the job is now {job.status}")
        queue.expire_jobs()
        if now >= self._next_roll_up:
            # Keeps the metric counters' table small; any one worker's roll-up is enough.
            self._next_roll_up = now + 15
            counters.roll_up()
        if now >= self._next_prune:
            # Back next round while there is a backlog to prune, else in a minute.
            more = queue.prune_finished() >= queue.PRUNE_BATCH
            self._next_prune = now if more else now + 60
            queue.prune_workers()
        return bool(rescued)

    # --- slots ---------------------------------------------------------------

    def _start_slot(self) -> None:
        slot = Slot(thread=threading.Thread(target=self._slot_loop, daemon=True))
        slot.thread._skipjack_slot = slot  # the loop finds its retire flag here
        slot.thread.name = f"skipjack-slot-{len(self._slots)}"
        self._slots.append(slot)
        slot.thread.start()

    def _slot_loop(self) -> None:
        slot = threading.current_thread()._skipjack_slot
        while not slot.retired.is_set():
            running = self._todo.get()
            if running is None:
                return
            if running.abandoned:
                continue
            try:
                job = running.job
                # The handler's own log lines, and any job it enqueues, carry this job's trace id.
                with tracing.bound(trace_id=job.trace_id, job_id=job.id, type=job.type, queue=job.queue,
                                   attempt=job.attempts, user_id=job.owner_id, worker_id=str(self.worker_id)):
                    outcome = self._execute(running)
            except JobTimeout:
                # Delivered asynchronously after the handler returned; the
                # main thread already gave up on this job.
                continue
            self._done.append(outcome)
            self._wake.set()
            if connection.connection is not None:
                # The handler used the ORM: hand the connection back to the pool.
                connections.close_all()

    def _execute(self, running: Running) -> Outcome:
        running.thread = threading.current_thread()
        running.started = time.monotonic()
        job = running.job
        self._log(logging.INFO, "start", job)
        try:
            handler = get_handler(job.type)
            running.context.payload = validate_payload(job.type, job.payload)
            result = handler.func(running.context)
        except UnknownJobType as exc:
            return self._failure(running, exc, permanent=True)
        except PayloadError as exc:
            return self._failure(running, exc, permanent=True, prefix="Invalid payload: ")
        except PermanentError as exc:
            return self._failure(running, exc, permanent=True)
        except JobTimeout as exc:
            if running.abandoned:
                raise
            return self._failure(running, exc)
        except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not end the worker
            return self._failure(running, exc)
        try:
            # Checked here, so one job's result cannot fail the batched write of the others.
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return self._failure(running, exc, permanent=True, prefix="Result is not JSON: ")
        return Outcome(running=running, ok=True, result=result, duration=time.monotonic() - running.started)

    def _failure(self, running: Running, exc: BaseException, *, permanent=False, prefix="") -> Outcome:
        return Outcome(
            running=running, ok=False, error=f"{prefix}{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(), permanent=permanent, duration=time.monotonic() - running.started,
        )

    # --- LISTEN/NOTIFY -------------------------------------------------------

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
                            if self.queues is None or note.payload in self.queues:
                                self._notified.set()
                                self._wake.set()
            except psycopg.Error as exc:
                logger.debug("listener lost its connection: %s", exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 10)

    # --- shutdown -------------------------------------------------------------

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        unstarted = self._drain_todo()
        self._release(unstarted)
        # Let running jobs finish within the grace period, writing back as they do.
        while self._running() and time.monotonic() < deadline:
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
            self._safely(self._write_back)
            if time.monotonic() >= self._next_heartbeat:
                self._safely(self._heartbeat)
                self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        unfinished = self._running()
        for running in unfinished:
            self._abandon(running)
        self._safely(self._write_back)
        self._release(unfinished)
        for slot in self._slots:
            slot.retired.set()
        for _ in self._slots:
            self._todo.put(None)
        self._safely(lambda: queue.stop_worker(self.worker_id, processed=self.processed, failed=self.failed))
        logger.info("worker stopped", extra={"event": "worker_stop", "worker_id": str(self.worker_id),
                                               "processed": self.processed, "released": len(unstarted) + len(unfinished)})

    def _running(self) -> list[Running]:
        return [r for r in self._held.values() if not r.abandoned]

    def _drain_todo(self) -> list[Running]:
        drained = []
        while True:
            try:
                running = self._todo.get_nowait()
            except local_queue.Empty:
                return drained
            if running is not None:
                running.abandoned = True
                drained.append(running)

    def _release(self, held: list[Running]) -> None:
        if not held:
            return
        for attempt in range(5):
            try:
                queue.release_jobs([r.job for r in held])
                break
            except DB_ERRORS as exc:
                # Unreleased jobs are not lost: their leases expire and another worker rescues them.
                logger.warning("could not release %d jobs: %s", len(held), exc)
                self._reset_connection()
                time.sleep(0.2 * 2**attempt)
        for running in held:
            self._forget(running)

    def _safely(self, func) -> None:
        try:
            func()
        except DB_ERRORS as exc:
            logger.warning("database error during shutdown: %s", exc)
            self._reset_connection()

    # --- logging ----------------------------------------------------------------

    def _log(self, level: int, event: str, job: queue.ClaimedJob, duration: float | None = None, error: str = "") -> None:
        if not logger.isEnabledFor(level):
            return
        extra = {
            "event": event, "job_id": job.id, "type": job.type, "queue": job.queue, "attempt": job.attempts,
            "trace_id": job.trace_id, "user_id": job.owner_id, "worker_id": str(self.worker_id),
        }
        if duration is not None:
            extra["duration_ms"] = round(duration * 1000, 3)
        message = f"{event} {job.type}#{job.id} attempt {job.attempts}"
        if error:
            extra["error"] = error
            message += f": {error}"
        logger.log(level, message, extra=extra)

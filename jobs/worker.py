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

A handler is never interrupted from outside. A thread cannot be killed, and
an exception raised into it lands wherever the thread happens to be: in the
next job's code, in the slot's own bookkeeping, or inside the logging
module's lock, which then stays held for good. So a job given up on (a
timeout, a cancel, a lease lost while the worker stalled) is abandoned
instead: its stop event is set for handlers that look at it, whatever it
reports afterwards is dropped, and its slot thread is retired and replaced
at once, so the worker keeps its concurrency. A retired thread exits when
its handler returns. If more than `max_abandoned` of them are still running,
the worker stops claiming, shuts down gracefully and starts itself afresh
(RESTART), which is the only way to end a handler stuck for good.
"""

import gc
import logging
import os
import queue as local_queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import psycopg
from django.db import DatabaseError, DataError, InterfaceError, OperationalError, connection, connections

from jobs import conf, counters, db, events, queue, tracing
from jobs.leader import Leadership
from jobs.errors import PayloadError, PermanentError, UnknownJobType
from jobs.registry import JobContext, get_handler, validate_payload
from jobs.storable import storable_json, storable_text

logger = logging.getLogger("jobs.worker")

DB_ERRORS = (OperationalError, InterfaceError, DatabaseError, psycopg.Error)
# The connection is gone: any write may work again once it is back.
CONNECTION_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
# The database refused a value (an encoding, a size): the same write will fail again.
DATA_ERRORS = (DataError, psycopg.DataError)
UNSTORABLE_ERROR = "The error could not be stored: "

# Exit code of a worker that must be replaced by a fresh process; runworker
# re-executes itself on it.
RESTART = 75
# Longest error message stored; the traceback keeps its last TRACEBACK_CHARS.
ERROR_CHARS = 10_000
TRACEBACK_CHARS = 20_000
# Writes of one outcome that the database refused (other than for a lost
# connection) before the worker gives it up; the job's lease then runs out
# and it is rescued.
MAX_WRITE_ATTEMPTS = 5
# Seconds past the shutdown grace period after which a worker that has not
# finished stopping (a database call that hangs) exits anyway.
SHUTDOWN_MARGIN = 3.0


@dataclass(eq=False)
class Running:
    """A claimed job while this process holds it."""

    job: queue.ClaimedJob
    context: JobContext
    timeout: float
    started: float | None = None  # time.monotonic() when a slot picked it up
    slot: "Slot | None" = None
    # Set by its slot, under the worker's lock, once its outcome is in _done.
    finished: bool = False
    # Set once the main thread gave up on it (timeout, lost lease, shutdown):
    # whatever the slot reports afterwards is dropped.
    abandoned: bool = False


@dataclass(eq=False)
class Outcome:
    """A finished attempt, waiting to be written back."""

    running: Running
    ok: bool
    result: object = None
    error: str = ""
    traceback: str = ""
    permanent: bool = False
    duration: float = 0.0
    # How the attempt ended, as stored in the job's history.
    kind: str = "failed"
    write_attempts: int = 0


@dataclass(eq=False)
class Slot:
    thread: threading.Thread | None = None
    current: Running | None = None  # what its handler runs now
    # Set when its job was abandoned: the thread exits once the handler returns.
    retired: bool = False


def _describe(exc: BaseException, prefix: str = "") -> str:
    """Return "Type: message" for `exc`, even when its message cannot be read."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__ must not fail the failure
        message = "(the exception's message could not be read)"
    return storable_text(f"{prefix}{type(exc).__name__}: {message[:2 * ERROR_CHARS]}")[:ERROR_CHARS]


def _format_traceback() -> str:
    try:
        # Hidden before the final cut, so that no URL loses its scheme to the cut and keeps its password.
        return storable_text(traceback.format_exc()[-2 * TRACEBACK_CHARS:])[-TRACEBACK_CHARS:]
    except Exception:  # noqa: BLE001
        return ""


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
        self.capacity = concurrency + (concurrency if prefetch is None else prefetch)
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval if poll_interval is not None else conf.get("JOBS_POLL_INTERVAL")
        self.lease_seconds = lease_seconds if lease_seconds is not None else conf.get("JOBS_LEASE_SECONDS")
        self.heartbeat_interval = self.lease_seconds / 3
        if max_abandoned is None:
            max_abandoned = conf.get("JOBS_MAX_ABANDONED_THREADS")
        self.max_abandoned = concurrency if max_abandoned is None else max_abandoned
        self.install_signal_handlers = install_signal_handlers

        self.worker_id = None
        self.processed = 0
        self.failed = 0
        self.exit_code = 0
        self._held: dict[int, Running] = {}  # every job claimed and not yet written back
        self._todo: local_queue.SimpleQueue = local_queue.SimpleQueue()
        self._done: deque[Outcome] = deque()
        self._unwritten: list[Outcome] = []  # outcomes whose write failed; retried
        self._slots: list[Slot] = []
        self._abandoned: list[threading.Thread] = []  # retired slot threads whose handler still runs
        # Taken by a slot to start or finish a job and by the main thread to
        # give up on one, so the two never disagree on who reports it.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._notified = threading.Event()
        self._stopping = threading.Event()
        self._signals: deque[int] = deque()
        self._more_likely = True
        self._front = queue.ClaimFront(self.poll_interval)
        self._swept = False
        self._next_poll = 0.0
        self._next_heartbeat = 0.0
        self._next_prune = 0.0
        self._next_roll_up = 0.0
        self._leadership = Leadership()  # for this worker's id, once registered

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
        self._stopping.set()  # also after a burst: the listener and the slots watch it
        self._shutdown()
        listener.join(timeout=2)  # it notices the stop within a second and closes its connection
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

    def _register(self) -> None:
        delay = 0.5
        while True:
            try:
                worker = queue.register_worker(
                    hostname=socket.gethostname(), pid=os.getpid(), queues=self.queues or [], concurrency=self.concurrency
                )
                self.worker_id = self._leadership.worker_id = worker.pk
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
        self._enforce_timeouts(now)
        try:
            wrote = self._write_back()
        except DB_ERRORS as exc:
            # Retried next round. If the database itself is gone, the
            # heartbeat below fails too, and the loop backs off.
            logger.warning("could not write back finished jobs, retrying: %s", exc,
                           extra={"event": "db_error", "worker_id": str(self.worker_id)})
            self._reset_connection()
            wrote = True
        if now >= self._next_heartbeat:
            self._check_slots()
            self._heartbeat()
            self._next_heartbeat = now + self.heartbeat_interval
        if self._too_many_abandoned():
            return False
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

    def _too_many_abandoned(self) -> bool:
        """Return True, and start a restart, once too many handlers ignore that they were given up on."""
        self._abandoned = [thread for thread in self._abandoned if thread.is_alive()]
        if len(self._abandoned) <= self.max_abandoned:
            return False
        logger.error(
            "%d handlers are still running jobs this worker gave up on (the limit is %d); "
            "restarting the worker process to free their threads", len(self._abandoned), self.max_abandoned,
            extra={"event": "worker_restart", "worker_id": str(self.worker_id)},
        )
        self.exit_code = RESTART
        self.stop()
        return True

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

    # --- writing outcomes back ----------------------------------------------

    def _write_back(self) -> bool:
        """Write finished jobs to the database; return True if there were any.

        Successes go in one statement. A batch the database refuses is
        written one outcome at a time, so a value it cannot store fails only
        its own job, and an outcome refused for another reason is tried again
        next round, up to MAX_WRITE_ATTEMPTS times. On a lost connection
        everything unwritten waits for the next round. Every write carries
        the lease token, so one that landed just before an error cannot be
        applied twice.
        """
        while self._done:
            self._unwritten.append(self._done.popleft())
        if not self._unwritten:
            return False
        pending, self._unwritten = self._unwritten, []
        try:
            for batch in ([o for o in pending if o.ok], [o for o in pending if not o.ok]):
                if not batch:
                    continue
                try:
                    self._write(batch)
                except CONNECTION_ERRORS:
                    raise
                except DB_ERRORS:
                    # One value the database refuses would fail the batch every time: write each alone.
                    for outcome in batch:
                        self._write_alone(outcome)
        except CONNECTION_ERRORS:
            deferred = {id(o) for o in self._unwritten}
            self._unwritten += [o for o in pending if o.running.job.id in self._held and id(o) not in deferred]
            raise
        return True

    @staticmethod
    def _completion(outcome: Outcome) -> tuple:
        return (outcome.running.job.id, outcome.running.job.lease_token, outcome.result, outcome.duration)

    def _write(self, batch: list[Outcome]) -> None:
        """Write outcomes that are all successes, or all failures, in one statement."""
        if batch[0].ok:
            self._completed(batch, queue.complete_jobs([self._completion(o) for o in batch]))
        else:
            self._failed(batch, queue.fail_jobs([self._failure_of(o) for o in batch]))

    def _write_alone(self, outcome: Outcome) -> None:
        try:
            self._write([outcome])
        except CONNECTION_ERRORS:
            raise
        except DATA_ERRORS as exc:
            if outcome.ok:
                # The same result would come back: the job fails for good, saying why.
                outcome.ok, outcome.result, outcome.permanent = False, None, True
                outcome.error = _describe(exc, prefix="Result could not be stored: ")
                self._write_alone(outcome)
            elif not outcome.error.startswith(UNSTORABLE_ERROR):
                outcome.error, outcome.traceback = _describe(exc, prefix=UNSTORABLE_ERROR), ""
                self._write_alone(outcome)
            else:
                self._write_later(outcome, exc)
        except DB_ERRORS as exc:
            self._write_later(outcome, exc)

    def _write_later(self, outcome: Outcome, exc: BaseException) -> None:
        outcome.write_attempts += 1
        if outcome.write_attempts < MAX_WRITE_ATTEMPTS:
            self._unwritten.append(outcome)
            return
        # Given up: its lease is no longer renewed, and the rescue retries the job.
        self._log(logging.ERROR, "write_failed", outcome.running.job,
                  error=f"its outcome could not be written {outcome.write_attempts} times: {_describe(exc)}")
        self._forget(outcome.running)

    @staticmethod
    def _failure_of(outcome: Outcome) -> queue.Failure:
        return queue.Failure(outcome.running.job, outcome.error, outcome.traceback, outcome.permanent, outcome.kind,
                             outcome.duration)

    def _failed(self, failures: list[Outcome], statuses: dict[int, str]) -> None:
        for outcome in failures:
            self._forget(outcome.running)
            job = outcome.running.job
            self._count_failure(job, statuses.get(job.id), error=outcome.error, duration=outcome.duration)

    def _completed(self, successes: list[Outcome], completed: set[int]) -> None:
        for outcome in successes:
            self._forget(outcome.running)
            if outcome.running.job.id in completed:
                self.processed += 1
                self._log(logging.INFO, "finish", outcome.running.job, duration=outcome.duration)
            else:
                self._log(logging.WARNING, "lease_lost", outcome.running.job, duration=outcome.duration)

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

    # --- giving up on jobs -----------------------------------------------------

    def _enforce_timeouts(self, now: float) -> None:
        for running in list(self._held.values()):
            if running.started is None or running.abandoned or now < running.started + running.timeout:
                continue
            if self._abandon(running):
                self._done.append(Outcome(running=running, ok=False, error=f"Timed out after {running.timeout:g}s",
                                          kind="timeout", duration=now - running.started))

    def _abandon(self, running: Running) -> bool:
        """Give up on a job: drop whatever it reports from now on, and free its slot at once.

        Return False if its slot had reported it already (its outcome stands).
        Nothing is raised into the handler's thread: the handler sees its
        stop event, and its thread exits when the handler returns.
        """
        with self._lock:
            if running.finished or running.abandoned:
                return False
            running.abandoned = True
            slot = running.slot if running.slot is not None and running.slot.current is running else None
            if slot is not None:
                slot.retired = True
        running.context.stop_requested.set()
        if slot is not None:
            self._slots.remove(slot)
            self._abandoned.append(slot.thread)
            if not self._stopping.is_set():
                self._start_slot()
        return True

    def _check_slots(self) -> None:
        """Replace a slot thread that died, and fail the job it was running."""
        for slot in [s for s in self._slots if not s.thread.is_alive()]:
            logger.error("slot thread %s died; starting a new one", slot.thread.name,
                         extra={"event": "slot_died", "worker_id": str(self.worker_id)})
            running = slot.current
            if running is not None and self._abandon(running):  # which replaces the slot
                self._done.append(Outcome(running=running, ok=False, error="The worker's slot thread running it died.",
                                          duration=time.monotonic() - (running.started or time.monotonic())))
            elif slot in self._slots:
                self._slots.remove(slot)
                if not self._stopping.is_set():
                    self._start_slot()

    def _heartbeat(self) -> None:
        # Every held job is waiting for a slot, run by a live slot, or
        # finished and waiting to be written back: nothing else is renewed.
        held = [r for r in self._held.values() if not r.abandoned]
        still_ours = queue.heartbeat(
            self.worker_id, busy=sum(1 for s in self._slots if s.current is not None), processed=self.processed,
            failed=self.failed, running=[r.job for r in held], lease_seconds=self.lease_seconds,
        )
        for running in held:
            if running.job.id not in still_ours:
                # Cancelled, or rescued by another worker after we stalled.
                self._log(logging.WARNING, "lease_lost", running.job)
                self._abandon(running)
                self._forget(running)

    def _maintain(self, now: float) -> bool:
        """On the leader only: rescue expired leases, expire jobs, roll up counters, prune.

        Return True if any job was rescued.
        """
        was_leader = self._leadership.is_leader
        if not self._leadership.held():
            return False
        if not was_leader:  # what the last leader may have left undone
            self._next_roll_up = self._next_prune = now
        rescued = queue.rescue_expired_leases()
        for job in rescued:
            self._log(logging.WARNING, "rescued", job, error=f"lease expired; the job is now {job.status}")
        queue.expire_jobs()
        if now >= self._next_roll_up:
            # Keeps the metric counters' table small.
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
        slot = Slot()
        slot.thread = threading.Thread(target=self._slot_loop, args=(slot,), daemon=True,
                                       name=f"skipjack-slot-{len(self._slots)}")
        self._slots.append(slot)
        slot.thread.start()

    def _slot_loop(self, slot: Slot) -> None:
        while True:
            running = self._todo.get()
            if running is None:
                return
            with self._lock:
                if running.abandoned:  # released at shutdown before it started
                    continue
                running.slot, running.started = slot, time.monotonic()
                slot.current = running
            outcome = self._execute(running)
            with self._lock:
                slot.current = None
                if not running.abandoned:
                    running.finished = True
                    self._done.append(outcome)
                retired = slot.retired
            self._wake.set()
            if connection.connection is not None:
                # The handler used the ORM: hand the connection back to the pool.
                connections.close_all()
            if retired:
                return

    def _execute(self, running: Running) -> Outcome:
        """Resolve the handler, run it, and turn whatever happened into an Outcome; never raise."""
        job = running.job
        try:
            # The handler's own log lines, and any job it enqueues, carry this job's trace id.
            with tracing.bound(trace_id=job.trace_id, job_id=job.id, type=job.type, queue=job.queue,
                               attempt=job.attempts, user_id=job.owner_id, worker_id=str(self.worker_id)):
                self._log(logging.INFO, "start", job)
                return self._run_handler(running)
        except BaseException as exc:  # noqa: BLE001 - nothing a job does may end its slot
            return self._failure(running, exc)

    def _run_handler(self, running: Running) -> Outcome:
        job = running.job
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
        except BaseException as exc:  # noqa: BLE001 - a handler's SystemExit must not end the worker
            return self._failure(running, exc)
        # Checked and made storable here, in the slot, so one job's result
        # cannot fail the batched write of the others.
        try:
            result, size = storable_json(result)
        except (TypeError, ValueError, RecursionError) as exc:
            return self._failure(running, exc, permanent=True, prefix="Result is not JSON: ")
        max_bytes = conf.get("JOBS_MAX_RESULT_BYTES")
        if size > max_bytes:
            error = f"Result is {size} bytes of JSON; the limit is {max_bytes} (JOBS_MAX_RESULT_BYTES)."
            return Outcome(running=running, ok=False, error=error, permanent=True,
                           duration=time.monotonic() - running.started)
        return Outcome(running=running, ok=True, result=result, duration=time.monotonic() - running.started)

    def _failure(self, running: Running, exc: BaseException, *, permanent=False, prefix="") -> Outcome:
        return Outcome(
            running=running, ok=False, error=_describe(exc, prefix), traceback=_format_traceback(),
            permanent=permanent, duration=time.monotonic() - running.started,
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
        self._log_signals()
        deadline = time.monotonic() + self.shutdown_timeout
        unstarted = self._drain_todo()
        self._release(unstarted)
        # Let running jobs finish within the grace period, writing back as they do.
        running = self._running()
        if running and self.shutdown_timeout > 0:
            names = ", ".join(f"{r.job.type}#{r.job.id}" for r in running[:10])
            more = f" and {len(running) - 10} more" if len(running) > 10 else ""
            logger.warning(
                "waiting up to %gs for %d running job(s) to finish: %s%s (send the signal again to stop now)",
                self.shutdown_timeout, len(running), names, more,
                extra={"event": "worker_draining", "worker_id": str(self.worker_id)},
            )
        while self._running() and time.monotonic() < deadline and self.shutdown_timeout > 0:
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
            self._log_signals()
            deadline = min(deadline, time.monotonic() + self.shutdown_timeout)
            self._safely(lambda: self._enforce_timeouts(time.monotonic()))
            self._safely(self._write_back)
            if time.monotonic() >= self._next_heartbeat:
                self._safely(self._heartbeat)
                self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        # What still runs had its attempt: it counts, and the job is retried
        # (or is dead, if that was its last attempt) like any failure.
        now = time.monotonic()
        for running in self._running():
            if self._abandon(running):
                self._done.append(Outcome(running=running, ok=False, kind="interrupted",
                                          error="Interrupted: the worker shut down before the handler finished.",
                                          duration=now - (running.started or now)))
        self._safely(self._write_back)
        for slot in self._slots:
            self._todo.put(None)
        self._safely(self._leadership.release)
        self._safely(lambda: queue.stop_worker(self.worker_id, processed=self.processed, failed=self.failed))
        logger.info("worker stopped", extra={"event": "worker_stop", "worker_id": str(self.worker_id),
                                               "processed": self.processed, "released": len(unstarted)})

    def _running(self) -> list[Running]:
        """Return the held jobs whose handler runs now."""
        return [r for r in self._held.values() if r.started is not None and not r.abandoned and not r.finished]

    def _drain_todo(self) -> list[Running]:
        """Take back every claimed job no slot has started."""
        drained = []
        while True:
            try:
                running = self._todo.get_nowait()
            except local_queue.Empty:
                break
            if running is not None:
                drained.append(running)
        with self._lock:
            for running in drained:
                running.abandoned = True
        return drained

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


def restart_process() -> None:
    """Replace this process with a fresh run of the same command (same pid, new interpreter)."""
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.argv])

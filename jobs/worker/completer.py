"""The completer: writes finished attempts and stored starts back, in batches.

A tick's outcomes, successes and failures alike, go in one statement
(queries.sql: record_outcomes). A batch the database refuses is written one outcome at a time, so a value it cannot
store fails only its own job, and an outcome refused for another reason is
tried again next round, up to MAX_WRITE_ATTEMPTS times. On a lost
connection everything unwritten waits for the next round. Every write
carries the lease token, so one that landed just before an error cannot be
applied twice.
"""

import logging
import time
import uuid

import psycopg
from django.db import DatabaseError, DataError, InterfaceError, OperationalError

from jobs import queue
from jobs.tasks import runtime as task_runtime
from jobs.tasks.runtime import TaskHandler
from jobs.worker.executor import describe
from jobs.worker.slots import Slots
from jobs.worker.state import Outcome, Running, log_job

logger = logging.getLogger("jobs.worker")

DB_ERRORS = (OperationalError, InterfaceError, DatabaseError, psycopg.Error)
# The connection is gone: any write may work again once it is back.
CONNECTION_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
# The database refused a value (an encoding, a size): the same write will fail again.
DATA_ERRORS = (DataError, psycopg.DataError)
UNSTORABLE_ERROR = "The error could not be stored: "

# Writes of one outcome that the database refused (other than for a lost
# connection) before the worker gives it up; the job's lease then runs out
# and it is rescued.
MAX_WRITE_ATTEMPTS = 5
# Seconds a started job runs before its start is stored on its own. A job
# that ends sooner has its start stored with its outcome, so a short job
# costs a claim and a completion and no statement more.
START_STORE_DELAY = 0.05


class Completer:
    def __init__(self, slots: Slots, held: dict[int, Running]):
        self.slots = slots
        self.held = held
        self.worker_id: uuid.UUID | None = None
        self.processed = 0
        self.failed = 0
        self.unwritten: list[Outcome] = []  # outcomes whose write failed; retried

    def pending(self) -> bool:
        return bool(self.slots.done or self.unwritten)

    # --- starts ------------------------------------------------------------

    def store_starts(self, now: float) -> None:
        """Store the starts of claimed jobs that have run START_STORE_DELAY and have not finished."""
        due: list[Running] = []
        young: list[Running] = []
        while self.slots.started:
            running = self.slots.started.popleft()
            if running.finished or running.abandoned or running.job.id not in self.held:
                continue  # its outcome stores the start, or nothing is ours to store
            started = running.started if running.started is not None else now
            (due if now - started >= START_STORE_DELAY else young).append(running)
        self.slots.started.extend(young)
        if due:
            queue.start_jobs([(r.job, now - (r.started or now)) for r in due])

    def next_start_due(self) -> float | None:
        """Return when the oldest unstored start is due to be stored."""
        # A copy first (one C call, atomic under the GIL): the slots append to it meanwhile.
        starts = [r.started for r in self.slots.started.copy() if r.started is not None]
        return min(starts) + START_STORE_DELAY if starts else None

    # --- outcomes ----------------------------------------------------------

    def write_back(self) -> bool:
        """Write finished attempts to the database; return True if there were any."""
        while self.slots.done:
            self.unwritten.append(self.slots.done.popleft())
        if not self.unwritten:
            return False
        pending, self.unwritten = self.unwritten, []
        try:
            try:
                self._write(pending)
            except CONNECTION_ERRORS:
                raise
            except DB_ERRORS:
                # One value the database refuses would fail the batch every time: write each alone.
                for outcome in pending:
                    self._write_alone(outcome)
        except CONNECTION_ERRORS:
            deferred = {id(o) for o in self.unwritten}
            self.unwritten += [o for o in pending if o.running.job.id in self.held and id(o) not in deferred]
            raise
        return True

    def _write(self, batch: list[Outcome]) -> None:
        """Write outcomes, successes and failures alike, in one statement."""
        now = time.monotonic()
        successes = [o for o in batch if o.ok]
        snoozes = [o for o in batch if not o.ok and o.kind == "snoozed"]
        cancels = [o for o in batch if not o.ok and o.kind == "cancelled"]
        failures = [o for o in batch if not o.ok and o.kind not in ("snoozed", "cancelled")]
        statuses = queue.record_outcomes(
            [queue.Completion(o.running.job, o.result, o.duration, now - (o.running.started or now))
             for o in successes],
            [queue.Failure(o.running.job, o.error, o.traceback, o.permanent, o.kind, o.duration,
                           now - (o.running.started or now), o.running.handler, o.exception)
             for o in failures],
            [queue.Snoozed(o.running.job, o.snooze, o.duration, now - (o.running.started or now)) for o in snoozes],
            [queue.Cancelled(o.running.job, o.error, o.result, o.duration, now - (o.running.started or now))
             for o in cancels],
        )
        self._completed(successes, statuses)
        self._failed(failures, statuses)
        self._ended(snoozes + cancels, statuses)
        ended = [(o.running.handler, o.running.job, statuses[o.running.job.id], o) for o in batch
                 if isinstance(o.running.handler, TaskHandler) and o.running.job.id in statuses]
        if ended:
            try:
                task_runtime.finished(ended, self.worker_id)
            except Exception:  # the outcomes are recorded; a receiver's failure, or a lost read, must not undo that
                logger.exception("task_finished could not be sent", extra={"event": "signal_failed",
                                                                             "worker_id": str(self.worker_id)})

    def _write_alone(self, outcome: Outcome) -> None:
        try:
            self._write([outcome])
        except CONNECTION_ERRORS:
            raise
        except DATA_ERRORS as exc:
            if outcome.ok:
                # The same result would come back: the job fails for good, saying why.
                outcome.ok, outcome.result, outcome.permanent = False, None, True
                outcome.error = describe(exc, prefix="Result could not be stored: ")
                self._write_alone(outcome)
            elif not outcome.error.startswith(UNSTORABLE_ERROR):
                outcome.error, outcome.traceback = describe(exc, prefix=UNSTORABLE_ERROR), ""
                self._write_alone(outcome)
            else:
                self._write_later(outcome, exc)
        except DB_ERRORS as exc:
            self._write_later(outcome, exc)

    def _write_later(self, outcome: Outcome, exc: BaseException) -> None:
        outcome.write_attempts += 1
        if outcome.write_attempts < MAX_WRITE_ATTEMPTS:
            self.unwritten.append(outcome)
            return
        # Given up: its lease is no longer renewed, and the rescue retries the job.
        log_job(logging.ERROR, "write_failed", outcome.running.job, self.worker_id,
                error=f"its outcome could not be written {outcome.write_attempts} times: {describe(exc)}")
        self.held.pop(outcome.running.job.id, None)

    def _completed(self, successes: list[Outcome], completed: dict[int, str]) -> None:
        for outcome in successes:
            job = outcome.running.job
            self.held.pop(job.id, None)
            if job.id in completed:
                self.processed += 1
                log_job(logging.INFO, "finish", job, self.worker_id, duration=outcome.duration)
            else:
                log_job(logging.WARNING, "lease_lost", job, self.worker_id, duration=outcome.duration)

    def _ended(self, outcomes: list[Outcome], statuses: dict[int, str]) -> None:
        """Snoozed and cancelled jobs: neither a success nor a failure."""
        for outcome in outcomes:
            job = outcome.running.job
            self.held.pop(job.id, None)
            self.processed += 1
            status = statuses.get(job.id)
            log_job(logging.INFO if status else logging.WARNING, outcome.kind if status else "lease_lost", job,
                    self.worker_id, duration=outcome.duration)

    def _failed(self, failures: list[Outcome], statuses: dict[int, str]) -> None:
        for outcome in failures:
            job = outcome.running.job
            self.held.pop(job.id, None)
            status = statuses.get(job.id)
            self.failed += 1
            self.processed += 1
            log_job(logging.WARNING, "fail", job, self.worker_id, duration=outcome.duration, error=outcome.error)
            if status is None:
                log_job(logging.WARNING, "lease_lost", job, self.worker_id)
            else:
                log_job(logging.WARNING if status == "dead" else logging.INFO,
                        "retry" if status == "retrying" else "dead", job, self.worker_id)

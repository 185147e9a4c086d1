"""The maintainer: the queue's upkeep, run by whichever worker leads (jobs.leader).

Rescue of expired leases, expiry, the relabelling of due jobs, the
scheduler (jobs.queue.schedules), counter roll-ups and pruning (finished
jobs, gone workers, old logged starts, old ticks). Every worker asks once
per poll interval; only the leader runs a round. When the leader dies,
another takes over once its lease (JOBS_LEADER_LEASE_SECONDS) runs out.

The scheduler also runs between rounds, at the moment the soonest next
tick is due (`schedules_due_at`), so a tick is enqueued at its time rather
than up to a poll interval later.
"""

import logging

from django.db import DatabaseError

from jobs import counters, queue
from jobs.leader import Leadership
from jobs.worker.state import log_job

logger = logging.getLogger("jobs.worker")

# Seconds between counter roll-ups, and between prunes once no backlog is left.
ROLL_UP_INTERVAL = 15.0
PRUNE_INTERVAL = 60.0
# Seconds the scheduler waits at least before it asks again for due ticks.
MIN_SCHEDULER_WAIT = 0.02


class Maintainer:
    def __init__(self):
        self.leadership = Leadership()  # for the worker's id, once registered
        self.next_roll_up = 0.0
        self.next_prune = 0.0
        # time.monotonic() at which the soonest next tick of a schedule is due; inf while not leading.
        self.schedules_due_at = float("inf")

    def run(self, now: float) -> bool:
        """Run a round if this worker leads; return True if it made any job ready (again): rescued or scheduled."""
        was_leader = self.leadership.is_leader
        if not self.leadership.held():
            self.schedules_due_at = float("inf")
            return False
        if not was_leader:  # what the last leader may have left undone
            self.next_roll_up = self.next_prune = now
            self._prepare_schedules()
        rescued = queue.rescue_expired_leases()
        for job in rescued:
            log_job(logging.WARNING, "rescued", job, self.leadership.worker_id,
                    error=f"lease expired; the job is now {job.status}")
        queue.expire_jobs()
        queue.stage_due_jobs()
        fired = self._fire_schedules(now)
        if now >= self.next_roll_up:
            # Keeps the metric counters' table small.
            self.next_roll_up = now + ROLL_UP_INTERVAL
            counters.roll_up()
        if now >= self.next_prune:
            # Back next round while there is a backlog to prune.
            more = queue.prune_finished() >= queue.PRUNE_BATCH
            self.next_prune = now if more else now + PRUNE_INTERVAL
            queue.prune_workers()
            queue.prune_start_log()
            queue.prune_ticks()
        return bool(rescued) or fired > 0

    def fire_schedules(self, now: float) -> bool:
        """Fire the ticks due now, between rounds, if this worker still leads; return True if it enqueued any job."""
        if self.leadership.held():
            return self._fire_schedules(now) > 0
        self.schedules_due_at = float("inf")
        return False

    def _prepare_schedules(self) -> None:
        """Build the schedules' job specs now, before the first tick this worker fires (jobs.queue.prepare_specs)."""
        try:
            queue.prepare_specs()
        except DatabaseError:
            raise
        except Exception:  # only a head start: the rounds build what is missing
            logger.exception("could not prepare the schedules' jobs", extra={"event": "scheduler_error"})

    def _fire_schedules(self, now: float) -> int:
        """Fire the due ticks; return how many jobs they enqueued."""
        try:
            fired = queue.fire_due_schedules()
            wait = queue.seconds_to_next_tick()
        except DatabaseError:
            raise
        except Exception:
            # A bug must not stop the rest of the upkeep, nor the worker: said, and tried again next round.
            logger.exception("the scheduler's round failed", extra={"event": "scheduler_error"})
            self.schedules_due_at = float("inf")
            return 0
        if fired.enqueued or fired.skipped or fired.missed:
            logger.debug("scheduler: %d enqueued, %d skipped, %d missed", fired.enqueued, fired.skipped, fired.missed,
                         extra={"event": "schedules_fired"})
        # A schedule added or edited meanwhile is seen by the next round, a poll interval away at most.
        # A tick due already is one another scheduler holds locked, or one a timer woke us a little
        # early for: asked again shortly, not in a busy loop.
        self.schedules_due_at = now + max(MIN_SCHEDULER_WAIT, wait) if wait is not None else float("inf")
        return fired.enqueued

    def release(self) -> None:
        self.leadership.release()

"""The maintainer: the queue's upkeep, run by whichever worker leads (jobs.leader).

Rescue of expired leases, expiry, the relabelling of due jobs, counter
roll-ups and pruning (finished jobs, gone workers, old logged starts). Every worker asks once per poll interval; only the
leader runs a round. When the leader dies, another takes over once its
lease (JOBS_LEADER_LEASE_SECONDS) runs out.
"""

import logging

from jobs import counters, queue
from jobs.leader import Leadership
from jobs.worker.state import log_job

# Seconds between counter roll-ups, and between prunes once no backlog is left.
ROLL_UP_INTERVAL = 15.0
PRUNE_INTERVAL = 60.0


class Maintainer:
    def __init__(self):
        self.leadership = Leadership()  # for the worker's id, once registered
        self.next_roll_up = 0.0
        self.next_prune = 0.0

    def run(self, now: float) -> bool:
        """Run a round if this worker leads; return True if it made any job ready again."""
        was_leader = self.leadership.is_leader
        if not self.leadership.held():
            return False
        if not was_leader:  # what the last leader may have left undone
            self.next_roll_up = self.next_prune = now
        rescued = queue.rescue_expired_leases()
        for job in rescued:
            log_job(logging.WARNING, "rescued", job, self.leadership.worker_id,
                    error=f"lease expired; the job is now {job.status}")
        queue.expire_jobs()
        queue.stage_due_jobs()
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
        return bool(rescued)

    def release(self) -> None:
        self.leadership.release()

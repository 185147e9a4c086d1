"""Every change of a job's state happens in this package.

Each transition is one guarded statement: it names the statuses it may
start from (and, for a worker's writes, the lease token it holds) and
treats zero updated rows as "not allowed" or "no longer ours". Nothing
reads a job, changes it in Python and saves it back. The statements are
in queries.sql, each whole and by name; each transition is announced
through jobs.events once its transaction commits.

    queued/scheduled/retrying --claim--> running (a slot is free)
                                     \\--> claimed --start--> running
    claimed/running --complete--> completed
                    --fail--> retrying | dead
                    --release--> queued              (shutdown, not started)
                    --rescue--> retrying | dead      (lease expired after its start; backs off)
                    --rescue--> queued               (lease expired before its start)
    scheduled/retrying --stage--> queued             (the leader, once due)
    queued/scheduled/retrying --expire--> expired
    queued/scheduled/retrying/claimed --cancel--> cancelled
    running --cancel--> running, cancel asked for --its worker--> cancelled
    claimed/running --snooze--> scheduled              (the attempt given back)
    dead/cancelled/expired --requeue--> queued
    scheduled/retrying --retry_now--> queued

Modules, by concern: produce (enqueue), claim (claim and start), outcomes
(what a worker writes back), actions (users and operators), control (flow
control: pause, resume, limits), maintenance (the leader's rounds),
workers (worker rows and leases) and schedules (the scheduler's rounds and
every write of a schedule and its ticks).
"""

from jobs.queue.actions import (
    REQUEUEABLE_STATUSES,
    cancel_job,
    cancel_jobs,
    dead_jobs,
    requeue_dead,
    retry_job,
    retry_jobs_now,
    retry_now,
)
from jobs.queue.claim import (
    ClaimedJob,
    FlowState,
    claim_jobs,
    claim_keyed_jobs,
    claim_limited_jobs,
    flow_state,
    ready_priorities,
    start_jobs,
)
from jobs.queue.control import (
    apply_queue_settings,
    pause_queue,
    remove_key_limit,
    resume_queue,
    set_key_limit,
    set_queue_controls,
)
from jobs.queue.maintenance import (
    PRUNE_BATCH,
    STAGE_BATCH,
    RescuedJob,
    expire_jobs,
    prune_finished,
    prune_start_log,
    rescue_expired_leases,
    stage_due_jobs,
)
from jobs.queue.outcomes import (
    Cancelled,
    Completion,
    Failure,
    Snoozed,
    complete_job,
    complete_jobs,
    fail_job,
    fail_jobs,
    record_outcomes,
    release_jobs,
    set_progress,
)
from jobs.queue.produce import (
    CANCEL_REQUESTED,
    FLOW_CHANGED,
    KEYED_SUFFIX,
    MAX_SECONDS,
    NOTIFY_CHANNEL,
    PRIORITY_SUFFIX,
    enqueue,
    enqueue_many,
    enqueue_specs,
    notify,
    parse_priority,
    wake_name,
)
from jobs.queue.schedules import (
    RoundResult,
    ScheduleInvalid,
    SyncReport,
    create_schedule,
    delete_schedule,
    fire_due_schedules,
    pause_schedule,
    prepare_specs,
    prune_ticks,
    resume_schedule,
    run_schedule_now,
    seconds_to_next_tick,
    sync_declared,
    update_schedule,
)
from jobs.queue.workers import heartbeat, prune_workers, register_worker, stop_worker

__all__ = [
    "CANCEL_REQUESTED", "FLOW_CHANGED", "KEYED_SUFFIX", "MAX_SECONDS", "NOTIFY_CHANNEL",
    "PRIORITY_SUFFIX", "PRUNE_BATCH", "REQUEUEABLE_STATUSES",
    "STAGE_BATCH", "Cancelled", "ClaimedJob", "Completion", "Failure", "FlowState", "RescuedJob", "Snoozed",
    "apply_queue_settings", "cancel_job", "cancel_jobs", "claim_jobs", "claim_keyed_jobs", "claim_limited_jobs", "complete_job",
    "complete_jobs", "dead_jobs", "enqueue", "enqueue_many", "expire_jobs", "fail_job", "fail_jobs", "flow_state",
    "heartbeat", "notify", "ready_priorities", "parse_priority", "pause_queue", "wake_name", "prune_finished", "prune_start_log",
    "prune_workers", "record_outcomes", "register_worker", "release_jobs", "remove_key_limit", "requeue_dead",
    "rescue_expired_leases", "resume_queue", "retry_job", "retry_jobs_now", "retry_now", "set_key_limit",
    "set_progress", "set_queue_controls", "stage_due_jobs", "start_jobs", "stop_worker",
    # Schedules
    "RoundResult", "ScheduleInvalid", "SyncReport", "create_schedule", "delete_schedule", "enqueue_specs",
    "fire_due_schedules", "pause_schedule", "prepare_specs", "prune_ticks", "resume_schedule", "run_schedule_now",
    "seconds_to_next_tick", "sync_declared", "update_schedule",
]

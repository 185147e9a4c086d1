"""Typed JOBS_* settings with their defaults, read when asked for."""

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS = {
    # Retry backoff: about BASE, 2*BASE, 4*BASE, ... seconds, never above CAP.
    "JOBS_BACKOFF_BASE": 5.0,
    "JOBS_BACKOFF_CAP": 3600.0,
    "JOBS_BACKOFF_JITTER": 0.1,
    # A running job's lease; workers renew it every third of this.
    "JOBS_LEASE_SECONDS": 30.0,
    # How often an idle worker polls when no NOTIFY arrives.
    "JOBS_POLL_INTERVAL": 1.0,
    # Seconds a running job's handler has to stop after a cancel is asked
    # for (it sees job.cancelled); then it is stopped as a timeout stops it.
    "JOBS_CANCEL_GRACE": 10.0,
    # Per-job timeout when neither the job nor its handler sets one.
    "JOBS_DEFAULT_TIMEOUT": 300.0,
    # How long the maintenance leader's lease lasts without a renewal: how
    # soon another worker takes over from one that died or froze.
    "JOBS_LEADER_LEASE_SECONDS": 5.0,
    # A worker whose heartbeat is older than this is shown as gone.
    "JOBS_WORKER_STALE_AFTER": 30.0,
    "JOBS_DEFAULT_MAX_RETRIES": 3,
    "JOBS_DEFAULT_QUEUE": "default",
    # Flow control per queue (jobs.flow): {"emails": {"rate": "100/m"}, "video": {"concurrency": 4},
    # "api": {"key_concurrency": 2, "key_rate": "5/s"}, "reports": {"paused": True}}.
    "JOBS_QUEUES": {},
    # Payloads above this many bytes of JSON are refused.
    "JOBS_MAX_PAYLOAD_BYTES": 64 * 1024,
    "JOBS_MAX_PAYLOAD_DEPTH": 32,
    # Results above this many bytes of JSON fail their job permanently.
    "JOBS_MAX_RESULT_BYTES": 1024 * 1024,
    # Handler threads a worker may leave running after giving up on their
    # jobs (timeouts, cancels) before it restarts itself; None: its concurrency.
    "JOBS_MAX_ABANDONED_THREADS": None,
    # Finished jobs are deleted this many seconds after they finish (0 keeps them).
    "JOBS_RETENTION_SECONDS": 7 * 24 * 3600.0,
    # Off unless an operator turns it on; even then only staff may submit,
    # and only the programs listed (exactly as argv[0] names them) run.
    "JOBS_ENABLE_SHELL_COMMANDS": False,
    "JOBS_SHELL_ALLOWED_COMMANDS": (),
    # send_email is for staff only while this is empty. Otherwise users who
    # are not staff may send to these recipients: "self" (their account's
    # address), an address, or "@example.com" for any address of a domain;
    # each such user to at most JOBS_EMAIL_RECIPIENTS_PER_DAY a day (UTC).
    "JOBS_EMAIL_USER_RECIPIENTS": (),
    "JOBS_EMAIL_RECIPIENTS_PER_DAY": 100,
    # scrape_website refuses loopback, private and link-local addresses unless set.
    "JOBS_SCRAPE_ALLOW_PRIVATE": False,
    "JOBS_SCRAPE_MAX_BYTES": 2 * 1024 * 1024,
    "JOBS_SCRAPE_TIMEOUT": 10.0,
    # Modules imported at startup so the handlers they define register.
    "JOBS_HANDLER_MODULES": (),
    # Modules whose Django tasks (@task functions) workers run, imported at
    # startup; a job naming a task of any other module is refused (jobs.tasks.runtime).
    "JOBS_TASK_MODULES": (),
    # Per-user submission limits for non-staff users (API and dashboard).
    "JOBS_USER_SUBMISSIONS_PER_MINUTE": 10,
    "JOBS_USER_MAX_ACTIVE": 5,
    # Seconds one attempt of a non-staff user's job may run: its timeout, and
    # the bound of what its payload asks to run for (sleep's seconds, ...).
    "JOBS_USER_MAX_TIMEOUT": 300.0,
    # Jobs of one non-staff owner that workers may hold (claimed or running)
    # at once, across every worker, so that one owner cannot take every slot
    # while others wait. Enforced by the claim, as the limit of the job's
    # concurrency key "owner:<id>". None (JOBS_USER_MAX_RUNNING=0): no such limit.
    "JOBS_USER_MAX_RUNNING": 2,
    # Weights of the priority a claim serves first: high, normal, low.
    "JOBS_PRIORITY_WEIGHTS": (60, 30, 10),
    # Live events (jobs.events): on/off, the coalescing window in seconds,
    # how many job ids one message lists before it says "resync" instead,
    # and the longer window that follows a flush that had to say "resync".
    "JOBS_EVENTS": True,
    "JOBS_EVENTS_FLUSH_INTERVAL": 0.25,
    "JOBS_EVENTS_MAX_JOBS": 100,
    "JOBS_EVENTS_BUSY_FLUSH_INTERVAL": 1.0,
    # Schedules declared in settings, synced to the database at start-up
    # (jobs.schedules): {name: {"cron" or "interval_seconds", "type", ...}}.
    "JOBS_SCHEDULES": {},
    # A tick the leader fires later than this many seconds after its time
    # was missed (no scheduler ran): the schedule's misfire policy decides.
    "JOBS_SCHEDULE_MISFIRE_GRACE_SECONDS": 30.0,
    # Ticks are recorded for this many seconds (0 keeps them).
    "JOBS_SCHEDULE_TICK_RETENTION_SECONDS": 7 * 24 * 3600.0,
}


# Looked up once per name: an unset setting costs Django an AttributeError
# every time, and the worker asks for some of them per job.
_values: dict = {}


def get(name: str):
    """Return the JOBS_* setting `name`, or its default."""
    try:
        return _values[name]
    except KeyError:
        value = _values[name] = getattr(settings, name, DEFAULTS[name])
        return value


@receiver(setting_changed)
def _forget_changed_setting(setting: str, **kwargs) -> None:
    _values.pop(setting, None)

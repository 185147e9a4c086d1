"""The worker: `manage.py runworker` runs one Worker per process (jobs.worker.runner)."""

from jobs.worker.runner import RESTART, SHUTDOWN_MARGIN, Worker, restart_process

__all__ = ["RESTART", "SHUTDOWN_MARGIN", "Worker", "restart_process"]

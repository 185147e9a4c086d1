"""Skipjack through Django's Tasks API: a no-op @task enqueued with .enqueue(), run by `manage.py runworker`."""

from bench.lib import ROOT
from bench.systems.skipjack import Skipjack


class SkipjackTasks(Skipjack):
    name = "skipjack_tasks"
    label = "Skipjack @task"
    scenarios = ("tasks",)

    def env(self) -> dict:
        env = super().env()
        # The project's TASKS is on jobs.tasks.SkipjackBackend; workers run the tasks of bench.tasks.
        env.update(JOBS_TASK_MODULES="bench.tasks")
        return env

    def settings(self) -> str:
        return "as Skipjack's, running the @task bench.tasks.bench_noop through jobs.tasks.SkipjackBackend"

    def app_command(self, *args: str) -> list[str]:
        return [self.python, str(ROOT / "bench" / "peers" / "skipjack_tasks_app.py"), *args]

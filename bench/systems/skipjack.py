"""Skipjack itself: `manage.py runworker` against its own benchmark database."""

import os
import sys

from bench.lib import ROOT, Database, dsn, recreate_database, run_checked
from bench.systems.base import System

CONCURRENCY = int(os.environ.get("BENCH_SKIPJACK_CONCURRENCY", "10"))
PREFETCH = int(os.environ.get("BENCH_SKIPJACK_PREFETCH", "100"))
LARGE_PREFETCH = 400


class Skipjack(System):
    name = "skipjack"
    label = "Skipjack"
    database = os.environ.get("BENCH_SKIPJACK_DB", "skipjack_bench")
    cwd = ROOT

    def __init__(self):
        self.python = sys.executable
        self.db = Database(self.database)
        # Concurrency keys the enqueue side spreads jobs over (0: none): the flow_limits scenario.
        self.keys = 0

    def env(self) -> dict:
        env = super().env()
        env.update(
            DATABASE_URL=dsn(self.database),
            REDIS_URL=env["BENCH_REDIS_URL"],
            DJANGO_SETTINGS_MODULE="queueproject.settings",
            PYTHONPATH=str(ROOT),
            # Per-job INFO logs are not what is measured here.
            LOG_LEVEL="WARNING",
            JOBS_HANDLER_MODULES="bench.handlers",
            BENCH_SKIPJACK_KEYS=str(self.keys),
        )
        return env

    def prepare(self) -> None:
        self.db.close()
        recreate_database(self.database)
        run_checked([self.python, "manage.py", "migrate", "--verbosity", "0"], env=self.env(), cwd=ROOT)

    def reset(self) -> None:
        self.db.execute("TRUNCATE jobs_job, jobs_worker")

    @property
    def prefetch(self) -> int:
        return LARGE_PREFETCH if self.large_batches else PREFETCH

    def settings(self) -> str:
        return (f"{self.workers} processes (runworker) x concurrency {CONCURRENCY} threads, prefetch {self.prefetch} "
                f"(holds up to {CONCURRENCY + self.prefetch} jobs, claimed and completed in batches), "
                "LOG_LEVEL=WARNING, JOBS_EVENTS on (the default; nobody subscribed)")

    def versions(self) -> dict:
        import tomllib
        from importlib.metadata import version

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        return {"skipjack": project["version"], "django": version("django"), "psycopg": version("psycopg")}

    def worker_commands(self, *, drain: bool) -> list[list[str]]:
        command = [self.python, "manage.py", "runworker", "--concurrency", str(CONCURRENCY), "--prefetch", str(self.prefetch)]
        if drain:
            command.append("--burst")
        return [command] * self.workers

    def app_command(self, *args: str) -> list[str]:
        return [self.python, str(ROOT / "bench" / "peers" / "skipjack_app.py"), *args]

    def pending(self) -> bool:
        return bool(self.db.value(
            "SELECT EXISTS (SELECT 1 FROM jobs_job WHERE status IN ('queued', 'scheduled', 'retrying'))"
            " OR EXISTS (SELECT 1 FROM jobs_job WHERE status = 'running')"
        ))

    def finished_check(self, expected: int) -> dict:
        completed = self.db.value("SELECT count(*) FROM jobs_job WHERE status = 'completed'")
        return {"completed_in_store": completed, "all_completed": completed == expected}

    def queue_tables(self) -> list[str]:
        return ["jobs_job"]

    def close(self) -> None:
        self.db.close()

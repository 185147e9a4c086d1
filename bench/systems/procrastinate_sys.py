"""Procrastinate (psycopg connector) in its own virtualenv and database."""

import os

from bench.lib import PEERS_DIR, Database, dsn, recreate_database, run_checked
from bench.systems.base import System
from bench.venvs import ensure_venv, package_version

REQUIREMENTS = ["procrastinate>=3.10,<4", "psycopg[binary,pool]>=3.2,<4", "redis>=5,<9"]
CONCURRENCY = int(os.environ.get("BENCH_PROCRASTINATE_CONCURRENCY", "10"))


class Procrastinate(System):
    name = "procrastinate"
    label = "Procrastinate"
    database = "bench_procrastinate"

    def __init__(self):
        self.db = Database(self.database)

    def env(self) -> dict:
        env = super().env()
        env.update(BENCH_DSN=dsn(self.database))
        return env

    def prepare(self) -> None:
        self.venv_python = ensure_venv("procrastinate", REQUIREMENTS)
        self.db.close()
        recreate_database(self.database)
        run_checked(self._cli("schema", "--apply"), env=self.env(), cwd=PEERS_DIR)

    def _cli(self, *args: str) -> list[str]:
        return [os.path.join(os.path.dirname(self.venv_python), "procrastinate"), "--app=procrastinate_app.app", *args]

    def reset(self) -> None:
        self.db.execute("TRUNCATE procrastinate_jobs CASCADE")

    def settings(self) -> str:
        return f"{self.workers} processes (procrastinate worker), async task, concurrency {CONCURRENCY}, LISTEN/NOTIFY on"

    def versions(self) -> dict:
        return {"procrastinate": package_version(self.venv_python, "procrastinate"),
                "psycopg": package_version(self.venv_python, "psycopg")}

    def worker_commands(self, *, drain: bool) -> list[list[str]]:
        return [self._cli("worker", "--concurrency", str(CONCURRENCY))] * self.workers

    def app_command(self, *args: str) -> list[str]:
        return [self.venv_python, str(PEERS_DIR / "procrastinate_app.py"), *args]

    def pending(self) -> bool:
        return bool(self.db.value(
            "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
        ))

    def finished_check(self, expected: int) -> dict:
        done = self.db.value("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
        return {"completed_in_store": done, "all_completed": done == expected}

    def queue_tables(self) -> list[str]:
        return ["procrastinate_jobs", "procrastinate_events"]

    def close(self) -> None:
        self.db.close()

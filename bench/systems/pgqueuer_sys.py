"""pgqueuer (asyncpg driver) in its own virtualenv and database."""

import os

from bench.lib import PEERS_DIR, Database, dsn, recreate_database, run_checked
from bench.systems.base import System
from bench.venvs import ensure_venv, package_version

REQUIREMENTS = ["pgqueuer>=1.6,<2", "asyncpg>=0.29,<1", "redis>=5,<9"]
BATCH_SIZE = int(os.environ.get("BENCH_PGQUEUER_BATCH_SIZE", "10"))  # the default of `pgq run`
LARGE_BATCH_SIZE = 100


class Pgqueuer(System):
    name = "pgqueuer"
    label = "pgqueuer"
    database = "bench_pgqueuer"

    def __init__(self):
        self.db = Database(self.database)

    def env(self) -> dict:
        env = super().env()
        env.update(BENCH_DSN=dsn(self.database), PGDSN=dsn(self.database))
        return env

    def prepare(self) -> None:
        self.venv_python = ensure_venv("pgqueuer", REQUIREMENTS)
        self.db.close()
        recreate_database(self.database)
        run_checked([self.bin("pgq"), "install"], env=self.env(), cwd=PEERS_DIR)

    def bin(self, name: str) -> str:
        return os.path.join(os.path.dirname(self.venv_python), name)

    @property
    def batch_size(self) -> int:
        return LARGE_BATCH_SIZE if self.large_batches else BATCH_SIZE

    def reset(self) -> None:
        self.db.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    def settings(self) -> str:
        return (f"{self.workers} processes (QueueManager.run, as `pgq run` does), asyncpg driver, uvloop, "
                f"async handler, batch-size {self.batch_size}, no concurrency limit")

    def versions(self) -> dict:
        return {"pgqueuer": package_version(self.venv_python, "pgqueuer"),
                "asyncpg": package_version(self.venv_python, "asyncpg")}

    def worker_commands(self, *, drain: bool) -> list[list[str]]:
        command = [self.venv_python, str(PEERS_DIR / "pgqueuer_app.py"), "worker", "--batch-size", str(self.batch_size)]
        if drain:
            command.append("--drain")
        return [command] * self.workers

    def app_command(self, *args: str) -> list[str]:
        return [self.venv_python, str(PEERS_DIR / "pgqueuer_app.py"), *args]

    def pending(self) -> bool:
        return bool(self.db.value(
            "SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE status = 'queued')"
            " OR EXISTS (SELECT 1 FROM pgqueuer WHERE status = 'picked')"
        ))

    def finished_check(self, expected: int) -> dict:
        left = self.db.value("SELECT count(*) FROM pgqueuer")
        return {"left_in_queue_table": left}

    def queue_tables(self) -> list[str]:
        return ["pgqueuer", "pgqueuer_log"]

    def close(self) -> None:
        self.db.close()

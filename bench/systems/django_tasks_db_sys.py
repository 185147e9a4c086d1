"""django-tasks-db: Django's Tasks API on a table of its own, drained by its `db_worker`, in its own virtualenv."""

import os

from bench.lib import PEERS_DIR, Database, dsn, recreate_database, run_checked
from bench.systems.base import System
from bench.venvs import ensure_venv, package_version

# On Django 5.2 LTS, as Skipjack's own virtualenv runs, with the Tasks API backport.
REQUIREMENTS = ["django-tasks-db>=0.13,<0.14", "django-tasks>=0.12,<0.13", "django>=5.2,<5.3",
                "psycopg[binary]>=3.2,<4", "dj-database-url>=2.2,<4", "redis>=5,<9"]


class DjangoTasksDb(System):
    name = "django_tasks_db"
    label = "django-tasks-db"
    database = "bench_django_tasks_db"
    # Django's Tasks API only: the scenario that compares it with Skipjack's.
    scenarios = ("tasks",)

    def __init__(self):
        self.db = Database(self.database)

    def env(self) -> dict:
        env = super().env()
        env.update(BENCH_DSN=dsn(self.database), DJANGO_SETTINGS_MODULE="tasksdb_settings")
        return env

    def prepare(self) -> None:
        self.venv_python = ensure_venv("django_tasks_db", REQUIREMENTS)
        self.db.close()
        recreate_database(self.database)
        run_checked(self._admin("migrate", "--verbosity", "0"), env=self.env(), cwd=PEERS_DIR)

    def _admin(self, *args: str) -> list[str]:
        return [os.path.join(os.path.dirname(self.venv_python), "django-admin"), *args]

    def reset(self) -> None:
        self.db.execute("TRUNCATE django_tasks_database_dbtaskresult")

    def settings(self) -> str:
        return (f"{self.workers} processes (django-admin db_worker --no-startup-delay --verbosity 0, and --batch to "
                "exit once nothing is ready), its default poll interval (1 s), one task claimed per transaction")

    def versions(self) -> dict:
        return {"django-tasks-db": package_version(self.venv_python, "django-tasks-db"),
                "django-tasks": package_version(self.venv_python, "django-tasks"),
                "django": package_version(self.venv_python, "django")}

    def worker_commands(self, *, drain: bool) -> list[list[str]]:
        # Without its random start-up delay of up to a second, so both processes start as the others' do, and
        # without its two INFO lines per task (--verbosity 0), as Skipjack's workers run at LOG_LEVEL=WARNING.
        command = self._admin("db_worker", "--no-startup-delay", "--verbosity", "0")
        if drain:
            command.append("--batch")
        return [command] * self.workers

    def app_command(self, *args: str) -> list[str]:
        return [self.venv_python, str(PEERS_DIR / "tasksdb_app.py"), *args]

    def pending(self) -> bool:
        return bool(self.db.value(
            "SELECT EXISTS (SELECT 1 FROM django_tasks_database_dbtaskresult WHERE status IN ('READY', 'RUNNING'))"
        ))

    def finished_check(self, expected: int) -> dict:
        done = self.db.value("SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status = 'SUCCESSFUL'")
        return {"completed_in_store": done, "all_completed": done == expected}

    def queue_tables(self) -> list[str]:
        return ["django_tasks_database_dbtaskresult"]

    def close(self) -> None:
        self.db.close()

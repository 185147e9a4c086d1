"""What the harness needs to know about a queue system to benchmark it."""

import abc
import os
from pathlib import Path

from bench.lib import PEERS_DIR, REDIS_URL, ROOT


class System(abc.ABC):
    name = ""  # key used on the command line and in results
    label = ""
    workers = 2  # worker processes, the same for every system
    large_batches = False  # set by the drain_large_batches scenario
    venv_python = ""
    # The scenarios this system takes part in; None: every scenario that does not name its own systems.
    scenarios: tuple[str, ...] | None = None

    @abc.abstractmethod
    def prepare(self) -> None:
        """Install what the system needs and give it a fresh, empty store with its schema."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Empty the queue between scenarios."""

    @abc.abstractmethod
    def settings(self) -> str:
        """Describe how the workers run: processes, concurrency, batching."""

    @abc.abstractmethod
    def versions(self) -> dict:
        """Return the versions of the system and its driver."""

    @abc.abstractmethod
    def worker_commands(self, *, drain: bool) -> list[list[str]]:
        """Return one command line per worker process; `drain` asks for a burst/drain mode if any."""

    @abc.abstractmethod
    def app_command(self, *args: str) -> list[str]:
        """Return the command line of this system's driver (peers/driver.py) with `args`."""

    @abc.abstractmethod
    def pending(self) -> bool:
        """Return True while the system's own store still holds unfinished jobs."""

    def finished_check(self, expected: int) -> dict:
        """Return what the system's store says about finished jobs, for the record."""
        return {}

    def queue_tables(self) -> list[str]:
        """Return the tables a vacuum pass (--vacuum-every) cleans; none for a broker."""
        return []

    def vacuum(self, db) -> None:
        """VACUUM the system's queue tables over `db`, as autovacuum would on a server that runs it."""
        for table in self.queue_tables():
            db.execute(f"VACUUM (ANALYZE) {table}")

    def close(self) -> None:  # noqa: B027 - optional, unlike the abstract methods
        """Release what prepare() opened; nothing by default."""

    # --- shared ---------------------------------------------------------------

    cwd: Path = PEERS_DIR

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
        env.update(BENCH_REDIS_URL=REDIS_URL, PYTHONUNBUFFERED="1", PYTHONPATH=str(PEERS_DIR))
        return env

    def __repr__(self):
        return self.label


def project_root() -> Path:
    return ROOT

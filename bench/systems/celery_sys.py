"""Celery with the local Redis (db 9) as its broker, results disabled, in its own virtualenv."""

import os

from bench.lib import PEERS_DIR, redis_client
from bench.systems.base import System
from bench.venvs import ensure_venv, package_version

REQUIREMENTS = ["celery[redis]>=5.5,<6"]
POOL = os.environ.get("BENCH_CELERY_POOL", "threads")
CONCURRENCY = int(os.environ.get("BENCH_CELERY_CONCURRENCY", "10"))


class Celery(System):
    name = "celery"
    label = "Celery"

    def __init__(self):
        self.redis = redis_client()

    def prepare(self) -> None:
        self.venv_python = ensure_venv("celery", REQUIREMENTS)
        self.reset()

    def reset(self) -> None:
        self.redis.delete("celery", "unacked", "unacked_index")

    def settings(self) -> str:
        return (f"{self.workers} processes (celery worker), pool={POOL}, concurrency {CONCURRENCY}, "
                "default prefetch multiplier (4), acks on receipt, results disabled, "
                "--without-gossip --without-mingle --without-heartbeat")

    def versions(self) -> dict:
        return {"celery": package_version(self.venv_python, "celery"),
                "kombu": package_version(self.venv_python, "kombu"),
                "redis-py": package_version(self.venv_python, "redis")}

    def worker_commands(self, *, drain: bool) -> list[list[str]]:
        celery = os.path.join(os.path.dirname(self.venv_python), "celery")
        return [
            [celery, "-A", "celery_app", "worker", "--pool", POOL, "--concurrency", str(CONCURRENCY),
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"bench{index}@%h"]
            for index in range(self.workers)
        ]

    def app_command(self, *args: str) -> list[str]:
        return [self.venv_python, str(PEERS_DIR / "celery_app.py"), *args]

    def pending(self) -> bool:
        return bool(self.redis.llen("celery") or self.redis.hlen("unacked"))

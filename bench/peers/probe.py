"""Count job starts inside a worker process and report them to Redis.

Every system's no-op handler calls `probe.hit()`. The handler itself does no
I/O: a daemon thread publishes the counters every FLUSH_INTERVAL seconds, so
the probe adds a lock and a clock read per job, the same for every system.

Published per worker process (pid), in the Redis database of BENCH_REDIS_URL:

    bench:probe:<pid>   hash  count, first, last (time.time() of the first/last job start)
    bench:series:<pid>  list  "<time> <count>" once a second (for per-interval throughput)
    bench:latency       list  seconds from enqueue to start, for jobs that carry an enqueue time

This module is imported from each system's own virtualenv, so it needs
nothing but the standard library and redis-py.
"""

import atexit
import os
import threading
import time

import redis

FLUSH_INTERVAL = 0.05
SERIES_INTERVAL = 1.0


class Probe:
    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self._latencies: list[float] = []

    def hit(self, enqueued_at: float | None = None) -> None:
        """Record that a job started now; with `enqueued_at`, also its pickup latency."""
        now = time.time()
        with self._lock:
            if self._pid != os.getpid():  # first job, or a forked child
                self._start()
            self.count += 1
            if not self.first:
                self.first = now
            self.last = now
            if enqueued_at is not None:
                self._latencies.append(now - float(enqueued_at))

    def _start(self) -> None:
        self._pid = os.getpid()
        self.count, self.first, self.last, self._latencies = 0, 0.0, 0.0, []
        self._redis = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        threading.Thread(target=self._flush_forever, name="bench-probe", daemon=True).start()
        atexit.register(self.flush)

    def _flush_forever(self) -> None:
        next_series = 0.0
        while True:
            time.sleep(FLUSH_INTERVAL)
            now = time.time()
            self.flush(series=now >= next_series)
            if now >= next_series:
                next_series = now + SERIES_INTERVAL

    def flush(self, series: bool = False) -> None:
        with self._lock:
            count, first, last = self.count, self.first, self.last
            latencies, self._latencies = self._latencies, []
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(f"bench:probe:{self._pid}", mapping={"count": count, "first": first, "last": last})
        if series:
            pipe.rpush(f"bench:series:{self._pid}", f"{time.time()} {count}")
        if latencies:
            pipe.rpush("bench:latency", *latencies)
        try:
            pipe.execute()
        except redis.RedisError:
            pass  # the harness notices missing counts; a worker must not die of it


probe = Probe()

"""One Redis connection pool per process for Django's cache.

Django keeps a cache object per async context, and under ASGI every request
runs in a context of its own, so every request gets a new RedisCache with a
new connection pool: a new TCP connection to Redis (connect, HELLO, health
check) for each request that touches the cache, and a socket left for the
garbage collector. CACHES["default"]["OPTIONS"]["pool_class"] names the
class below, which hands every cache object of the process the same pool
for the same server and options. redis-py's pool is thread-safe and makes
itself new connections in a forked child.
"""

import threading
from typing import ClassVar

import redis


class SharedConnectionPool(redis.ConnectionPool):
    _pools: ClassVar[dict[tuple[str, str], "SharedConnectionPool"]] = {}
    # Not `_lock`: every redis.ConnectionPool has a lock of its own by that name.
    _pools_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "SharedConnectionPool":
        key = (url, repr(sorted(kwargs.items())))
        with cls._pools_lock:
            pool = cls._pools.get(key)
            if pool is None:
                pool = cls._pools[key] = super().from_url(url, **kwargs)
        return pool

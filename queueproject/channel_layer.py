"""The channel layer: channels_redis's, with Redis writes that never drop a cancellation.

redis-py bounds each write by the socket timeout with ``asyncio.wait_for``.
Before Python 3.12, ``wait_for`` returns the result of a write that completes
as its task is cancelled, and the cancellation is lost. A dashboard consumer
that closes cancels its receive; if that lands on the write of the receive's
next BZPOPMIN round, the receive goes on polling for good. The socket's task
never ends, and uvicorn's shutdown waits for it until its graceful timeout,
then logs an ERROR as it cancels it.
"""

import asyncio
import functools
from typing import Any

from channels_redis import core


class RedisChannelLayer(core.RedisChannelLayer):
    """channels_redis's layer, whose connections raise a cancellation their write swallowed."""

    def create_pool(self, index):
        pool = super().create_pool(index)
        pool.connection_class = _keeping_cancellations(pool.connection_class)
        return pool


@functools.cache
def _keeping_cancellations(connection_class: Any) -> type:  # channels_redis is untyped
    class Connection(connection_class):
        async def send_packed_command(self, command, check_health=True):
            await super().send_packed_command(command, check_health)
            task = asyncio.current_task()
            # A cancellation that was delivered would have raised; one still
            # pending after the write is the one wait_for swallowed.
            if task is not None and task.cancelling():
                # The command went out and its reply is still to come: the
                # connection cannot serve another command.
                await self.disconnect(nowait=True)
                raise asyncio.CancelledError

    Connection.__name__ = Connection.__qualname__ = connection_class.__name__
    return Connection

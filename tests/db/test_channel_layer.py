"""The channel layer on the real Redis: a cancelled receive ends, whenever the cancellation lands."""

import asyncio

from django.conf import settings

from queueproject.channel_layer import RedisChannelLayer


def test_receive_ends_when_cancelled_at_any_step():
    """End a receive cancelled after any number of event-loop steps, within a second, and keep the layer working.

    One of those steps is the one where redis-py's write of the next
    BZPOPMIN round has just completed inside asyncio.wait_for, which on
    Python 3.11 drops a cancellation that arrives then.
    """

    async def sweep():
        layer = RedisChannelLayer(**{**settings.CHANNEL_LAYERS["default"]["CONFIG"], "prefix": "test-cancel"})
        stuck = []
        for steps in range(40):
            receive = asyncio.ensure_future(layer.receive(await layer.new_channel()))
            for _ in range(steps):
                await asyncio.sleep(0)
            receive.cancel()
            done, _ = await asyncio.wait([receive], timeout=1)
            if not done:
                stuck.append(steps)
                # Left alone it would poll forever; this cancellation is delivered.
                receive.cancel()
                await asyncio.wait([receive], timeout=10)
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "hello"})
        message = await asyncio.wait_for(layer.receive(channel), 5)
        await layer.flush()
        return stuck, message

    stuck, message = asyncio.run(sweep())
    assert stuck == []
    assert message == {"type": "hello"}

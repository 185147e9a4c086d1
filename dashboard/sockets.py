"""What an open dashboard socket holds, and what ends it.

Slots. A user holds at most DASHBOARD_MAX_SOCKETS_PER_USER open sockets,
counted across every web process. Each socket holds a slot: a member of a
Redis sorted set per user, its channel name scored with until when the slot
lasts, by Redis's clock. One script drops the expired slots, counts and
takes, so two processes can never both take the last one. A socket renews its
slot with its subscriptions (every events.WATCH_RENEW seconds) and gives it
back when it closes; a process that dies without giving back its sockets'
slots loses them SLOT_SECONDS later.
"""

from django.conf import settings

# Open sockets per user, across every web process, unless settings say otherwise.
DEFAULT_MAX_SOCKETS_PER_USER = 20
# A slot lasts this long unless its socket renews it (every events.WATCH_RENEW seconds).
SLOT_SECONDS = 60

# Drop the user's expired slots; then take (or renew) the slot of socket
# ARGV[1] if it holds one already or fewer than ARGV[2] are held. Returns 1
# if the socket holds its slot for ARGV[3] more seconds, 0 if the user holds
# them all.
_TAKE_SLOT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""


def max_sockets_per_user() -> int:
    return getattr(settings, "DASHBOARD_MAX_SOCKETS_PER_USER", DEFAULT_MAX_SOCKETS_PER_USER)


def slots_key(layer, user_id: int) -> str:
    """Return the Redis key of the slots held by the sockets of the user with `user_id`."""
    return f"{layer.prefix}:dashboard:sockets:{user_id}"


def _connection(layer, key: str):
    """Return the layer's Redis connection that holds `key`, or None for a layer without Redis."""
    if not hasattr(layer, "connection") or not hasattr(layer, "consistent_hash"):
        return None
    return layer.connection(layer.consistent_hash(key))


async def take_slot(layer, user_id: int, channel: str) -> bool:
    """Take or renew the slot of socket `channel`; return False if its user's sockets hold every slot.

    Raises the Redis error if Redis cannot be asked: a socket is then refused,
    never let in uncounted.
    """
    key = slots_key(layer, user_id)
    connection = _connection(layer, key)
    if connection is None:
        return True
    taken = await connection.eval(_TAKE_SLOT, 1, key, channel, max_sockets_per_user(), SLOT_SECONDS)
    return bool(taken)


async def release_slot(layer, user_id: int, channel: str) -> None:
    """Give back the slot of socket `channel`."""
    key = slots_key(layer, user_id)
    connection = _connection(layer, key)
    if connection is not None:
        await connection.zrem(key, channel)


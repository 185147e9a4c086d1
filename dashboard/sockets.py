"""What an open dashboard socket holds, and what ends it.

Slots. A user holds at most DASHBOARD_MAX_SOCKETS_PER_USER open sockets,
counted across every web process. Each socket holds a slot: a member of a
Redis sorted set per user, its channel name scored with until when the slot
lasts, by Redis's clock. One script drops the expired slots, counts and
takes, so two processes can never both take the last one. A socket renews its
slot with its subscriptions (every events.WATCH_RENEW seconds) and gives it
back when it closes; a process that dies without giving back its sockets'
slots loses them SLOT_SECONDS later.

Leaving. A socket that closes hands its groups and its slot to its process's
Leaver and is gone: one task gives them back, socket after socket, so that
however many close at once, leaving takes one connection of the channel
layer's pool. A mass disconnect would otherwise take them all (redis-py
allows 100 per process), and every other command would find none free.

Accounts. A socket is authorized once, at the handshake, for the user its
session names then. Each process checks the users of all its open sockets
every ACCOUNT_RECHECK seconds, in one query, and closes the sockets of a
user who was deleted or deactivated, and the staff sockets of a user who is
no longer staff. One query per process and interval, however many sockets
are open, and it sees every way an account changes: the admin, a queryset
update, SQL, a cascading delete.
"""

import asyncio
import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import Error as DatabaseError

logger = logging.getLogger("dashboard.sockets")

# Open sockets per user, across every web process, unless settings say otherwise.
DEFAULT_MAX_SOCKETS_PER_USER = 20
# A slot lasts this long unless its socket renews it (every events.WATCH_RENEW seconds).
SLOT_SECONDS = 60
# Seconds between two checks of the open sockets' accounts in a process.
ACCOUNT_RECHECK = 2.0
# Seconds after a socket closed during which what it held is tried again
# while Redis refuses; after that, it is left to expire.
RELEASE_TIMEOUT = 10.0
# Seconds one attempt at giving back one socket's groups and slot may take.
RELEASE_ATTEMPT_TIMEOUT = 2.0

# The close codes of a socket ended by a change of its account. The page's
# WebSocket (htmx's ws extension) reconnects after 1012 and not after a code
# of our own: a user who lost the staff role gets a socket with what is left,
# a deactivated or deleted one nothing more.
ACCESS_REVOKED = 4403
ROLE_CHANGED = 1012

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


@dataclass
class _Leaving:
    layer: BaseChannelLayer
    channel: str
    groups: list[str]
    user_id: int | None  # None: it held no slot
    deadline: float
    done: asyncio.Future  # set once given back, or left to expire


class Leaver:
    """Give back the group memberships and slots of one event loop's closed sockets, one socket after the other.

    A command Redis refuses (no connection free in the pool, Redis away) is
    tried again until RELEASE_TIMEOUT seconds after its socket closed. What
    is still held then expires: a slot after SLOT_SECONDS, a membership
    after the layer's group_expiry (a day), a group's watch mark after
    events.WATCH_SECONDS.
    """

    def __init__(self):
        self.pending: deque[_Leaving] = deque()
        self._task: asyncio.Task | None = None

    def add(self, layer, channel: str, groups: list[str], user_id: int | None) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        self.pending.append(_Leaving(layer, channel, list(groups), user_id, time.monotonic() + RELEASE_TIMEOUT, done))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return done

    async def _run(self) -> None:
        failures = 0
        while self.pending:
            leaving = self.pending[0]
            try:
                async with asyncio.timeout(RELEASE_ATTEMPT_TIMEOUT):
                    while leaving.groups:
                        await leaving.layer.group_discard(leaving.groups[0], leaving.channel)
                        leaving.groups.pop(0)
                    if leaving.user_id is not None:
                        await release_slot(leaving.layer, leaving.user_id, leaving.channel)
                        leaving.user_id = None
            except Exception as exc:  # noqa: BLE001 - Redis busy or away: again, until the deadline
                failures += 1
                if time.monotonic() < leaving.deadline:
                    await asyncio.sleep(min(1.0, 0.01 * 2 ** failures))
                    continue
                _warn_now_and_then("a closed dashboard socket left its groups or slot to expire: %r", exc)
            else:
                failures = 0
            self.pending.popleft()
            if not leaving.done.done():
                leaving.done.set_result(None)


_leavers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Leaver]" = weakref.WeakKeyDictionary()


def leave(layer, channel: str, groups: list[str], user_id: int | None) -> asyncio.Future:
    """Have the running loop's Leaver take socket `channel` out of `groups` and give back its slot (of `user_id`).

    Return a future that is done once it did, or left them to expire.
    """
    loop = asyncio.get_running_loop()
    leaver = _leavers.get(loop)
    if leaver is None:
        leaver = _leavers[loop] = Leaver()
    return leaver.add(layer, channel, groups, user_id)


_last_warning = float("-inf")


def _warn_now_and_then(message: str, *args) -> None:
    # A mass disconnect with Redis away would otherwise log one line per socket.
    global _last_warning
    now = time.monotonic()
    if now - _last_warning > 60:
        _last_warning = now
        logger.warning(message, *args)


class AccountWatch:
    """The open sockets of one event loop (a web process), whose accounts are checked every ACCOUNT_RECHECK seconds."""

    def __init__(self):
        # consumer -> (user id, whether the socket was let into the staff group)
        self.sockets: dict = {}
        self._task: asyncio.Task | None = None

    def add(self, consumer, user_id: int, staff: bool) -> None:
        self.sockets[consumer] = (user_id, staff)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def discard(self, consumer) -> None:
        self.sockets.pop(consumer, None)

    async def _run(self) -> None:
        # Ends once no socket is left; add() starts it again. Nothing can run
        # between the check of `self.sockets` and the return, so a socket
        # added meanwhile is never left unwatched.
        while self.sockets:
            await asyncio.sleep(ACCOUNT_RECHECK)
            await self.check()

    async def check(self) -> None:
        """Close the sockets whose user is gone, inactive, or no longer staff for a staff socket."""
        sockets = dict(self.sockets)
        if not sockets:
            return
        try:
            accounts = await database_sync_to_async(_active_accounts)({user_id for user_id, _ in sockets.values()})
        except DatabaseError as exc:
            # The database is away: keep the sockets. Each page re-reads over
            # HTTP, with every permission check, and gets nothing meanwhile.
            logger.warning("could not check the accounts of open dashboard sockets: %s", exc)
            return
        ended = []
        for consumer, (user_id, staff) in sockets.items():
            if consumer not in self.sockets:
                continue  # closed meanwhile
            if user_id not in accounts:
                ended.append(consumer.end(ACCESS_REVOKED))
            elif staff and not accounts[user_id]:
                ended.append(consumer.end(ROLE_CHANGED))
        if ended:
            await asyncio.gather(*ended, return_exceptions=True)


def _active_accounts(user_ids: set[int]) -> dict[int, bool]:
    """Return {user id: is staff} for those of `user_ids` whose account exists and is active."""
    return dict(get_user_model().objects.filter(pk__in=user_ids, is_active=True).values_list("pk", "is_staff"))


_watches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AccountWatch]" = weakref.WeakKeyDictionary()


def account_watch() -> AccountWatch:
    """Return the AccountWatch of the running event loop."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = AccountWatch()
    return watch

"""The dashboard's WebSocket: job events for the signed-in user.

Only a notification path. A message says which jobs changed (or "resync");
the page then re-reads what it shows over HTTP, with the same permission
checks as any request, and does so again after every reconnect.

While it is open, a socket holds its groups, their watch mark (jobs.events),
one of its user's slots and a place in its process's AccountWatch
(dashboard.sockets), and a task that renews the first three. However the
socket ends (the browser closes it or sends a frame that is not JSON, Redis
refuses a command, the server cancels it), the task and the place end with
it, and the groups and the slot go to its process's Leaver, which gives them
back, or they expire.
"""

import asyncio
import json
import logging

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard import sockets
from jobs import events

logger = logging.getLogger("dashboard.consumers")

# A socket whose slot lapsed while every other slot was taken: the page's
# WebSocket reconnects after this code, once one is free.
SLOTS_TAKEN = 1013


class JobEventsConsumer(AsyncWebsocketConsumer):
    user_id: int | None = None
    renewal = None
    account_watch = None
    slot_held = False
    # Set once the socket gave up what it held: nothing is renewed or watched after that.
    left = False
    # Set when the server closed the socket: nothing more is relayed to it.
    ended = False

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the socket ended: a disconnect, an error that kept it
            # from seeing one, a cancellation.
            self._leave()

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accepting refuses the handshake (HTTP 403).
            await self.close()
            return
        self.user_id = user.pk
        # Counted before anything else is held, so a refused socket holds nothing.
        self.slot_held = await sockets.take_slot(self.channel_layer, user.pk, self.channel_name)
        if not self.slot_held:
            # The user's other sockets hold every slot: refused like an anonymous one.
            await self.close()
            return
        # A user hears about their own jobs; staff hear about every job.
        self.groups = [events.user_group(user.pk)]
        if user.is_staff:
            self.groups.append(events.STAFF_GROUP)
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        # Watched only once it is in its groups: a flush that sees the mark
        # sends to a group this socket already receives from.
        await events.watch(self.channel_layer, self.groups)
        self.renewal = asyncio.ensure_future(self._stay_subscribed(user.pk))
        self.account_watch = sockets.account_watch()
        self.account_watch.add(self, user.pk, user.is_staff)
        await self.accept()

    async def websocket_disconnect(self, message):
        left = self._leave()
        if left is not None:
            # Ends once its slot is free for the user's next socket: a page
            # that reloads opens the next one at once. asyncio.wait, unlike
            # wait_for, leaves the Leaver's work alone when it times out.
            await asyncio.wait([left], timeout=sockets.RELEASE_TIMEOUT)
        raise StopConsumer()

    async def end(self, code: int) -> None:
        """Close the socket from the server, with `code`, and give up what it holds."""
        self.ended = True
        if not self.left:
            try:
                await self.close(code)
            finally:
                self._leave()

    def _leave(self) -> asyncio.Future | None:
        """Stop renewing, leave the AccountWatch, and hand the groups and the slot to the Leaver; once.

        Return the Leaver's future for them, if it took any.
        """
        if self.left:
            return None
        self.left = True
        if self.renewal is not None:
            self.renewal.cancel()
        if self.account_watch is not None:
            self.account_watch.discard(self)
        task = asyncio.current_task()
        # A socket the server cancels (it is stopping) leaves them to expire:
        # no task started now would run.
        if (self.groups or self.slot_held) and not (task is not None and task.cancelling()):
            return sockets.leave(self.channel_layer, self.channel_name, self.groups,
                                 self.user_id if self.slot_held else None)
        return None

    async def _stay_subscribed(self, user_id: int):
        # Renew the slot, the group memberships, which the Redis layer
        # otherwise drops after its group_expiry (a day), and the watch mark.
        while True:
            await asyncio.sleep(events.WATCH_RENEW)
            try:
                if not await sockets.take_slot(self.channel_layer, user_id, self.channel_name):
                    # The slot lapsed (Redis lost it, or could not be reached
                    # for a minute) and other sockets took every slot since.
                    # Closed from another task: this one is cancelled by it.
                    self.ending = asyncio.ensure_future(self.end(SLOTS_TAKEN))
                    return
                for group in self.groups:
                    await self.channel_layer.group_add(group, self.channel_name)
                await events.watch(self.channel_layer, self.groups)
            except Exception:  # noqa: BLE001 - Redis away: try again next round; the page re-syncs on reconnect
                logger.warning("could not renew a dashboard subscription", exc_info=True)

    async def dispatch(self, message):
        # Channels closes stale database connections before every handler, a
        # hop to a thread and back. A notification is relayed without touching
        # the database, and with many pages open they are most of what arrives.
        if message["type"] == events.MESSAGE_TYPE:
            await self.jobs_changed(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data=None, bytes_data=None):
        """Ignore every frame the browser sends, JSON or not: the socket only carries events to it."""

    async def jobs_changed(self, event):
        if not self.ended:
            message = {key: event[key] for key in ("jobs", "resync", "created", "workers")}
            await self.send(text_data=json.dumps(message))


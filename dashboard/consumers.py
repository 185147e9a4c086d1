"""The dashboard's WebSocket: job events for the signed-in user.

Only a notification path. A message says which jobs changed (or "resync");
the page then re-reads what it shows over HTTP, with the same permission
checks as any request, and does so again after every reconnect.
"""

import asyncio
import logging

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from jobs import events

logger = logging.getLogger("dashboard.consumers")


class JobEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accepting refuses the handshake (HTTP 403).
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
        self.renewal = asyncio.ensure_future(self._stay_subscribed())
        # The base class leaves self.groups again on disconnect.
        await self.accept()

    async def disconnect(self, code):
        renewal = getattr(self, "renewal", None)
        if renewal is not None:
            renewal.cancel()

    async def _stay_subscribed(self):
        # Renew the watch mark, and the group memberships, which the Redis
        # layer otherwise drops after its group_expiry (a day).
        while True:
            await asyncio.sleep(events.WATCH_RENEW)
            try:
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

    async def receive_json(self, content, **kwargs):
        """Ignore what the browser sends: the socket only carries events to it."""

    async def jobs_changed(self, event):
        await self.send_json({key: event[key] for key in ("jobs", "resync", "created", "workers")})

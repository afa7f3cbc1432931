"""The in-process bus: connects the servers of one Python process (and the tests' servers)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from ...core.envelopes import Envelope, MemberJoined
from ...core.membership import Membership
from .base import Handler


class LocalPubSub:
    """A bus between the servers of one process. Delivery is in order and never blocks a publisher."""

    def __init__(self) -> None:
        self._handlers: dict[str, dict[str, Handler]] = defaultdict(dict)
        # room -> node -> its members: what a room opening on another server needs.
        self._members: dict[str, dict[str, Membership]] = defaultdict(dict)

    async def publish(self, room: str, envelope: Envelope) -> None:
        self._track(room, envelope)
        for node, handler in list(self._handlers.get(room, {}).items()):
            if node != envelope.node:
                result = handler(envelope)
                if asyncio.iscoroutine(result):
                    await result

    async def subscribe(self, room: str, node: str, handler: Handler) -> None:
        self._handlers[room][node] = handler
        for owner, members in list(self._members.get(room, {}).items()):
            if owner != node:
                for member in members:
                    result = handler(MemberJoined(member.info(), owner))
                    if asyncio.iscoroutine(result):
                        await result

    def _track(self, room: str, envelope: Envelope) -> None:
        if envelope.connection_id is None:
            return
        nodes = self._members[room]
        members = nodes.setdefault(envelope.node, Membership())
        envelope.track(members)
        if not members:
            del nodes[envelope.node]
        if not nodes:
            del self._members[room]

    async def unsubscribe(self, room: str, node: str) -> None:
        handlers = self._handlers.get(room)
        if handlers is not None:
            handlers.pop(node, None)
            if not handlers:
                del self._handlers[room]

    def status(self) -> str | None:
        return None

    async def close(self) -> None:
        self._handlers.clear()
        self._members.clear()

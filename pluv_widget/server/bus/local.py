"""How server processes that share rooms tell each other what happened: the interface and the
in-process bus.

A process publishes every room input it accepted (a member joined, left, patched presence,
sent an event; a committed storage update) on the room's channel, and feeds what the other
processes publish into its own room core. One process alone needs no bus: the default
:class:`LocalPubSub` connects the servers of one Python process (which is also how the tests
run several servers without Redis). The Redis adapter implements the same interface.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

#: A published room input (a core ``Mirror`` envelope plus the sender's ``node``): JSON
#: values, except the ``update`` of an ``update`` envelope, which is bytes. A bus may also hand
#: its subscribers ``{"kind": "resync", "reseed": bool}`` of its own: it may have lost envelopes
#: (a reconnect) or the shared store may have lost data, so the room should re-seed the store
#: with what it holds (``reseed``) and merge what the store holds.
Envelope = dict[str, Any]
Handler = Callable[[Envelope], Awaitable[None] | None]


class PubSub(Protocol):
    """The fan-out interface, the shape of pluv's ``AbstractPubSub``."""

    async def publish(self, room: str, envelope: Envelope) -> None: ...

    async def subscribe(self, room: str, node: str, handler: Handler) -> None:
        """Deliver the room's envelopes from *other* nodes to ``handler``, in publish order.

        Before returning, ``handler`` gets a ``join`` envelope for every member other nodes
        have in the room now, so a room opening on this node knows everyone at once.
        """
        ...

    async def unsubscribe(self, room: str, node: str) -> None: ...

    def status(self) -> str | None:
        """The shared backend's state for ``/health``: None for an in-process bus, else
        ``ok``, ``connecting``, ``unavailable`` or ``recovering`` (optional: callers fall back to
        None)."""
        ...

    async def close(self) -> None: ...


class LocalPubSub:
    """A bus between the servers of one process. Delivery is in order and never blocks a publisher."""

    def __init__(self) -> None:
        self._handlers: dict[str, dict[str, Handler]] = defaultdict(dict)
        # room -> connection id -> (node, member): what a room opening on another server needs.
        self._members: dict[str, dict[str, tuple[str, dict[str, Any]]]] = defaultdict(dict)

    async def publish(self, room: str, envelope: Envelope) -> None:
        self._track(room, envelope)
        for node, handler in list(self._handlers.get(room, {}).items()):
            if node != envelope.get("node"):
                result = handler(envelope)
                if asyncio.iscoroutine(result):
                    await result

    async def subscribe(self, room: str, node: str, handler: Handler) -> None:
        self._handlers[room][node] = handler
        for owner, member in list(self._members.get(room, {}).values()):
            if owner != node:
                result = handler({"kind": "join", "member": dict(member), "node": owner})
                if asyncio.iscoroutine(result):
                    await result

    def _track(self, room: str, envelope: Envelope) -> None:
        kind, members = envelope.get("kind"), self._members[room]
        if kind == "join":
            member = envelope["member"]
            members[member["connection_id"]] = (envelope.get("node", ""), dict(member))
        elif kind == "leave":
            members.pop(envelope["connection_id"], None)
        elif kind == "presence" and envelope["connection_id"] in members:
            member = members[envelope["connection_id"]][1]
            member["presence"] = {**member["presence"], **envelope["patch"]}
        if not members:
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

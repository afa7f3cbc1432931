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
#: values, except the ``update`` of an ``update`` envelope, which is bytes.
Envelope = dict[str, Any]
Handler = Callable[[Envelope], Awaitable[None] | None]


class PubSub(Protocol):
    """The fan-out interface, the shape of pluv's ``AbstractPubSub``."""

    async def publish(self, room: str, envelope: Envelope) -> None: ...

    async def subscribe(self, room: str, node: str, handler: Handler) -> None:
        """Deliver the room's envelopes from *other* nodes to ``handler``, in publish order."""
        ...

    async def unsubscribe(self, room: str, node: str) -> None: ...

    async def close(self) -> None: ...


class LocalPubSub:
    """A bus between the servers of one process. Delivery is in order and never blocks a publisher."""

    def __init__(self) -> None:
        self._handlers: dict[str, dict[str, Handler]] = defaultdict(dict)

    async def publish(self, room: str, envelope: Envelope) -> None:
        for node, handler in list(self._handlers.get(room, {}).items()):
            if node != envelope.get("node"):
                result = handler(envelope)
                if asyncio.iscoroutine(result):
                    await result

    async def subscribe(self, room: str, node: str, handler: Handler) -> None:
        self._handlers[room][node] = handler

    async def unsubscribe(self, room: str, node: str) -> None:
        handlers = self._handlers.get(room)
        if handlers is not None:
            handlers.pop(node, None)
            if not handlers:
                del self._handlers[room]

    async def close(self) -> None:
        self._handlers.clear()

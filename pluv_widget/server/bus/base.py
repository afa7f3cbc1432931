"""How server processes that share rooms tell each other what happened: the interface.

A process publishes every room input it accepted (an :data:`~pluv_widget.core.envelopes.Envelope`:
a member joined, left, patched presence, sent an event; a committed storage update) on the
room's channel, and feeds what the other processes publish into its own room core. One process
alone needs no shared bus: the default :class:`~.local.LocalPubSub` connects the servers of one
Python process (which is also how the tests run several servers without Redis). The Redis bus
implements the same interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ...core.envelopes import Envelope

#: Receives a room's envelopes from other nodes. A bus may also hand its subscribers a
#: ``ResyncRequested`` of its own: it may have lost envelopes (a reconnect) or the shared store
#: may have lost data.
Handler = Callable[[Envelope], Awaitable[None] | None]


class PubSub(Protocol):
    """The fan-out interface, the shape of pluv's ``AbstractPubSub``."""

    async def publish(self, room: str, envelope: Envelope) -> None:
        """Publish ``envelope`` (stamped with its sender's ``node``) to the room's other nodes."""
        ...

    async def subscribe(self, room: str, node: str, handler: Handler) -> None:
        """Deliver the room's envelopes from *other* nodes to ``handler``, in publish order.

        Before returning, ``handler`` gets a ``MemberJoined`` for every member other nodes
        have in the room now, so a room opening on this node knows everyone at once.
        """
        ...

    async def unsubscribe(self, room: str, node: str) -> None: ...

    def status(self) -> str | None:
        """The shared backend's state for ``/health``: None for an in-process bus, else
        ``ok``, ``connecting``, ``unavailable`` or ``recovering``."""
        ...

    async def close(self) -> None: ...

"""How a frame leaves the server: encoded once, written to every recipient, never waited on.

``websockets.broadcast`` frames the message again for each connection (a ``Frame`` object,
its header, the protocol's write list: ~1.2 µs a recipient, about a tenth of what delivering a
presence update costs). A server frame is the same bytes for every connection that negotiated
no extension (the server offers none: compression is off), so :func:`send` serializes it once
and hands those bytes to each transport — what websockets itself would write, in the same
order, since it writes a connection's frames synchronously and its write list is empty between
them (the server never sends a fragmented message). A connection this does not hold for (an
extension, a frame already queued, a socket of another server) gets ``websockets.broadcast``.
Either way the slow-consumer guard (:func:`~pluv_widget.server.guard.may_send`) is asked
first: a connection that does not read is cut, not fed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from .guard import GuardedConnection, may_send

# websockets' sans-I/O protocol holds the bytes it has not yet handed to the transport in
# ``writes`` (since 10.0). Should a release rename it, every frame takes websockets.broadcast:
# correct, only slower.
_WRITES_VISIBLE = hasattr(ServerProtocol(), "writes")

log = logging.getLogger("pluv_widget.server")


def _wire(frame: str | bytes) -> bytes:
    """``frame`` as a server's unmasked, extension-free WebSocket frame."""
    if isinstance(frame, str):
        return Frame(Opcode.TEXT, frame.encode()).serialize(mask=False, extensions=[])
    return Frame(Opcode.BINARY, frame).serialize(mask=False, extensions=[])


def send(sockets: Iterable[ServerConnection], frame: str | bytes) -> None:
    """Queue ``frame`` for each of ``sockets`` that may take it; never blocks, never raises."""
    wire, size = _wire(frame), len(frame)  # size: the guard's measure (characters for text)
    for socket in sockets:
        if not may_send(socket, size):
            continue
        protocol = socket.protocol
        # may_send has seen a guarded connection OPEN
        guarded = _WRITES_VISIBLE and isinstance(socket, GuardedConnection)
        if guarded and not protocol.writes and not protocol.extensions:
            try:
                socket.transport.write(wire)
            except Exception as error:  # as websockets.broadcast does: one bad transport spoils no one else's
                log.warning("skipped a send to a connection: %s", error)
        else:
            broadcast([socket], frame)

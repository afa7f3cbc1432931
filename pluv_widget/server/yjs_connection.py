"""Stock Yjs clients: ``ws://host:port/yjs/<room>`` speaks the y-websocket protocol.

A y-websocket provider (npm ``y-websocket``), pycrdt's ``Provider`` or any editor binding over
them joins the same room document as pluv clients, under the same rules:

* **Auth** — ``?token=`` as for a pluv socket (refused with the same close codes, 4001-4004,
  4009 for a removed user, 4008 over ``max_connections_per_user``). There is no ``join``
  message: the member is made at connect from the token (without auth: ``?name=`` or
  ``guest``, with every power, like any connection to a zero-config server).
* **Storage** — sync frames (type 0) go to the room core unchanged: every update is proven by
  ``ServerRoom.propose`` like a pluv client's. A sync step 1 is answered with a step 2 and the
  server's own step 1. The protected document (type 8) reaches only a connection that asks for
  it, which a stock client never does. Refusals are ``error`` text frames for pluv clients; a
  Yjs client gets no text frame, so a refused update is simply dropped there.
* **Read-only** — an observer, a muted user, a student in a locked room: y-protocols'
  *permission denied* at connect (and again when a write is dropped after a change of
  rights); their writes are dropped before the core sees them. A stock client keeps its
  refused edits locally: it diverges from the room until it reloads.
* **Awareness ↔ presence** — a connection is bound to the first awareness client id it
  announces; entries for any other id are dropped. Its awareness state becomes the member's
  presence (capped at ``Limits.max_presence_bytes`` like any presence), with ``user.name``
  set from the token whatever the client sent. Every other member appears as an awareness
  state (its presence, ``user.name`` its name) under a stable id (a Yjs member's own, a pluv
  member's derived from its connection id), renewed every 15 s (y-protocols forgets a state
  after 30 s, and y-websocket reconnects after 30 s without a message) and set to ``null``
  when the member leaves.
* **Limits** — the pluv socket's pacing (``max_messages_per_s``, ``max_bytes_per_s``), frame
  size and slow-consumer guard. Malformed frames are dropped; the connection stays open.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..core import Member
from ..core.permissions import write_refusal
from ..protocol import EMPTY_UPDATE, TEACHER, ProtocolError, SyncStep, decode_sync
from ..protocol.awareness import (
    AWARENESS,
    AWARENESS_RENEW_S,
    QUERY_AWARENESS,
    SYNC,
    AwarenessEntry,
    decode_awareness,
    derived_client_id,
    encode_awareness,
    message_type,
    permission_denied,
    with_user_name,
)
from ..protocol.sync import PROTECTED_MESSAGE
from . import outbound
from .names import BadNameError, normalize_name

if TYPE_CHECKING:
    from .connection import ConnectionHandler
    from .live_room import LiveRoom

log = logging.getLogger("pluv_widget.server")

#: A name for a Yjs client of a server without auth that gave no usable ``?name=``.
GUEST = "guest"
#: An awareness state's JSON may be this many times ``max_presence_bytes`` before it is parsed
#: (whitespace and escapes shrink when the presence is re-encoded; the cap itself is the core's).
STATE_PARSE_FACTOR = 4


def display_name(user: dict[str, Any]) -> str:
    """What Yjs clients show for a member: its user's name (``guest`` when it has none)."""
    name = user.get("name")
    return name if isinstance(name, str) and name else GUEST


class YjsPeer:
    """One Yjs connection in its room: what it has been told of the others' awareness, and what
    it is bound to. Lives on the room's loop; sends with the room's slow-consumer guard."""

    def __init__(self, room: LiveRoom, socket: ServerConnection, connection_id: str, user: dict[str, Any]) -> None:
        self.room = room
        self.socket = socket
        self.connection_id = connection_id
        self.name = display_name(user)
        self.user_id = str(user["id"])
        #: The awareness client id this connection announced first (None: none yet).
        self.client_id: int | None = None
        self._sent: dict[str, tuple[int, int]] = {}  # member connection id -> (awareness id, touched)
        self._clocks: dict[int, int] = {}  # awareness id -> the last clock sent for it
        self._flush: asyncio.Handle | None = None
        self._denied = False  # permission denied was sent, and the member is still read-only

    # -- the others, as awareness -----------------------------------------------------------

    def changed(self) -> None:
        """Members or presence may have changed: send the difference soon (coalesced)."""
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self.flush)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def _clock(self, client_id: int) -> int:
        # Wall-clock milliseconds, always increasing: a client that reconnects keeps the clocks
        # it saw (y-protocols forgets states, not clocks), and older ones would be ignored.
        clock = max(self._clocks.get(client_id, 0) + 1, int(time.time() * 1000))
        self._clocks[client_id] = clock
        return clock

    def _awareness_id(self, member: Member, owners: dict[int, str]) -> int | None:
        peer = self.room.yjs_peers.get(member.connection_id)
        if peer is not None:
            if peer.client_id is None:
                return None  # a Yjs client that announced no awareness yet
            if owners.get(peer.client_id) == member.connection_id and peer.client_id != self.client_id:
                return peer.client_id
        return derived_client_id(member.connection_id)

    def flush(self, *, renew: bool = False) -> None:
        """Send the awareness entries that changed since the last flush (``renew``: all of them,
        with new clocks; an empty message when there are none, which still counts as traffic)."""
        self._flush = None
        owners: dict[int, str] = {}  # a client id shown as itself once: its first local claimant's
        for peer in self.room.yjs_peers.values():
            if peer.client_id is not None:
                owners.setdefault(peer.client_id, peer.connection_id)
        entries: list[AwarenessEntry] = []
        shown: dict[str, tuple[int, int]] = {}
        for member in self.room.core.members:
            if member.connection_id == self.connection_id:
                continue
            client_id = self._awareness_id(member, owners)
            if client_id is None:
                continue
            before = self._sent.get(member.connection_id)
            if before is not None and before[0] != client_id:
                entries.append(AwarenessEntry(before[0], self._clock(before[0]), None))
            now = (client_id, member.touched)
            if renew or before != now:
                state = with_user_name(member.presence, display_name(member.user))
                entries.append(AwarenessEntry(client_id, self._clock(client_id), state))
            shown[member.connection_id] = now
        for connection_id, (client_id, _) in self._sent.items():
            if connection_id not in shown:
                entries.append(AwarenessEntry(client_id, self._clock(client_id), None))
        self._sent = shown
        if entries or renew:
            self.send(encode_awareness(entries))

    def send(self, frame: bytes) -> None:
        if self.connection_id in self.room.sockets:
            outbound.send([self.socket], frame)

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(AWARENESS_RENEW_S)
            self.flush(renew=True)

    # -- rights ------------------------------------------------------------------------------

    def may_write(self) -> bool:
        """Whether this member may write now; when not, y-protocols' *permission denied* is
        sent (once, until the member may write again)."""
        core = self.room.core
        refusal = write_refusal(core.role(self.connection_id), self.user_id, core.rules)
        if refusal is None:
            self._denied = False
            return True
        if not self._denied:
            self._denied = True
            self.send(permission_denied(f"{refusal.code}: {refusal.message}"))
        return False

    # -- frames from the client --------------------------------------------------------------

    async def receive(self, connection_id: str, frame: str | bytes) -> None:
        """One frame of this connection (paced by the connection handler)."""
        if not isinstance(frame, bytes):
            log.debug("room %s: dropped a text frame from Yjs connection %s", self.room.name, connection_id)
            return
        try:
            kind = message_type(frame)
        except ValueError:
            return
        if kind in (SYNC, PROTECTED_MESSAGE):
            await self._sync(frame)
        elif kind == AWARENESS:
            await self._awareness(frame)
        elif kind == QUERY_AWARENESS:
            self.flush(renew=True)
        # auth messages and unknown types: nothing to do

    async def _sync(self, frame: bytes) -> None:
        try:
            message = decode_sync(frame)
        except ValueError:
            return
        writes = message.step != SyncStep.STEP1 and message.payload != EMPTY_UPDATE and not message.protected
        if writes and not self.may_write():
            return  # dropped before the core: the client is told once (permission denied)
        await self.room.receive(self.connection_id, frame)

    async def _awareness(self, frame: bytes) -> None:
        limit = self.room.core.limits.max_presence_bytes * STATE_PARSE_FACTOR
        try:
            entries = decode_awareness(frame, limit)
        except ProtocolError as error:
            log.debug("room %s: dropped an awareness message of %s: %s", self.room.name, self.connection_id, error)
            return
        for entry in entries:
            if self.client_id is None:
                self.client_id = entry.client_id
                self._announce()
            if entry.client_id != self.client_id:
                continue  # only its own state: another id is someone else's
            member = self.room.core.members.get(self.connection_id)
            if member is None:
                return
            presence = with_user_name(entry.state, self.name) if entry.state is not None else {}
            patch = {**{key: None for key in member.presence if key not in presence}, **presence}
            if {**member.presence, **patch} != member.presence:
                await self.room.patch_presence(self.connection_id, patch)

    def _announce(self) -> None:
        """The connection is bound: the other Yjs clients can now show it under its own id."""
        for connection_id, peer in self.room.yjs_peers.items():
            if connection_id != self.connection_id:
                peer.changed()


class YjsConnectionHandler:
    """The ``/yjs/<room>`` half of :class:`~.connection.ConnectionHandler` (whose config, rooms,
    gate, per-user counts and pacing it shares)."""

    def __init__(self, owner: ConnectionHandler) -> None:
        self.owner = owner

    async def __call__(self, socket: ServerConnection, name: str, token: str | None, query_name: str | None) -> None:
        owner = self.owner
        connection_id = secrets.token_urlsafe(9)
        user = await owner.admit(socket, name, token,
                                 {"id": connection_id, "name": _guest_name(query_name), "role": TEACHER})
        if user is None:
            return
        async with owner.slot(socket, name, user) as admitted:
            if not admitted:
                return
            async with owner.in_room(socket, name, connection_id, user, None) as room:
                if room is None:
                    return
                peer = YjsPeer(room, socket, connection_id, user)
                room.yjs_peers[connection_id] = peer
                renewing = asyncio.create_task(peer.renew_forever())
                try:
                    await room.join(socket, Member(connection_id, user, {}), None)
                    log.info("room %s: Yjs connection %s joined (user %s)", name, connection_id, user["id"])
                    peer.may_write()  # read-only: permission denied, now
                    await owner._serve(socket, room, connection_id, receive=peer.receive)
                except ConnectionClosed:
                    pass
                finally:
                    renewing.cancel()
                    peer.close()
                    room.yjs_peers.pop(connection_id, None)


def _guest_name(raw: str | None) -> str:
    try:
        return normalize_name(raw) if raw else GUEST
    except BadNameError:
        return GUEST

"""Protocol adapters: how the load generator speaks to each system.

The load generator (``bench/loadgen.py``) decides *what* every client sends and when; an
adapter only decides *how* a connection joins, how a storage update and a presence state are
framed, and how received frames are decoded. Every adapter does the same work a real client
of its system would do — received storage updates are applied to the client's ``pycrdt.Doc``,
received presence is decoded down to the sender and its state, JSON by every adapter with the
parser pluv-widget's own client uses (pydantic-core's ``from_json``) — so client CPU is
comparable across systems.

Adapters:

* ``pluv`` — this project's protocol (``pluv_widget/protocol/``): a JSON ``join``, JSON
  presence, y-websocket binary sync frames for storage.
* ``yjs`` — the y-websocket protocol that @y/websocket-server and pycrdt-websocket speak:
  binary sync messages and awareness messages, built with pycrdt.
* ``relay`` — for the raw relay, which understands nothing: storage travels as the same
  y-websocket sync frames (a peer that holds the document answers a newcomer's step 1),
  presence as small JSON text frames carrying the sender's id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("bench.adapters")

Frame = str | bytes
SYNC, AWARENESS = pycrdt.YMessageType.SYNC, pycrdt.YMessageType.AWARENESS
STEP1, STEP2, UPDATE = (
    pycrdt.YSyncMessageType.SYNC_STEP1,
    pycrdt.YSyncMessageType.SYNC_STEP2,
    pycrdt.YSyncMessageType.SYNC_UPDATE,
)


class Sink(Protocol):
    """What a workload wants to hear about a client's incoming traffic."""

    def storage(self, client: Client) -> None:
        """A storage update (or sync step 2) was applied to ``client.doc``."""

    def presence(self, client: Client, sender: Any, state: dict[str, Any]) -> None:
        """Another connection's presence arrived (never the client's own echo)."""

    def members(self, client: Client) -> None:
        """``client.others`` changed (adapters whose protocol has a member list)."""


class NullSink:
    def storage(self, client: Client) -> None:
        pass

    def presence(self, client: Client, sender: Any, state: dict[str, Any]) -> None:
        pass

    def members(self, client: Client) -> None:
        pass


class Client:
    """One WebSocket connection to one room of a system, with a background reader.

    ``connect()`` returns once the protocol's join and initial storage sync are complete, so
    that a workload's clock never includes a half-joined client. Setting ``quiet`` makes the
    reader drop frames without decoding them (idle connections in the memory workload).
    ``source``: the local address to connect from (127.0.0.x: another "machine", so that a
    thousand clients are not one address's worth of sockets). ``others``: the connection ids
    the client knows are in the room, for a protocol that has a member list (None otherwise).
    ``announce``: a presence state to enter with, as a y-websocket provider sets its awareness
    state on open; a Yjs client then also keeps ``others`` (who has a state).
    """

    name: ClassVar[str]
    others: set[Any] | None = None

    def __init__(
        self,
        base_url: str,
        room: str,
        *,
        sink: Sink | None = None,
        doc: pycrdt.Doc[Any] | None = None,
        compression: str | None = "deflate",
        source: str | None = None,
        announce: dict[str, Any] | None = None,
    ) -> None:
        self.url = f"{base_url}/{room}"
        self.source = source
        self.announce = announce
        self.room = room
        self.sink: Sink = sink or NullSink()
        self.doc = doc if doc is not None else pycrdt.Doc()
        self.compression = compression
        self.quiet = False
        self.errors: list[str] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self, timeout: float = 60.0) -> None:
        self._ws = await connect(
            self.url,
            compression=self.compression,
            max_size=None,
            ping_interval=None,
            open_timeout=timeout,
            close_timeout=2,
            **({"local_addr": (self.source, 0)} if self.source else {}),
        )
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        await asyncio.wait_for(self.handshake(), timeout)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()

    async def send(self, frame: Frame) -> None:
        assert self._ws is not None
        await self._ws.send(frame)

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                if not self.quiet:
                    self.on_frame(frame)
        except ConnectionClosed:
            pass
        except Exception as error:  # a decoding bug must show, not hang the workload
            log.exception("reader of %s failed", self.url)
            self.errors.append(repr(error))

    # -- what an adapter defines -------------------------------------------------------------

    async def handshake(self) -> None:
        """Join the room and finish the initial storage sync."""
        raise NotImplementedError

    def on_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    def update_frame(self, update: bytes) -> Frame:
        """The frame that carries one local storage update to the room."""
        return pycrdt.create_update_message(update)

    def presence_frame(self, state: dict[str, Any]) -> Frame:
        """The frame that sets this client's presence to ``state``."""
        raise NotImplementedError

    # -- y-websocket sync, shared by all three adapters --------------------------------------

    def on_sync(self, frame: bytes) -> None:
        """Handle a binary y-websocket sync message: answer a step 1, apply a step 2 / update."""
        step = frame[1]
        reply = pycrdt.handle_sync_message(frame[1:], self.doc)
        if reply is not None:
            self.answer_step1(reply)
            return
        if step == STEP2:
            self._synced.set()
        self.sink.storage(self)

    def answer_step1(self, reply: bytes) -> None:
        assert self._ws is not None
        asyncio.get_running_loop().create_task(self._send_quietly(reply))

    async def _send_quietly(self, frame: Frame) -> None:
        try:
            await self.send(frame)
        except ConnectionClosed:
            pass


def adapter(name: str) -> type[Client]:
    """The client class for an adapter name (``pluv``, ``yjs``, ``relay``)."""
    from .pluv import PluvClient
    from .relay import RelayClient
    from .yjs import YjsClient

    classes: dict[str, type[Client]] = {"pluv": PluvClient, "yjs": YjsClient, "relay": RelayClient}
    return classes[name]


Factory = Callable[..., Client]

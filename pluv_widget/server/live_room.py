"""A room as this server process runs it: the pure core, its local sockets, and the I/O around it.

This is the adapter that carries out the core's actions: it sends frames with
``websockets.broadcast`` (one encoded frame for any number of recipients), persists storage
updates before anyone sees them (group commit: updates that arrive while a commit is in flight
are merged and committed together, then relayed as one frame), compacts the stored history,
runs procedures and hooks, and mirrors every accepted input to other processes over pub/sub.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pycrdt
import websockets
from pydantic import BaseModel, ValidationError
from websockets.asyncio.server import ServerConnection

from .. import protocol
from ..core import Action, Commit, Invoke, Member, Mirror, RoomCore, Send
from ..crdt import untyped_to_json
from ..protocol import ErrorCode
from .io import Context, call_hook
from .persistence import StorageUnavailableError
from .pubsub import Envelope

if TYPE_CHECKING:
    from .app import RoomServer

log = logging.getLogger("pluv_widget.server")

#: Compact once the stored tail holds this many updates, or more bytes than the snapshot.
COMPACT_AFTER_UPDATES = 500
COMPACT_MIN_TAIL_BYTES = 64 * 1024


class LiveRoom:
    def __init__(self, name: str, server: RoomServer) -> None:
        self.name = name
        self.server = server
        self.io = server.io
        self.core = RoomCore(name, limits=self.io.limits, procedures=self.io.procedures)
        self.sockets: dict[str, ServerConnection] = {}
        self.holders = 0  # connections and server calls using the room; at 0 it is closed
        self.metadata: dict[str, Any] = {}
        self._pending: list[Commit] = []
        self._held: dict[str, list[str | bytes]] = {}  # frames for members still joining
        self._flushing: asyncio.Task[None] | None = None
        self._storage_lock = asyncio.Lock()
        self._stored_updates = 0
        self._tail_bytes = 0
        self._snapshot_bytes = 0

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Start hearing the other processes (and learn their members), then load the storage.

        In that order: an update another process commits meanwhile is in the load or arrives by
        pub/sub (or both: applying it twice changes nothing), never in neither.
        """
        await self.server.pubsub.subscribe(self.name, self.server.node, self._on_envelope)
        try:
            await self._load_stored()
        except BaseException:
            await self.server.pubsub.unsubscribe(self.name, self.server.node)
            raise
        self._snapshot_bytes = self.core.storage_bytes

    async def _load_stored(self) -> None:
        updates = await self.server.persistence.load(self.name)
        self.core.load(updates)
        self._stored_updates = len(updates)

    async def close(self) -> None:
        """Finish pending commits and stop hearing other processes (the room is empty here)."""
        await self.flushed()
        await self.server.pubsub.unsubscribe(self.name, self.server.node)
        await call_hook(self.io.on_room_destroyed, self.name)
        log.info("room %s closed", self.name)

    async def flushed(self) -> None:
        while self._flushing is not None:
            await asyncio.shield(self._flushing)

    # -- members ----------------------------------------------------------------------------

    async def offer_initial_storage(self, update: bytes) -> None:
        """Make ``update`` the room's storage if it has none yet: exactly once, ever."""
        async with self._storage_lock:
            if self.core.has_storage:
                return
            if await self.server.persistence.claim_initial(self.name, update):
                self.core.load([update])
                self._stored_updates = 1
                self._snapshot_bytes = len(update)
                await self._publish({"kind": "update", "update": update})
                log.info("room %s: initial storage applied (%d bytes)", self.name, len(update))
            else:
                await self._load_stored()  # another process won the claim: its storage is the room's

    async def join(self, socket: ServerConnection, member: Member, metadata: Any) -> None:
        self.sockets[member.connection_id] = socket
        self.metadata[member.connection_id] = metadata
        # The joiner's frames (its welcome first) wait until its join is published: with a
        # shared bus that registers it everywhere, so once its enter() returns, anyone entering
        # on any process has it in their first snapshot.
        self._held[member.connection_id] = []
        try:
            await self._run(self.core.join(member))
        finally:
            held = self._held.pop(member.connection_id)
            for frame in held:
                websockets.broadcast([socket], frame)
        await call_hook(self.io.on_user_connected, self._context(member.connection_id))

    async def leave(self, connection_id: str) -> None:
        context = self._context(connection_id)
        self.sockets.pop(connection_id, None)
        self.metadata.pop(connection_id, None)
        await self._run(self.core.leave(connection_id))
        await call_hook(self.io.on_user_disconnected, context)

    # -- input from local sockets -----------------------------------------------------------

    async def receive(self, connection_id: str, frame: str | bytes) -> None:
        if isinstance(frame, str):
            await self._run(self.core.receive_text(connection_id, frame))
        else:
            await self._run(self.core.receive_binary(connection_id, frame))

    async def _invoke(self, call: Invoke) -> None:
        procedure = self.io.procedures[call.event]
        try:
            data = procedure.input.model_validate(call.data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, problem['loc'])) or 'input'}: {problem['msg']}" for problem in error.errors()
            )
            self.send_error(
                call.connection_id, ErrorCode.INVALID_INPUT, f"invalid input for {call.event!r}: {problems}"
            )
            return
        outputs: Any = {call.event: data}
        if procedure.handler is not None:
            try:
                outputs = procedure.handler(data, self._context(call.connection_id))
                if asyncio.iscoroutine(outputs):
                    outputs = await outputs
            except Exception as error:
                log.exception("procedure %s failed", call.event)
                self.send_error(call.connection_id, ErrorCode.PROCEDURE_FAILED, f"{call.event!r} failed: {error}")
                return
        for event, payload in (outputs or {}).items():
            if isinstance(payload, BaseModel):
                payload = payload.model_dump(mode="json")
            await self.emit(event, payload, sender=call.connection_id)

    async def emit(self, event: str, data: Any, *, sender: str | None = None) -> None:
        """Broadcast ``event`` to the whole room, here and on other processes."""
        await self._run(self.core.emit(event, data, sender=sender))

    # -- storage ----------------------------------------------------------------------------

    def _enqueue(self, commit: Commit) -> None:
        self._pending.append(commit)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                parts = [commit.update for commit in batch]
                update = parts[0] if len(parts) == 1 else pycrdt.merge_updates(*parts)
                try:
                    await self.server.persistence.append(self.name, update)
                except Exception as error:
                    log.exception("room %s: could not persist an update", self.name)
                    self.core.release(sum(map(len, parts)))
                    for commit in batch:
                        self.send_error(
                            commit.connection_id,
                            ErrorCode.STORAGE_REJECTED,
                            f"the server could not store the update: {error}",
                        )
                    continue
                senders = [commit.connection_id for commit in batch if commit.connection_id]
                await self._run(self.core.commit(update, senders, released=sum(map(len, parts)), parts=parts))
                self._stored_updates += 1
                self._tail_bytes += len(update)
                if self.io.on_storage_updated is not None:
                    await call_hook(self.io.on_storage_updated, self.name, self.core.doc)
                await self._maybe_compact()
        finally:
            self._flushing = None

    async def _maybe_compact(self) -> None:
        if self._stored_updates < 2:
            return
        if self._stored_updates < COMPACT_AFTER_UPDATES and self._tail_bytes < max(
            COMPACT_MIN_TAIL_BYTES, self._snapshot_bytes
        ):
            return
        snapshot = self.core.doc.get_update()
        await self.server.persistence.compact(self.name, snapshot, self._stored_updates)
        self.core.compacted(len(snapshot))
        self._stored_updates, self._tail_bytes, self._snapshot_bytes = 1, 0, len(snapshot)

    async def update_storage(self, edit: Callable[[pycrdt.Doc[Any]], Awaitable[None] | None]) -> None:
        copy: pycrdt.Doc[Any] = pycrdt.Doc()
        copy.apply_update(self.core.doc.get_update())
        before = copy.get_state()
        result = edit(copy)
        if asyncio.iscoroutine(result):
            await result
        update = copy.get_update(before)
        if update != b"\x00\x00":
            self._enqueue(Commit(update, ""))
            await self.flushed()

    async def resync(self, *, reseed: bool) -> None:
        """Converge with the shared store after the bus lost envelopes or the store lost data.

        ``reseed``: first store and publish everything this process holds (Redis restarted
        empty, or this process kept commits in memory during an outage). Then merge what the
        store holds that this process missed, relaying only that to the local connections.
        """
        persistence = self.server.persistence
        try:
            async with self._storage_lock:
                await self.flushed()
                if reseed and self.core.has_storage:
                    snapshot = self.core.doc.get_update()
                    await persistence.append(self.name, snapshot)
                    self._stored_updates += 1
                    await self._publish({"kind": "update", "update": snapshot})
                stored: pycrdt.Doc[Any] = pycrdt.Doc()
                for update in await persistence.load(self.name):
                    stored.apply_update(update)
                missing = stored.get_update(self.core.doc.get_state())
                if missing != b"\x00\x00":
                    await self._run(self.core.commit(missing))
        except StorageUnavailableError as error:
            log.warning("room %s: resynchronising storage failed (%s); the next recovery retries", self.name, error)
        except Exception:
            log.exception("room %s: resynchronising storage failed; the next recovery retries", self.name)

    def storage_json(self) -> dict[str, Any]:
        return untyped_to_json(self.core.doc.get_update(), list(self.core.doc.keys()))

    # -- other processes --------------------------------------------------------------------

    async def _publish(self, envelope: Envelope) -> None:
        envelope["node"] = self.server.node
        try:
            await self.server.pubsub.publish(self.name, envelope)
        except Exception:
            log.warning("room %s: pub/sub publish failed; serving local connections only", self.name)

    async def _on_envelope(self, envelope: Envelope) -> None:
        if envelope.get("kind") == "resync":  # from the bus itself: see pubsub.Envelope
            await self.resync(reseed=bool(envelope.get("reseed")))
            return
        await self._run(self.core.apply_envelope(envelope))

    # -- output -----------------------------------------------------------------------------

    async def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action)
            elif isinstance(action, Commit):
                self._enqueue(action)
            elif isinstance(action, Mirror):
                await self._publish(dict(action.envelope))
            else:
                await self._invoke(action)

    def _send(self, send: Send) -> None:
        if send.to is not None:
            recipients = [c for c in send.to if c in self.sockets]
        else:
            recipients = [c for c in self.sockets if c != send.exclude]
        targets = []
        for connection_id in recipients:
            held = self._held.get(connection_id)
            if held is not None:
                held.append(send.frame)  # still joining: delivered after its welcome
            else:
                targets.append(self.sockets[connection_id])
        if targets:
            websockets.broadcast(targets, send.frame)

    def send_error(self, connection_id: str, code: ErrorCode, text: str) -> None:
        self._send(Send(protocol.encode(protocol.error_message(code, text)), to=(connection_id,)))

    def _context(self, connection_id: str | None) -> Context:
        member = self.core.members.get(connection_id) if connection_id else None
        return Context(
            self.name,
            connection_id,
            member.user if member else None,
            self.metadata.get(connection_id) if connection_id else None,
        )

"""A room as this server process runs it: the pure core, its local sockets, and the I/O around it.

This is the adapter that carries out the core's actions: it sends frames with
:func:`outbound.send` (one encoded frame for any number of recipients), persists storage
updates before anyone sees them (group commit: updates that arrive while a commit is in flight
are merged and committed together, then relayed as one frame), compacts the stored history,
runs procedures and hooks, and mirrors every accepted input to other processes over the bus.

Every storage update is proven by the core before it is queued (see
:mod:`pluv_widget.core.server_room`): this adapter persists what the core queued, in order, and
tells the core how each batch ended — committed (applied and relayed) or failed (refused with the
transient ``storage_unavailable``; dependents refused too). Opening a room quarantines stored
updates that no longer apply (``Persistence.quarantine``), logs them, counts them in
:attr:`LiveRoom.quarantined` (``/health``'s ``quarantined``), and rewrites the room's history
as one snapshot of the good state.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pycrdt
from websockets.asyncio.server import ServerConnection

from ..core import Action, Commit, Invoke, Member, Mirror, Resync, Send, ServerRoom
from ..core.actions import ProtectedEdit
from ..core.envelopes import ClassRecorded, Envelope, MemberJoined, MemberLeft, RulesChanged, StorageUpdated
from ..core.permissions import Refusal, Role, RoomRules
from ..core.server_room import prove, replay, result, update_problem
from ..crdt import untyped_to_json
from ..protocol import EMPTY_UPDATE, PROTOCOL_VERSION, CloseCode, ErrorCode, ErrorMessage
from ..protocol.yupdate import read_state_vector
from . import outbound
from .classroom import LiveClassroom
from .config import ServerConfig
from .hooks import Context, call_hook
from .moderation import BUILTINS, run_builtin
from .procedures import Refused, run_procedure
from .storage.base import StorageUnavailableError

if TYPE_CHECKING:
    from .yjs_connection import YjsPeer

log = logging.getLogger("pluv_widget.server")

#: Compact once the stored tail holds this many updates, or more bytes than the snapshot.
COMPACT_AFTER_UPDATES = 500
COMPACT_MIN_TAIL_BYTES = 64 * 1024

StorageEdit = Callable[[pycrdt.Doc[Any]], Awaitable[None] | None]
#: The store keeps a room's protected document as the room ``<name>#protected`` ('#' is never
#: in a room name).
PROTECTED_SUFFIX = "#protected"
#: Compact the protected document's history after this many updates.
COMPACT_PROTECTED_AFTER = 200


def state_scope(room: str) -> str:
    """The state store's scope (and log) of a room's moderation state."""
    return f"room:{room}"


class LiveRoom:
    """One room on this process: a :class:`ServerRoom` and the sockets of its local members."""

    def __init__(self, name: str, config: ServerConfig, node: str) -> None:
        self.name = name
        self.config = config
        self.node = node
        self.core = ServerRoom(name, limits=config.limits, procedures=config.procedures,
                               protected_roots=config.protected_roots, teacher_only_roots=config.teacher_only_roots,
                               default_role=Role.STUDENT if config.auth else Role.TEACHER, node=node)
        self._protected_lock = asyncio.Lock()
        self._closings: set[asyncio.Future[None]] = set()
        self._protected_updates = 0
        self.sockets: dict[str, ServerConnection] = {}
        #: The sockets of stock Yjs clients (``/yjs/<room>``), also in :attr:`sockets`: they get
        #: binary frames only; a text frame for one tells it the members changed (awareness).
        self.yjs_peers: dict[str, YjsPeer] = {}
        self.holders = 0  # connections and server calls using the room; at 0 it is closed
        self.metadata: dict[str, Any] = {}
        self.quarantined = 0  # stored updates this room set aside on loading
        self._held: dict[str, list[str | bytes]] = {}  # frames for members still joining
        self._tick: asyncio.Handle | None = None  # the core's coalesced output, at the end of this turn
        self._flushing: asyncio.Task[None] | None = None
        self._storage_lock = asyncio.Lock()
        self._stored_updates = 0
        self._tail_bytes = 0
        self._snapshot_bytes = 0
        self._expiry: asyncio.TimerHandle | None = None
        #: Polls, hands, pulse: stored, mirrored and shown per role (see :mod:`.classroom`).
        self.classroom = LiveClassroom(self)

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Start hearing the other processes (and learn their members), then load the storage.

        In that order: an update another process commits meanwhile is in the load or arrives by
        the bus (or both: applying it twice changes nothing), never in neither.
        """
        await self.config.pubsub.subscribe(self.name, self.node, self._on_envelope)
        try:
            await self._load_rules()
            await self.classroom.load()
            await self._load_stored()
            await self._load_protected()
            await self.expire_if_due()
        except BaseException:
            await self.config.pubsub.unsubscribe(self.name, self.node)
            raise
        self._snapshot_bytes = self.core.storage_bytes
        self._schedule_expiry()

    async def _load_stored(self) -> None:
        persistence = self.config.persistence
        updates = await persistence.load(self.name)
        bad = self.core.load_stored(updates)
        self._stored_updates = len(updates)
        if not bad:
            return
        for update, reason in bad:
            log.warning("room %s: quarantined a stored update of %d bytes that no longer applies: %s",
                        self.name, len(update), reason)
            await persistence.quarantine(self.name, update, reason)
        self.quarantined += len(bad)
        # The history without them: one snapshot of the good state.
        snapshot = self.core.doc.get_update()
        await persistence.compact(self.name, snapshot, len(updates))
        self.core.compacted(len(snapshot))
        self._stored_updates, self._tail_bytes, self._snapshot_bytes = 1, 0, len(snapshot)

    async def _load_rules(self) -> None:
        persistence = self.config.persistence
        stored = await persistence.get_value(state_scope(self.name), "rules")
        if stored is None:  # the first generation begins now (the storage expiry counts from it)
            fresh = RoomRules(generation_since=time.time())
            await persistence.put_value(state_scope(self.name), "rules", fresh.to_json(), if_absent=True)
            stored = await persistence.get_value(state_scope(self.name), "rules")
        self.core.rules = RoomRules.from_json(stored)

    async def _load_protected(self) -> None:
        updates = await self.config.persistence.load(self.name + PROTECTED_SUFFIX)
        bad = self.core.load_protected(updates)
        self._protected_updates = len(updates)
        for update, reason in bad:
            log.warning("room %s: quarantined a protected update of %d bytes: %s", self.name, len(update), reason)
            await self.config.persistence.quarantine(self.name + PROTECTED_SUFFIX, update, reason)
        if bad:
            await self.config.persistence.compact(self.name + PROTECTED_SUFFIX, self.core.protected.get_update(),
                                                  len(updates))
            self._protected_updates = 1

    async def close(self) -> None:
        """Finish pending commits and stop hearing other processes (the room is empty here)."""
        if self._expiry is not None:
            self._expiry.cancel()
        await self.flushed()
        await self.config.pubsub.unsubscribe(self.name, self.node)
        await call_hook(self.config.on_room_destroyed, self.name)
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
            problem = update_problem(update)
            if problem is not None:
                log.warning("room %s: initial storage refused: %s", self.name, problem)
                return
            if await self.config.persistence.claim_initial(self.name, update):
                # Kept for ``room.reset`` and the storage expiry: the room's initial storage.
                await self.config.persistence.put_value(state_scope(self.name), "initial",
                                                        base64.b64encode(update).decode("ascii"))
                self.core.load([update])
                self._stored_updates = 1
                self._snapshot_bytes = len(update)
                await self._publish(StorageUpdated(update, node=self.node))
                log.info("room %s: initial storage applied (%d bytes)", self.name, len(update))
            else:
                await self._load_stored()  # another process won the claim: its storage is the room's

    async def join(self, socket: ServerConnection, member: Member, metadata: Any,
                   generation: str | None = None, protocol: int = PROTOCOL_VERSION) -> None:
        self.sockets[member.connection_id] = socket
        self.metadata[member.connection_id] = metadata
        # The joiner's frames (its welcome first) wait until its join is published: with a
        # shared bus that registers it everywhere, so once its enter() returns, anyone entering
        # on any process has it in their first snapshot.
        self._held[member.connection_id] = []
        arrives = not self.core.members.of_user(member.user_id)  # the user's first connection anywhere
        try:
            await self._run(self.core.join(member, generation=generation, protocol=protocol))
            self.classroom.changed(member.connection_id)  # its first class view follows its welcome
        finally:
            for frame in self._held.pop(member.connection_id):
                outbound.send([socket], frame)
        if arrives and self.config.auth:  # attendance is of people: without tokens each socket is a stranger
            self.classroom.attend_soon(member, "join")  # stored in order, without holding the joiner up
        await call_hook(self.config.on_user_connected, self._context(member.connection_id))

    async def leave(self, connection_id: str) -> None:
        context = self._context(connection_id)
        self.sockets.pop(connection_id, None)
        self.metadata.pop(connection_id, None)
        member = self.core.members.get(connection_id)
        await self._run(self.core.leave(connection_id))
        if member is not None and self.config.auth and not self.core.members.of_user(member.user_id):
            await self.classroom.attend(member, "leave")  # before the views say they left
        self.classroom.changed()
        await call_hook(self.config.on_user_disconnected, context)

    # -- input from local sockets, procedures, the server itself ---------------------------

    async def receive(self, connection_id: str, frame: str | bytes) -> None:
        await self._run(self.core.receive(connection_id, frame))

    async def patch_presence(self, connection_id: str, patch: dict[str, Any]) -> None:
        """A presence patch that did not come as a ``presence`` message (a Yjs client's awareness)."""
        await self._run(self.core.patch_presence(connection_id, patch))

    async def _invoke(self, call: Invoke) -> None:
        """Run a procedure the core allowed; answer a ``call`` with its result or refusal."""
        if call.event in BUILTINS:
            try:
                answer = await run_builtin(self, call.event, call.data, self._caller(call.connection_id))
            except StorageUnavailableError as error:
                answer = Refusal(ErrorCode.STORAGE_UNAVAILABLE, f"the server could not store it: {error}")
            except Exception as error:
                log.exception("room %s: built-in procedure %s failed", self.name, call.event)
                answer = Refusal(ErrorCode.PROCEDURE_FAILED, f"{call.event!r} failed: {error}")
            if isinstance(answer, Refusal):
                self.send_error(call.connection_id, answer.code, answer.message, call_id=call.call_id)
            elif call.call_id is not None:
                self._send(result(call.connection_id, call.call_id, answer))
            return
        procedure = self.config.procedures[call.event]
        outputs = await run_procedure(procedure, call.data, self._context(call.connection_id))
        if isinstance(outputs, Refused):
            self.send_error(call.connection_id, outputs.code, outputs.message, call_id=call.call_id)
            return
        for event, payload in outputs.items():
            await self.emit(event, payload, sender=call.connection_id)
        if call.call_id is not None:
            self._send(result(call.connection_id, call.call_id, outputs))

    def _caller(self, connection_id: str | None) -> dict[str, Any]:
        member = self.core.members.get(connection_id)
        return {"user": dict(member.user) if member else {"id": "server", "name": "server"},
                "presence": dict(member.presence) if member else {},
                "role": self.core.role(connection_id) if member else Role.TEACHER}

    # -- the protected document and moderation ----------------------------------------------

    async def update_protected(self, edit: Callable[[pycrdt.Doc[Any]], Any]) -> Any:
        """Run ``edit(doc)`` on a copy of the protected document (one at a time); persist what it
        changed, then commit and relay it. Returns what ``edit`` returned (an awaitable is awaited)."""
        async with self._protected_lock:
            copy: pycrdt.Doc[Any] = pycrdt.Doc()
            copy.apply_update(self.core.protected.get_update())
            before = copy.get_state()
            answer = edit(copy)
            if asyncio.iscoroutine(answer):
                answer = await answer
            await self._commit_protected(copy.get_update(before))
            return answer

    async def _commit_protected(self, update: bytes) -> None:
        if update == EMPTY_UPDATE:
            return
        await self.config.persistence.append(self.name + PROTECTED_SUFFIX, update)
        self._protected_updates += 1
        await self._run(self.core.commit_protected(update))
        if self._protected_updates >= COMPACT_PROTECTED_AFTER:
            snapshot = self.core.protected.get_update()
            await self.config.persistence.compact(self.name + PROTECTED_SUFFIX, snapshot, self._protected_updates)
            self._protected_updates = 1

    async def _protected_edit(self, action: ProtectedEdit) -> None:
        """A teacher's protected update (teacher-only roots): proven on a copy, then committed."""
        async with self._protected_lock:
            proof: pycrdt.Doc[Any] = pycrdt.Doc()
            proof.apply_update(self.core.protected.get_update())
            problem = prove(proof, action.update)  # checked, applied, nothing left pending
            if problem is not None:
                self.send_error(action.connection_id, ErrorCode.STORAGE_REJECTED,
                                f"protected update refused: {problem}")
                return
            await self._commit_protected(action.update)

    async def log(self, caller: dict[str, Any], action: str, target: str | None) -> None:
        """Add a moderation action to the room's durable log: who, what, when."""
        user = caller["user"]
        entry = {"at": time.time(), "by": str(user.get("id", "")), "by_name": str(user.get("name", "")),
                 "role": str(caller["role"]), "action": action, "target": target}
        await self.config.persistence.append_log(state_scope(self.name), entry)

    async def change_rules(self, change: Callable[[RoomRules], Any]) -> None:
        """Change the room's moderation state: stored, adopted, published; removed users' local
        connections are closed with 4009."""
        rules = RoomRules.from_json(self.core.rules.to_json())
        change(rules)
        await self.config.persistence.put_value(state_scope(self.name), "rules", rules.to_json())
        await self._run(self.core.set_rules(rules))
        self.classroom.changed()  # views show the lock and who is muted
        self._close_removed()
        self._schedule_expiry()

    def _close_removed(self) -> None:
        for member in list(self.core.members):
            if member.local and member.user_id in self.core.rules.removed:
                socket = self.sockets.get(member.connection_id)
                if socket is not None:
                    self._closing_soon(socket, CloseCode.REMOVED, "a teacher removed you from this room")

    async def new_generation(self, caller: dict[str, Any] | None, reason: str,
                             retired: dict[int, int] | None = None) -> None:
        """Give the room a new generation and close every connection with 4010: clients reconnect,
        see it in ``welcome`` and reload (one that was offline discards its older document).

        ``retired``: the state vector of the storage the new generation replaced; the room core
        refuses any update that brings back content created before it (a stock Yjs client that
        reconnects with its old document would otherwise undo the reset)."""
        def bump(rules: RoomRules) -> None:
            rules.generation = secrets.token_hex(8)
            rules.generation_since = time.time()
            for client, clock in (retired or {}).items():
                rules.retired[client] = max(clock, rules.retired.get(client, 0))

        await self.change_rules(bump)
        log.info("room %s: new generation %s (%s)", self.name, self.core.rules.generation, reason)
        self._close_all(reason)

    def _close_all(self, reason: str) -> None:
        for socket in list(self.sockets.values()):
            self._closing_soon(socket, CloseCode.ROOM_RESET, reason[:100])

    def _closing_soon(self, socket: ServerConnection, code: int, reason: str) -> None:
        """Close ``socket`` in a task (frames already sent go first)."""
        task = asyncio.ensure_future(socket.close(code, reason))
        self._closings.add(task)
        task.add_done_callback(self._closings.discard)

    async def reset_storage(self, caller: dict[str, Any] | None, reason: str) -> None:
        """Back to the room's initial storage (its protected document emptied), with a new
        generation. Both histories are replaced in the store."""
        persistence = self.config.persistence
        async with self._storage_lock, self._protected_lock:
            await self.flushed()
            stored = await persistence.get_value(state_scope(self.name), "initial")
            initial = base64.b64decode(stored) if isinstance(stored, str) else EMPTY_UPDATE
            retired = read_state_vector(self.core.doc.get_state())
            for client, clock in retired.items():  # in force now: before the new document is loaded
                self.core.rules.retired[client] = max(clock, self.core.rules.retired.get(client, 0))
            count = len(await persistence.load(self.name))
            await persistence.compact(self.name, initial, count)
            protected = len(await persistence.load(self.name + PROTECTED_SUFFIX))
            await persistence.compact(self.name + PROTECTED_SUFFIX, EMPTY_UPDATE, protected)
            self.core.load_stored([initial])
            self.core.load_protected([])
            self._stored_updates, self._tail_bytes, self._snapshot_bytes = 1, 0, len(initial)
            self._protected_updates = 1
        await self.new_generation(caller, reason, retired)

    def _schedule_expiry(self) -> None:
        """Expire an open room on time too (a closed one is checked when it opens again)."""
        ttl = self.config.storage_ttl_s
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if ttl is None:
            return
        delay = max(0.0, self.core.rules.generation_since + ttl - time.time())

        def expire() -> None:
            if time.time() < self.core.rules.generation_since + ttl:  # the loop's clock ran ahead
                self._schedule_expiry()
                return
            task = asyncio.ensure_future(self.expire_if_due())
            self._closings.add(task)
            task.add_done_callback(self._closings.discard)

        self._expiry = asyncio.get_running_loop().call_later(delay, expire)

    async def expire_if_due(self) -> None:
        """Drop the room's storage once ``storage_ttl_s`` passed since its generation began."""
        ttl = self.config.storage_ttl_s
        if ttl is None or time.time() - self.core.rules.generation_since < ttl:
            return
        server = {"user": {"id": "server", "name": "server"}, "presence": {}, "role": Role.TEACHER}
        await self.log(server, "room.expire", None)
        await self.reset_storage(None, "the room's storage expired")

    async def _adopt_rules(self, envelope: RulesChanged) -> None:
        """Another process changed the rules: adopt them; after a new generation, reload."""
        before = self.core.rules.generation
        await self._run(self.core.apply_envelope(envelope))
        self.classroom.changed()
        self._close_removed()
        self._schedule_expiry()
        if self.core.rules.generation != before:
            async with self._storage_lock, self._protected_lock:
                await self.flushed()
                await self._load_stored()
                await self._load_protected()
            self._close_all("the room was reset")

    async def emit(self, event: str, data: Any, *, sender: str | None = None) -> None:
        """Broadcast ``event`` to the whole room, here and on other processes."""
        await self._run(self.core.emit(event, data, sender=sender))

    # -- storage ----------------------------------------------------------------------------

    def _enqueue(self) -> None:
        """The core queued a proven update: make sure a flush runs."""
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while batch := self.core.take_batch():
                try:
                    await self.config.persistence.append(self.name, batch.update)
                except Exception as error:
                    log.warning("room %s: could not persist %d update(s): %s", self.name, len(batch.commits), error)
                    await self._run(self.core.batch_failed(batch, str(error) or type(error).__name__))
                    continue
                await self._run(self.core.commit_batch(batch))
                self._stored_updates += 1
                self._tail_bytes += len(batch.update)
                if self.config.on_storage_updated is not None:
                    await call_hook(self.config.on_storage_updated, self.name, self.core.doc)
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
        await self.config.persistence.compact(self.name, snapshot, self._stored_updates)
        self.core.compacted(len(snapshot))
        self._stored_updates, self._tail_bytes, self._snapshot_bytes = 1, 0, len(snapshot)

    async def update_storage(self, edit: StorageEdit, *, protected: bool = False) -> None:
        """Run ``edit`` on a copy of the document; commit and relay what it changed.
        ``protected``: the protected document."""
        if protected:
            await self.update_protected(edit)
            return
        copy: pycrdt.Doc[Any] = pycrdt.Doc()
        copy.apply_update(self.core.doc.get_update())
        before = copy.get_state()
        result = edit(copy)
        if asyncio.iscoroutine(result):
            await result
        update = copy.get_update(before)
        if update != EMPTY_UPDATE:
            actions = self.core.propose("", update)
            if not any(isinstance(action, Commit) for action in actions):
                raise ValueError("the storage edit could not be applied to the room's document")
            await self._run(actions)
            await self.flushed()

    async def resync(self, *, reseed: bool) -> None:
        """Converge with the shared store after the bus lost envelopes or the store lost data.

        ``reseed``: first store and publish everything this process holds (Redis restarted
        empty, or this process kept commits in memory during an outage). Then merge what the
        store holds that this process missed, relaying only that to the local connections.
        """
        persistence = self.config.persistence
        try:
            async with self._storage_lock:
                await self.flushed()
                if self.core.broken:  # the document failed to apply a committed update: reload it
                    log.warning("room %s: reloading storage after an update failed to apply", self.name)
                    await self._load_stored()
                    await self._run(self.core.commit(self.core.doc.get_update()))
                    return
                if reseed and self.core.has_storage:
                    snapshot = self.core.doc.get_update()
                    await persistence.append(self.name, snapshot)
                    self._stored_updates += 1
                    await self._publish(StorageUpdated(snapshot, node=self.node))
                stored = replay(await persistence.load(self.name)).doc
                missing = stored.get_update(self.core.doc.get_state())
                if missing != EMPTY_UPDATE:
                    await self._run(self.core.commit(missing))
                stored_protected = replay(await persistence.load(self.name + PROTECTED_SUFFIX)).doc
                missing = stored_protected.get_update(self.core.protected.get_state())
                if missing != EMPTY_UPDATE:
                    await self._run(self.core.commit_protected(missing, mirror=False))
        except StorageUnavailableError as error:
            log.warning("room %s: resynchronising storage failed (%s); the next recovery retries", self.name, error)
        except Exception:
            log.exception("room %s: resynchronising storage failed; the next recovery retries", self.name)

    def storage_json(self) -> dict[str, Any]:
        return untyped_to_json(self.core.doc.get_update(), list(self.core.doc.keys()))

    # -- other processes --------------------------------------------------------------------

    async def _publish(self, envelope: Envelope) -> None:
        try:
            await self.config.pubsub.publish(self.name, envelope)  # stamped with this node by the core
        except Exception:
            log.warning("room %s: pub/sub publish failed; serving local connections only", self.name)

    async def _on_envelope(self, envelope: Envelope) -> None:
        if isinstance(envelope, RulesChanged):
            await self._adopt_rules(envelope)
            return
        await self._run(self.core.apply_envelope(envelope))
        if isinstance(envelope, (ClassRecorded, MemberJoined, MemberLeft)):
            self.classroom.changed()  # who is present, or the classroom itself, changed

    # -- output -----------------------------------------------------------------------------

    async def _run(self, actions: list[Action]) -> None:
        try:
            await self._carry_out(actions)
        finally:
            if self._tick is None and self.core.has_output:
                self._tick = asyncio.get_running_loop().call_soon(self._on_tick)

    def _on_tick(self) -> None:
        """Send what the core coalesced during this turn of the loop (joins, presence)."""
        self._tick = None
        for action in self.core.tick():
            if isinstance(action, Send):
                self._send(action)

    async def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action)
            elif isinstance(action, Commit):
                self._enqueue()
            elif isinstance(action, Mirror):
                await self._publish(action.envelope)
            elif isinstance(action, Resync):
                await self.resync(reseed=action.reseed)
            elif isinstance(action, ProtectedEdit):
                await self._protected_edit(action)
            else:
                await self._invoke(action)

    def _send(self, send: Send) -> None:
        sockets, frame = self.sockets, send.frame
        yjs_peers = self.yjs_peers if isinstance(frame, str) else None
        held_frames = self._held
        if send.to is None and not yjs_peers and not held_frames:  # a fan-out: one pass over the room
            exclude = send.exclude
            outbound.send((socket for c, socket in sockets.items() if c != exclude), frame)
            return
        if send.to is not None:
            recipients = [(c, sockets[c]) for c in send.to if c in sockets]
        else:
            recipients = [(c, socket) for c, socket in sockets.items() if c != send.exclude]
        targets = []
        for connection_id, socket in recipients:
            if yjs_peers and connection_id in yjs_peers:
                yjs_peers[connection_id].changed()  # Yjs clients hear members and presence as awareness
                continue
            held = held_frames.get(connection_id)
            if held is not None:
                held.append(frame)  # still joining: delivered after its welcome
            else:
                targets.append(socket)
        if targets:
            outbound.send(targets, frame)

    def send_error(self, connection_id: str, code: ErrorCode, text: str, *, call_id: int | None = None) -> None:
        self._send(Send(ErrorMessage(code, text, call_id).encode(), to=(connection_id,)))

    def _context(self, connection_id: str | None) -> Context:
        member = self.core.members.get(connection_id)
        return Context(
            self.name,
            connection_id,
            member.user if member else None,
            self.metadata.get(connection_id) if connection_id else None,
        )

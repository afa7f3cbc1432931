"""The server room core: a pure state machine. Messages in, actions out; no sockets, no asyncio.

Every method returns the :data:`~.actions.Action` list the adapter must carry out, in order:
``Send`` a frame, ``Commit`` a storage update (persist it, then call :meth:`ServerRoom.commit`),
``Invoke`` a typed procedure (run the handler, then call :meth:`ServerRoom.emit`), ``Mirror``
an accepted input to the other server processes, or ``Resync`` with the shared store. The same
core serves members whose sockets live on other server processes (``Member.local`` is False):
their inputs arrive as envelopes fed to :meth:`ServerRoom.apply_envelope`, and the adapter
simply has no socket to send them frames on.

Joins, leaves and presence are coalesced: the others hear of them at the next
:meth:`ServerRoom.tick` (the adapter's, once per turn of its event loop while
:attr:`ServerRoom.has_output`), in one ``left``, one ``joined`` and one ``presence`` frame for
however many there were — a storm of a thousand joins (or leaves) is a few frames to each member
instead of a thousand, and a busy room's presence one frame per recipient per turn, each
sender's patches of the turn merged (its latest state always arrives).

Storage durability: the core's document only ever holds *committed* state. An incoming update
is validated and handed back as a ``Commit``; it is applied and relayed by :meth:`commit_batch`
after the adapter's persistence returned. So a joiner's sync, a relay or a hook can never show
anyone state that a crash could lose.

Storage integrity: an update is *proven* before it counts. It is read whole by
:func:`~pluv_widget.protocol.yupdate.check_update` (which refuses what crashes pycrdt), then
applied to a *proof* document — the committed document plus every pending update, in the order
they will be committed — and it must integrate there completely (no part left pending for want
of structs the server does not have). Only then is it queued, persisted, applied and relayed.
Whatever pycrdt raises while proving (``PanicException`` included, a ``BaseException``) refuses
the update, and the proof document, which saw it, is thrown away and rebuilt from the committed
document and the remaining pending updates: a document that saw a panic is never used again.

Refusals, and what the client does (the wire contract, also in the README):

* **Permanent** — ``storage_rejected`` (the update cannot be decoded or applied) and
  ``storage_too_large`` (it would pass ``max_storage_bytes``). The update can never be stored,
  and every later update of that connection depends on it, so the connection is *poisoned*: its
  later updates are refused with the same code (the message says so) until it starts over by
  sending a sync step 1 with an **empty state vector** (``00``). The client then drops its local
  document, loads the room from the server's answer under a **new client id**, and tells the
  user which local edits were discarded.
* **Transient** — ``storage_unavailable``: the store could not commit it now, or it depends on
  updates the server does not have (an earlier one of this connection that failed to commit).
  Nothing is poisoned. The client sends its edits again, with backoff, as the server's missing
  diff: a sync step 1 with its state vector, then, answering the server's sync step 1, a sync
  step 2 holding everything the server lacks. An update whose dependencies are missing is
  refused, never kept pending, so nothing stays pending on the server.

Permissions (:mod:`.permissions`, the one place they are decided) are checked before anything
is proven, relayed or run: a storage update, an event or a procedure from a member who may not
write (an observer; a muted user; a student in a locked room) is refused with ``forbidden``,
``muted`` or ``room_locked`` (a storage refusal carries ``"storage": true`` and poisons the
connection like a permanent refusal, so the client reloads); a ``call`` is checked against its
procedure's rule and answered to the sender only.

The protected document (:attr:`ServerRoom.protected`) is a second Yjs document per room that
clients only read: a protected sync step 1 subscribes a connection and is answered with a step
2; protected updates are committed by the adapter (the server's procedures, ``io.update_storage(...,
protected=True)``, a teacher's update when the app declared teacher-only roots) through
:meth:`ServerRoom.commit_protected`, which relays them to the subscribers only. Any other client
frame writing it is refused with ``forbidden`` before anything of it is applied.

Loading (:meth:`ServerRoom.load_stored`) quarantines stored updates that no longer apply: they
are returned to the adapter, which keeps them aside in the store and rewrites the history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

from ..protocol import (
    COMPACT_LISTS,
    EMPTY_UPDATE,
    PROTOCOL_VERSION,
    Call,
    ClassView,
    ErrorCode,
    ErrorMessage,
    Event,
    Joined,
    Left,
    Limits,
    MembersJoined,
    MembersLeft,
    PresenceBatch,
    PresenceUpdate,
    ProtocolError,
    Result,
    SyncStep,
    Welcome,
    decode_client_message,
    decode_object,
    decode_sync,
    json_size,
    sync,
)
from ..protocol.codes import PERMANENT_STORAGE_REFUSALS
from ..protocol.yupdate import InvalidUpdate, UpdateShape, check_update, read_state_vector
from .actions import Action, Batch, Commit, Invoke, Mirror, ProtectedEdit, Resync, Send
from .classroom import Classroom, Entry
from .envelopes import (
    ClassRecorded,
    Envelope,
    EventSent,
    MemberJoined,
    MemberLeft,
    PresencePatched,
    ProtectedUpdated,
    ResyncRequested,
    RulesChanged,
    StorageUpdated,
)
from .membership import Member, Membership, merge_presence
from .permissions import (
    BUILTIN_PROCEDURES,
    ProcedureRule,
    Role,
    RoomRules,
    call_refusal,
    protected_write_refusal,
    role_of,
    write_refusal,
)

#: Exceptions that are not pycrdt failing: they always propagate.
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)
#: A sync step 1 with this state vector starts a connection over (see the module docstring).
EMPTY_STATE_VECTOR = b"\x00"


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__


def try_apply(doc: pycrdt.Doc[Any], update: bytes) -> str | None:
    """Apply ``update`` to ``doc``; None, or why pycrdt refused it (then ``doc`` must never be
    used again: it may hold part of the update, or have seen a panic)."""
    try:
        doc.apply_update(update)
    except _FATAL:
        raise
    except BaseException as error:  # pycrdt raises several types, and PanicException (a BaseException)
        return _describe(error)
    return None


def prove(doc: pycrdt.Doc[Any], update: bytes) -> str | None:
    """Check ``update`` structurally and apply it to ``doc``: None, or why it does not prove
    (``doc`` is then unusable)."""
    try:
        shape = check_update(update)
    except InvalidUpdate as error:
        return str(error)
    problem = try_apply(doc, update)
    if problem is None and _left_pending(doc, shape):
        problem = "it depends on updates that are not part of it"
    return problem


def update_problem(update: bytes) -> str | None:
    """Why ``update`` cannot be applied to an empty document (None: it can)."""
    return prove(pycrdt.Doc(), update)


def _left_pending(doc: pycrdt.Doc[Any], shape: UpdateShape) -> bool:
    """True when applying an update of ``shape`` left some of its structs pending in ``doc``."""
    return bool(shape.ends) and shape.pending_in(read_state_vector(doc.get_state()))


@dataclass
class Replay:
    """The result of :func:`replay`: the document and which updates it holds or set aside."""

    doc: pycrdt.Doc[Any]
    good: list[bytes]
    quarantined: list[tuple[bytes, str]]


def replay(updates: Iterable[bytes]) -> Replay:
    """Build a document from stored ``updates``, setting aside (with the reason) those that no
    longer apply; after a failed apply the document is rebuilt from the good ones."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    good: list[bytes] = []
    quarantined: list[tuple[bytes, str]] = []
    for update in updates:
        if not update or update == EMPTY_UPDATE:
            continue
        try:
            check_update(update)
        except InvalidUpdate as error:
            quarantined.append((update, f"refused by the update check: {error}"))
            continue
        problem = try_apply(doc, update)
        if problem is not None:
            quarantined.append((update, f"pycrdt cannot apply it: {problem}"))
            doc = pycrdt.Doc()
            for kept in good:
                doc.apply_update(kept)
            continue
        good.append(update)
    return Replay(doc, good, quarantined)


def _error(connection_id: str, code: ErrorCode, text: str, *, call_id: int | None = None,
           storage: bool = False) -> list[Action]:
    return [Send(ErrorMessage(code, text, call_id, storage).encode(), to=(connection_id,))]


def result(connection_id: str, call_id: int, data: Any) -> Send:
    """The answer to ``connection_id``'s call ``call_id``."""
    return Send(Result(call_id, data).encode(), to=(connection_id,))


class ServerRoom:
    """Membership, presence, events and the committed storage document of one room."""

    def __init__(
        self,
        name: str,
        *,
        limits: Limits | None = None,
        procedures: Container[str] = (),
        updates: Iterable[bytes] = (),
        protected_roots: Sequence[str] = (),
        teacher_only_roots: Sequence[str] = (),
        default_role: Role = Role.TEACHER,
        node: str = "",
    ) -> None:
        self.name = name
        self.node = node  # this server process on the bus: every envelope the core mirrors carries it
        self.limits = limits or Limits()
        self.procedures = procedures
        self.members = Membership()
        #: The protected document: written by the server only (see the module docstring).
        self.protected: pycrdt.Doc[Any] = pycrdt.Doc()
        self.protected_subscribers: set[str] = set()
        self.protected_roots = tuple(dict.fromkeys([*protected_roots, *teacher_only_roots]))
        self.teacher_only_roots = tuple(teacher_only_roots)
        self.default_role = default_role  # for users whose token has no role
        self.rules = RoomRules()
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.storage_bytes = 0
        self.pending_bytes = 0  # proven updates not yet committed: they count toward the cap
        #: Proven updates not yet committed, in commit order; the first ``_in_flight`` are
        #: being persisted by the adapter (see :meth:`take_batch`).
        self.pending: deque[Commit] = deque()
        self._in_flight = 0
        self._proof_value: pycrdt.Doc[Any] | None = None  # None: rebuild before use
        # The proof document's state vector as of the last update it took in propose() (None:
        # unknown): reading it from pycrdt costs a decode per update, and most updates provably
        # integrate without it. Replacing the proof document forgets it.
        self._proof_state: dict[int, int] | None = None
        #: Connections whose update was refused for good, and the code: their later updates are
        #: refused the same way until they send a sync step 1 with an empty state vector.
        self.poisoned: dict[str, ErrorCode] = {}
        self.broken = False  # the committed document failed to apply a committed update
        #: The classroom (polls, hands, pulse): a fold of the room's classroom log.
        self.classroom = Classroom()
        self._class_sent: dict[str, dict[str, Any]] = {}  # the last view sent to each local connection
        #: Students present (user id → their connections' names, in order) and each member's
        #: role: kept as members come and go, so a class view refresh never walks the room.
        self._students: dict[str, dict[str, str]] = {}
        self._roles: dict[str, Role] = {}
        #: Bumped when the classroom fold changes what a view can show, or who is present: a
        #: refresh with neither changed only sends new connections their first view.
        self._class_version = 0
        self._views_version = 0  # the version the last full refresh saw
        #: Joins and presence patches the others have not heard of yet (see :meth:`tick`).
        self._announce: dict[str, Member] = {}
        self._announce_local: set[str] = set()  # the local ones among them
        self._presence_out: dict[str, dict[str, Any]] = {}
        self._departed: list[str] = []
        #: Local connections that joined with an older protocol (connection id → its version):
        #: they are sent lists as objects (2) or one frame per member and patch (1).
        self._older: dict[str, int] = {}
        self.load_stored(updates)

    # -- storage ----------------------------------------------------------------------------

    def load_stored(self, updates: Iterable[bytes]) -> list[tuple[bytes, str]]:
        """Replace the document by stored ``updates``; return those set aside (update, reason):
        the adapter quarantines them and rewrites the history. Pending updates are dropped."""
        result = replay(updates)
        self.doc = result.doc
        self.storage_bytes = sum(map(len, result.good))
        self.pending.clear()
        self._in_flight = 0
        self.pending_bytes = 0
        self._proof = None
        self.broken = False
        return result.quarantined

    def load(self, updates: Iterable[bytes]) -> None:
        """Apply updates committed elsewhere (by another process, or found in the store)."""
        for update in updates:
            if update and update != EMPTY_UPDATE:
                self._apply_committed(update)

    def _apply_committed(self, update: bytes) -> None:
        if self.broken:
            return
        problem = try_apply(self.doc, update)
        if problem is not None:
            # Proven updates apply here in the same order; this is another process's or the
            # store's. The document is never used again: the adapter reloads it (Resync).
            self.broken = True
            self._proof = None
            return
        self.storage_bytes += len(update)
        self._proof_state = None  # the proof document takes an update propose() did not see
        if self._proof is not None and try_apply(self._proof, update) is not None:
            self._proof = None

    @property
    def has_storage(self) -> bool:
        """True once the room holds any storage: initial storage must not be applied then."""
        return self.storage_bytes > 0

    @property
    def _proof(self) -> pycrdt.Doc[Any] | None:
        """Committed + pending updates, in commit order (None: rebuild before use)."""
        return self._proof_value

    @_proof.setter
    def _proof(self, doc: pycrdt.Doc[Any] | None) -> None:
        self._proof_value = doc
        self._proof_state = None

    def _proof_doc(self) -> pycrdt.Doc[Any]:
        """Committed + pending, rebuilt if it was thrown away (pending updates that no longer
        prove are dropped from the queue: see :meth:`_rebuild_proof`)."""
        if self._proof is None:
            self._rebuild_proof()
        assert self._proof is not None
        return self._proof

    def _rebuild_proof(self) -> list[Action]:
        """Rebuild the proof document; refuse queued (not in flight) updates that no longer
        prove — they depended on something that failed to commit — with the transient code."""
        proof: pycrdt.Doc[Any] = pycrdt.Doc()
        proof.apply_update(self.doc.get_update())
        actions: list[Action] = []
        kept: deque[Commit] = deque()
        for index, commit in enumerate(self.pending):
            problem = prove(proof, commit.update)
            if problem is None or index < self._in_flight:
                if problem is not None:  # in flight: it will commit; the proof lacks it
                    proof = self._copy_of_proof(kept)
                kept.append(commit)
                continue
            proof = self._copy_of_proof(kept)
            self.release(len(commit.update))
            actions += self._refuse(
                commit.connection_id, ErrorCode.STORAGE_UNAVAILABLE,
                f"update refused: {problem}; it depends on an update the server could not store. "
                "Send your edits again (sync step 1, then step 2 with what the server lacks)")
        self.pending = kept
        self._proof = proof
        return actions

    def _copy_of_proof(self, pending: Iterable[Commit]) -> pycrdt.Doc[Any]:
        proof: pycrdt.Doc[Any] = pycrdt.Doc()
        proof.apply_update(self.doc.get_update())
        for commit in pending:
            if prove(proof, commit.update) is not None:
                proof = pycrdt.Doc()  # cannot happen for proven updates; stay safe
                proof.apply_update(self.doc.get_update())
        return proof

    def propose(self, connection_id: str, update: bytes) -> list[Action]:
        """Check and prove a storage update from ``connection_id`` (empty: the server itself);
        queue it and return ``Commit`` — or refuse it."""
        if update == EMPTY_UPDATE:
            return []
        if connection_id:
            refusal = self._write_refusal(connection_id)
            if refusal is not None:
                return self._refuse(connection_id, refusal.code, f"update refused: {refusal.message}",
                                    storage=True)
        poisoned = self.poisoned.get(connection_id)
        if poisoned is not None:
            return _error(connection_id, poisoned,
                          f"update refused: an earlier update of this connection was refused ({poisoned}) "
                          "and this one depends on it. Send a sync step 1 with an empty state vector "
                          "and reload the room under a new client id")
        try:
            shape = check_update(update)
        except InvalidUpdate as error:
            return self._refuse(connection_id, ErrorCode.STORAGE_REJECTED, f"corrupt update refused: {error}")
        if self.rules.revives(shape.starts):
            return self._refuse(connection_id, ErrorCode.STORAGE_REJECTED,
                                "update refused: it brings back content from before the room was reset; "
                                "reload the room (your document belongs to an older generation)")
        if self.storage_bytes + self.pending_bytes + len(update) > self.limits.max_storage_bytes:
            return self._refuse(
                connection_id,
                ErrorCode.STORAGE_TOO_LARGE,
                f"update of {len(update)} bytes would pass the room's storage cap of "
                f"{self.limits.max_storage_bytes} bytes; the room is unchanged",
            )
        actions: list[Action] = []
        if self._proof_value is None:
            actions += self._rebuild_proof()
        proof = self._proof_value
        assert proof is not None
        problem = try_apply(proof, update)
        if problem is not None:
            self._proof = None  # it saw the failure: never used again
            return actions + self._refuse(connection_id, ErrorCode.STORAGE_REJECTED,
                                          f"update refused: pycrdt cannot apply it ({problem})")
        if self._left_pending(shape):
            self._proof = None  # it holds the update's dangling part
            return actions + self._refuse(
                connection_id, ErrorCode.STORAGE_UNAVAILABLE,
                "update refused: it depends on updates the server does not have (an earlier one "
                "failed to commit?). Send your edits again (sync step 1, then step 2 with what the "
                "server lacks)")
        commit = Commit(update, connection_id)
        self.pending.append(commit)
        self.pending_bytes += len(update)
        return [*actions, commit]

    def _left_pending(self, shape: UpdateShape) -> bool:
        """Whether the update of ``shape`` just applied to the proof document left part of it
        pending there. Decided from the cached state vector when that suffices, else read."""
        proof = self._proof
        assert proof is not None
        state = self._proof_state
        if state is not None and shape.integrates_into(state):
            for client, end in shape.ends.items():
                if end > state.get(client, 0):
                    state[client] = end
            return False
        state = read_state_vector(proof.get_state())
        pending = shape.pending_in(state)
        self._proof_state = None if pending else state
        return pending

    def _refuse(self, connection_id: str, code: ErrorCode, text: str, *, storage: bool = False) -> list[Action]:
        if (code in PERMANENT_STORAGE_REFUSALS or storage) and connection_id:
            self.poisoned[connection_id] = code
        return _error(connection_id, code, text, storage=storage) if connection_id else []

    # -- permissions (decided in .permissions) ----------------------------------------------

    def role(self, connection_id: str | None) -> Role:
        member = self.members.get(connection_id)
        return role_of(member.user if member else None, self.default_role)

    def _write_refusal(self, connection_id: str) -> Any:
        member = self.members.get(connection_id)
        if member is None:
            return None
        return write_refusal(role_of(member.user, self.default_role), member.user_id, self.rules)

    def procedure_rule(self, procedure: str) -> ProcedureRule | None:
        """The rule of a built-in or app procedure (None: no such procedure)."""
        rule = BUILTIN_PROCEDURES.get(procedure)
        if rule is None and procedure in self.procedures:
            rule = ProcedureRule()
        return rule

    # -- the protected document ------------------------------------------------------------

    def commit_protected(self, update: bytes, *, mirror: bool = True) -> list[Action]:
        """Apply a committed (persisted) protected update and relay it to the subscribers."""
        if update == EMPTY_UPDATE:
            return []
        if try_apply(self.protected, update) is not None:
            return [Resync(False)]  # cannot happen for the server's own edits: reload from the store
        actions: list[Action] = []
        if self.protected_subscribers:
            actions.append(Send(sync.update(update, protected=True), to=tuple(self.protected_subscribers)))
        if mirror:
            actions.append(Mirror(ProtectedUpdated(update, node=self.node)))
        return actions

    def load_protected(self, updates: Iterable[bytes]) -> list[tuple[bytes, str]]:
        """Replace the protected document by stored ``updates`` (returns those set aside)."""
        loaded = replay(updates)
        self.protected = loaded.doc
        return loaded.quarantined

    def set_rules(self, rules: RoomRules) -> list[Action]:
        """Adopt new moderation state (from this process or another): returns the Mirror only
        for a local change; the adapter closes removed users' connections."""
        self.rules = rules
        self._class_version += 1  # the views say whether the room is locked and who is muted
        return [Mirror(RulesChanged(rules.to_json(), node=self.node))]

    def take_batch(self) -> Batch | None:
        """The queued updates to persist next (all of them, None: nothing queued); they are in
        flight until :meth:`commit_batch` or :meth:`batch_failed`.

        With nothing else in flight, the proof document holds exactly the committed document
        plus this batch, so the batch as one update is the proof's diff over the committed
        state: one compact update to persist, to apply (once, instead of once per part) and to
        relay. Otherwise the parts are merged and applied one by one."""
        commits = tuple(list(self.pending)[self._in_flight:])
        if not commits:
            return None
        if len(commits) == 1:
            parts: tuple[bytes, ...] = (commits[0].update,)
            update = parts[0]
        elif self._in_flight == 0 and self._proof is not None and not self.broken:
            update = self._proof.get_update(self.doc.get_state())
            parts = (update,)
        else:
            parts = tuple(commit.update for commit in commits)
            update = pycrdt.merge_updates(*parts)
        self._in_flight += len(commits)
        return Batch(commits, update, parts)

    def commit_batch(self, batch: Batch) -> list[Action]:
        """``batch`` is persisted: apply it and relay it."""
        self._settle(batch.commits)
        senders = [commit.connection_id for commit in batch.commits if commit.connection_id]
        actions = self.commit(batch.update, senders, released=sum(len(c.update) for c in batch.commits),
                              parts=batch.parts)
        if self.broken:
            actions.append(Resync(False))
        return actions

    def batch_failed(self, batch: Batch, reason: str) -> list[Action]:
        """The store could not commit ``batch``: refuse it (transient), and refuse queued updates
        that depended on it; the proof document is rebuilt without it."""
        self._settle(batch.commits)
        self.release(sum(len(c.update) for c in batch.commits))
        actions: list[Action] = []
        for connection_id in dict.fromkeys(c.connection_id for c in batch.commits if c.connection_id):
            actions += _error(connection_id, ErrorCode.STORAGE_UNAVAILABLE,
                              f"the server could not store the update ({reason}); send your edits again")
        return actions + self._rebuild_proof()

    def _settle(self, batch: Sequence[Commit]) -> None:
        for commit in batch:
            assert self.pending and self.pending[0] is commit, "batches settle in order"
            self.pending.popleft()
            self._in_flight -= 1

    def commit(
        self, update: bytes, senders: Iterable[str] = (), *, released: int = 0, parts: Sequence[bytes] = ()
    ) -> list[Action]:
        """Apply a committed update (``released``: the pending bytes it settles) and relay it as
        one frame, to everyone but a sole sender. ``senders`` empty: it came from another process
        (already mirrored there), or from the server itself.

        ``parts``: the original updates ``update`` merges. They are applied one by one and the
        relayed frame is the document's diff over them: pycrdt applies a ``merge_updates``
        result about 100x slower than the same edits as a diff (2,000 appends: 48 ms against
        0.3 ms), on this server and on every receiving kernel, and the diff is half the bytes.
        """
        self.release(released)
        if len(parts) > 1:
            before = self.doc.get_state()
            for part in parts:
                self.doc_apply(part, proven=bool(released))
            update = self.doc.get_update(before) if not self.broken else update
        else:
            self.doc_apply(update, proven=bool(released))
        distinct = set(senders)
        exclude = distinct.pop() if len(distinct) == 1 else None
        actions: list[Action] = [Send(sync.update(update), exclude=exclude)]
        if released:
            actions.append(Mirror(StorageUpdated(update, node=self.node)))
        elif self.broken:
            actions.append(Resync(False))
        return actions

    def doc_apply(self, update: bytes, *, proven: bool) -> None:
        """Apply a committed update; one that was proven is already in the proof document."""
        if not proven:
            self._apply_committed(update)
            return
        if self.broken:
            return
        if try_apply(self.doc, update) is not None:
            self.broken = True
            self._proof = None
            return
        self.storage_bytes += len(update)

    def release(self, pending: int) -> None:
        """Forget ``pending`` bytes of proven updates (committed or failed to commit)."""
        self.pending_bytes = max(0, self.pending_bytes - pending)

    def compacted(self, snapshot_bytes: int) -> None:
        """Persistence replaced the history by a snapshot of this size."""
        self.storage_bytes = snapshot_bytes

    # -- input from a member ----------------------------------------------------------------

    def receive(self, connection_id: str, frame: str | bytes) -> list[Action]:
        """One frame from a local member: text (presence, events) or binary (storage sync)."""
        if isinstance(frame, str):
            return self.receive_text(connection_id, frame)
        return self.receive_binary(connection_id, frame)

    def receive_binary(self, connection_id: str, frame: bytes) -> list[Action]:
        try:
            message = decode_sync(frame)
        except ValueError as error:
            return _error(connection_id, ErrorCode.STORAGE_REJECTED, f"not a sync message: {error}")
        payload = message.payload
        if message.protected:
            return self._receive_protected(connection_id, message.step, payload)
        if message.step == SyncStep.STEP1:
            if payload == EMPTY_STATE_VECTOR:
                self.poisoned.pop(connection_id, None)  # it starts over: see the module docstring
            try:
                diff = self.doc.get_update(payload)
            except Exception as error:  # pycrdt raises several types for a bad state vector
                return _error(connection_id, ErrorCode.STORAGE_REJECTED, f"invalid state vector: {error}")
            return [
                Send(sync.step2(diff), to=(connection_id,)),
                Send(sync.step1(self.doc.get_state()), to=(connection_id,)),
            ]
        return self.propose(connection_id, payload)

    def _receive_protected(self, connection_id: str, step: SyncStep, payload: bytes) -> list[Action]:
        if step == SyncStep.STEP1:
            try:
                diff = self.protected.get_update(payload)
            except Exception as error:  # pycrdt raises several types for a bad state vector
                return _error(connection_id, ErrorCode.STORAGE_REJECTED, f"invalid state vector: {error}")
            self.protected_subscribers.add(connection_id)
            return [Send(sync.step2(diff, protected=True), to=(connection_id,))]
        if payload == EMPTY_UPDATE:
            return []
        refusal = protected_write_refusal(self.role(connection_id), bool(self.teacher_only_roots))
        if refusal is not None:
            return _error(connection_id, refusal.code, refusal.message)
        return [ProtectedEdit(connection_id, payload)]

    def receive_text(self, connection_id: str, frame: str) -> list[Action]:
        """Handle one text frame from a member; bad input answers that member only."""
        try:
            message = decode_client_message(frame, self.limits)
        except ProtocolError as error:
            call_id = _call_id_of(frame) if error.code != ErrorCode.UNKNOWN_TYPE else None
            return _error(connection_id, error.code, str(error), call_id=call_id)
        if isinstance(message, PresenceUpdate):
            return self.patch_presence(connection_id, message.patch)
        if isinstance(message, Call):
            return self._call(connection_id, message)
        if message.event in self.procedures or message.event in BUILTIN_PROCEDURES:
            rule = self.procedure_rule(message.event)
            assert rule is not None
            member = self.members.get(connection_id)
            refusal = call_refusal(rule, message.event, self.role(connection_id),
                                   member.user_id if member else "", self.rules)
            if refusal is not None:
                return _error(connection_id, refusal.code, refusal.message)
            return [Invoke(connection_id, message.event, message.data)]
        refusal = self._write_refusal(connection_id)
        if refusal is not None:
            return _error(connection_id, refusal.code, f"event refused: {refusal.message}")
        return self.emit(message.event, message.data, sender=connection_id, include_sender=False)

    def _call(self, connection_id: str, call: Call) -> list[Action]:
        """A ``call``: checked against its procedure's rule before anything runs."""
        rule = self.procedure_rule(call.procedure)
        if rule is None:
            return _error(connection_id, ErrorCode.UNKNOWN_PROCEDURE,
                          f"this server has no procedure {call.procedure!r}", call_id=call.id)
        member = self.members.get(connection_id)
        refusal = call_refusal(rule, call.procedure, self.role(connection_id),
                               member.user_id if member else "", self.rules)
        if refusal is not None:
            return _error(connection_id, refusal.code, refusal.message, call_id=call.id)
        return [Invoke(connection_id, call.procedure, call.input, call.id)]

    # -- membership -------------------------------------------------------------------------

    def join(self, member: Member, *, generation: str | None = None,
             protocol: int = PROTOCOL_VERSION) -> list[Action]:
        """Add a member: it gets a ``welcome`` with everyone but this tick's local joiners; the
        others (and it) hear of it and of everyone else who joined meanwhile at the next
        :meth:`tick` (one frame for a storm).

        A welcome's list is spliced from each member's JSON, encoded once per presence: a joiner
        costs one pass over the members, never an encode of each.

        ``generation``: the one the joiner's document belongs to (from its ``join``). An older one
        poisons the connection: its old updates are refused until it reloads (the client
        discards its document when it sees the new generation in ``welcome``).

        ``protocol``: the version the joiner speaks (an older one is sent older forms)."""
        self.members.add(member)
        compact = protocol >= COMPACT_LISTS
        if member.local and not compact:
            self._older[member.connection_id] = protocol
        self._roles[member.connection_id] = role = role_of(member.user, self.default_role)
        if role == Role.STUDENT:
            tabs = self._students.setdefault(member.user_id, {})
            if not tabs:
                self._class_version += 1  # who is present changed
            tabs[member.connection_id] = str(member.user.get("name") or member.user_id)
        if member.local and generation is not None and generation != self.rules.generation:
            self.poisoned[member.connection_id] = ErrorCode.STORAGE_REJECTED
        actions: list[Action] = []
        self._announce[member.connection_id] = member
        if member.local:
            # This tick's local joiners (this one among them) are left out: the tick's ``joined``
            # reaches this joiner too, so none is sent to it twice. Members joined elsewhere stay
            # in: whoever entered before this joiner, on any process, is in its first snapshot.
            self._announce_local.add(member.connection_id)
            welcome = Welcome(self.name, member.connection_id, member.user, member.presence,
                              generation=self.rules.generation, protected_roots=self.protected_roots,
                              teacher_only_roots=self.teacher_only_roots,
                              encoded_others=self.members.encoded(exclude=self._announce_local, compact=compact))
            actions.append(Send(welcome.encode(), to=(member.connection_id,)))
            actions.append(Mirror(MemberJoined(member.info(), node=self.node)))
        return actions

    def leave(self, connection_id: str) -> list[Action]:
        self.poisoned.pop(connection_id, None)
        self._older.pop(connection_id, None)
        self.protected_subscribers.discard(connection_id)
        member = self.members.remove(connection_id)
        self._class_sent.pop(connection_id, None)
        if self._roles.pop(connection_id, None) == Role.STUDENT and member is not None:
            tabs = self._students.get(member.user_id, {})
            tabs.pop(connection_id, None)
            if not tabs:
                self._students.pop(member.user_id, None)
                self._class_version += 1
        if member is None:
            return []
        # Not announced yet: the others never hear of it (but this tick's joiners, whose
        # welcome listed it, hear it leave); its unsent presence is moot.
        self._announce.pop(connection_id, None)
        self._announce_local.discard(connection_id)
        self._presence_out.pop(connection_id, None)
        self._departed.append(connection_id)  # everyone hears it at the tick, with the tick's others
        actions: list[Action] = []
        if member.local:
            actions.append(Mirror(MemberLeft(connection_id, node=self.node)))
        return actions

    # -- what is coalesced per tick ---------------------------------------------------------

    @property
    def has_output(self) -> bool:
        """True when :meth:`tick` has something to send: the adapter calls it once per turn of
        its event loop while this is true (a turn's joins and presence go out together)."""
        return bool(self._departed or self._announce or self._presence_out)

    def tick(self) -> list[Action]:
        """The joins and presence patches since the last tick, coalesced: at most one ``joined``
        and one ``presence`` frame, each encoded once and sent to everyone in the room.

        One of a kind goes out as before (to everyone but its subject); several go as
        :class:`~pluv_widget.protocol.MembersJoined` / :class:`~pluv_widget.protocol.PresenceBatch`,
        to everyone (receivers skip their own entry). A sender's patches of the tick are merged:
        every sender's latest presence arrives, intermediate states may not. Joins go first, so
        nobody hears a presence before its member."""
        actions: list[Action] = []
        if self._departed:
            departed, self._departed = self._departed, []
            if len(departed) == 1:
                actions.append(Send(Left(departed[0]).encode()))
            else:
                actions += self._to_every_version(MembersLeft(tuple(departed)).encode(), None,
                                                  [(Left(c).encode(), None) for c in departed])
        if self._announce:
            joined, self._announce = list(self._announce.values()), {}
            self._announce_local.clear()
            if len(joined) == 1:
                actions.append(Send(Joined(joined[0].info()).encode(), exclude=joined[0].connection_id))
            else:
                batch = MembersJoined(tuple(m.info() for m in joined), encoded=[m.encoded() for m in joined])
                actions += self._to_every_version(batch.encode(), lambda: batch.encode(compact=False),
                                                  [(Joined(m.info()).encode(), m.connection_id) for m in joined])
        if self._presence_out:
            updates = [PresenceUpdate(patch, sender) for sender, patch in self._presence_out.items()]
            self._presence_out = {}
            if len(updates) == 1:
                actions.append(Send(updates[0].encode(), exclude=updates[0].connection_id))
            else:
                batched = PresenceBatch(tuple(updates))
                actions += self._to_every_version(batched.encode(), lambda: batched.encode(compact=False),
                                                  [(update.encode(), update.connection_id) for update in updates])
        return actions

    def _to_every_version(self, batch: str, objects: Callable[[], str] | None,
                          singles: list[tuple[str, str | None]]) -> list[Action]:
        """A tick's ``batch`` to everyone; to a client of an older protocol, the same list as
        ``objects`` (2; None: protocol 2 had no such list) or else one frame per entry, never to
        the entry's own subject (``singles``: frame, subject)."""
        if not self._older:  # the usual case: one frame for the room
            return [Send(batch)]
        older = self._older
        actions: list[Action] = [Send(batch, to=tuple(c for c in self.members.ids() if c not in older))]
        lists = tuple(c for c, version in older.items() if version == 2) if objects is not None else ()
        if lists and objects is not None:
            actions.append(Send(objects(), to=lists))
        ones = [c for c, version in older.items() if version < 2 or objects is None]
        for frame, subject in singles if ones else ():
            actions.append(Send(frame, to=tuple(c for c in ones if c != subject)))
        return actions

    # -- presence and events ----------------------------------------------------------------

    def patch_presence(self, connection_id: str, patch: dict[str, Any]) -> list[Action]:
        merged = self.members.patched(connection_id, patch)
        if merged is None:
            return []
        size = json_size(merged)
        if size > self.limits.max_presence_bytes:
            return _error(
                connection_id,
                ErrorCode.PRESENCE_TOO_LARGE,
                f"presence would be {size} bytes; the limit is {self.limits.max_presence_bytes}",
            )
        member = self.members.set_presence(connection_id, merged)
        assert member is not None
        pending = self._presence_out.get(connection_id)
        self._presence_out[connection_id] = patch if pending is None else merge_presence(pending, patch)
        return [Mirror(PresencePatched(connection_id, patch, node=self.node))] if member.local else []

    def emit(
        self,
        event: str,
        data: Any,
        *,
        sender: str | None = None,
        include_sender: bool = True,
        mirror: bool = True,
    ) -> list[Action]:
        """Broadcast an event stamped with its sender (``None``: the server itself). What the
        tick holds goes first: an event never overtakes its sender's presence.

        ``mirror=False`` for an event that came from another process."""
        member = self.members.get(sender)
        message = Event(event, data, sender, member.user if member else None, stamped=True)
        actions = self.tick()
        actions.append(Send(message.encode(), exclude=None if include_sender else sender))
        if mirror:
            actions.append(Mirror(EventSent(event, data, sender, include_sender, node=self.node)))
        return actions

    # -- the classroom (core/classroom.py decides; here: who is present, who gets what) --------

    def record_class(self, entry: Entry) -> list[Action]:
        """Apply a classroom entry this process accepted and stored; mirror it to the others."""
        return [Mirror(ClassRecorded(entry, node=self.node))] if self._apply_class(entry) else []

    def _apply_class(self, entry: Entry) -> bool:
        applied = self.classroom.apply(entry)
        # A non-student's attendance only goes to the export: no view shows it.
        if applied and not (entry.get("kind") == "attendance" and entry.get("role") != Role.STUDENT):
            self._class_version += 1
        return applied

    def present_students(self) -> dict[str, str]:
        """The students in the room now, on any process: user id → name."""
        return {user_id: next(iter(tabs.values())) for user_id, tabs in self._students.items()}

    def class_refresh(self, now: float, skip: Container[str] = (), new: Iterable[str] = ()) -> list[Send]:
        """What a refresh must send: every changed view (:meth:`class_views`) when the classroom
        or who is present changed since the last full one; else only the first views of ``new``
        connections (a join storm of people who change no view costs nothing per member)."""
        if self._class_version != self._views_version:
            self._views_version = self._class_version
            return self.class_views(now, skip)
        return self.class_views(now, skip, only=new)

    def _moderation_view(self, role: Role, user_id: str) -> dict[str, Any]:
        """What a view shows of the moderation state: whether the room is locked, and who is
        muted (teachers: every user id; anyone else: whether they are)."""
        muted: bool | list[str] = sorted(self.rules.muted) if role == Role.TEACHER else user_id in self.rules.muted
        return {"locked": self.rules.locked, "muted": muted}

    def class_views(self, now: float, skip: Container[str] = (), only: Iterable[str] | None = None) -> list[Send]:
        """A ``class`` message for each local connection (but ``skip``; of ``only`` when given)
        whose view changed since the last one it was sent (a new connection: its first). ``now``
        is added to what is sent but is not a change. A view is built once per user and role (a
        user's tabs share it)."""
        present = self.present_students()
        built: dict[tuple[Role, str], dict[str, Any]] = {}
        actions: list[Send] = []
        targets = self.members if only is None else [m for c in only if (m := self.members.get(c)) is not None]
        for member in targets:
            if not member.local or member.connection_id in skip:
                continue
            role = self._roles.get(member.connection_id) or role_of(member.user, self.default_role)
            key = (role, member.user_id if role == Role.STUDENT else "")
            view = built.get(key)
            if view is None:
                view = built[key] = {**self.classroom.view_for(role, member.user_id, present),
                                     **self._moderation_view(role, member.user_id)}
            if self._class_sent.get(member.connection_id) == view:
                continue
            self._class_sent[member.connection_id] = view
            actions.append(Send(ClassView({**view, "now": now}).encode(), to=(member.connection_id,)))
        if only is None:
            for connection_id in [c for c in self._class_sent if c not in self.members]:
                del self._class_sent[connection_id]
        return actions

    # -- inputs from other processes --------------------------------------------------------

    def apply_envelope(self, envelope: Envelope) -> list[Action]:
        """Apply an input another process accepted (a ``Mirror`` it published), or a bus's
        request to resynchronise. The one place envelopes are dispatched."""
        match envelope:
            case MemberJoined(member=info):
                return self.join(Member.from_info(info, local=False))
            case MemberLeft(connection_id=connection_id):
                return self.leave(connection_id)
            case PresencePatched(connection_id=connection_id, patch=patch):
                return self.patch_presence(connection_id, patch)
            case EventSent():
                return self.emit(envelope.event, envelope.data, sender=envelope.sender,
                                 include_sender=envelope.include_sender, mirror=False)
            case StorageUpdated(update=update):
                return self.commit(update)
            case ProtectedUpdated(update=update):
                return self.commit_protected(update, mirror=False)
            case RulesChanged(rules=rules):
                self.rules = RoomRules.from_json(rules)
                self._class_version += 1
                return []
            case ClassRecorded(entry=entry):
                self._apply_class(entry)
                return []
            case ResyncRequested(reseed=reseed):
                return [Resync(reseed)]


def _call_id_of(frame: str) -> int | None:
    """The ``id`` of a refused ``call`` frame, so the refusal reaches the waiting caller."""
    try:
        value = decode_object(frame)  # the protocol's own checks (depth, NaN...) apply here too
    except (ProtocolError, ValueError, RecursionError):
        return None
    if isinstance(value, dict) and value.get("type") == "call":
        call_id = value.get("id")
        if isinstance(call_id, int) and not isinstance(call_id, bool):
            return call_id
    return None

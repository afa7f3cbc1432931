"""The classroom's built-in procedures and its I/O: polls, the help queue, the class pulse, export.

What may be done and who sees what is decided in :mod:`pluv_widget.core.classroom` (pure);
roles were checked by the room core against ``BUILTIN_PROCEDURES`` before a handler here runs.
Here: inputs are validated (pydantic, as the other built-ins), each accepted action is stored
*before* anyone sees it (``Persistence.append_log("class:<room>", entry)``), applied to the
room's fold, mirrored to the other processes (a ``class`` envelope), and every local
connection's view is refreshed.

Views are delivered by :class:`LiveClassroom`: after any change (an entry here or from another
process, a member joining or leaving anywhere) one refresh is scheduled for the end of the
loop's turn, so a burst of votes costs one rebuild; each local connection is sent its view only
when it differs from the last one it was sent. A new connection gets its first view right
after its ``welcome``.

Votes, notes and pulse live only in the server's log and in the views built for teachers: never
in replicated storage or presence, where every student could read them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pycrdt
from pydantic import BaseModel, Field, StrictBool, StrictInt

from ..core.classroom import MAX_NOTE_CHARS, MAX_QUESTION_CHARS, Actor, Classroom, Entry
from ..core.membership import Member
from ..core.permissions import Refusal, Role, role_of
from ..crdt import to_json

if TYPE_CHECKING:
    from .live_room import LiveRoom

log = logging.getLogger("pluv_widget.server")

Caller = dict[str, Any]  # {"user": ..., "presence": ..., "role": ...}
Handler = Callable[["LiveRoom", Any, Caller], Awaitable[Any]]
Decision = Entry | Refusal | None


def class_scope(room: str) -> str:
    """The log of a room's classroom in the server-held state."""
    return f"class:{room}"


def _id() -> str:
    return secrets.token_hex(8)


class LiveClassroom:
    """The classroom of one :class:`LiveRoom`: loading its log, recording entries, attendance,
    and delivering views to the room's local connections."""

    def __init__(self, room: LiveRoom) -> None:
        self.room = room
        self.lock = asyncio.Lock()  # decide, store, apply: one action at a time per room
        self._refresh: asyncio.Handle | None = None
        self._new: list[str] = []  # local connections that joined since the last refresh
        self._attendance: deque[tuple[Member, str, asyncio.Future[None]]] = deque()  # not stored yet
        self._attending: asyncio.Task[None] | None = None
        self._attend_tasks: set[asyncio.Future[None]] = set()

    @property
    def fold(self) -> Classroom:
        return self.room.core.classroom

    async def load(self) -> None:
        """Fold the stored log (entries heard from the bus meanwhile are applied once)."""
        self.fold.load(await self.room.config.persistence.read_log(class_scope(self.room.name)))

    async def record(self, decide: Callable[[], Decision]) -> Decision:
        """Decide on the current state, store the entry, then apply, mirror and show it."""
        async with self.lock:
            decision = decide()
            if decision is None or isinstance(decision, Refusal):
                return decision
            await self.room.config.persistence.append_log(class_scope(self.room.name), decision)
            await self.room._run(self.room.core.record_class(decision))
            self.changed()
            return decision

    async def attend(self, member: Member, event: str) -> None:
        """Log a join or leave of ``member``'s user (called when its first connection arrived or
        its last one left; by the process holding that socket only). Entries are stored in the
        order asked, by one task; this returns once this one is stored (or failed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._attendance.append((member, event, done))
        if self._attending is None:
            self._attending = asyncio.get_running_loop().create_task(self._attend_all())
        await asyncio.shield(done)

    def attend_soon(self, member: Member, event: str) -> None:
        """:meth:`attend` without waiting: a joiner's first frames never wait for a store write
        (a class entering at once would be served one write at a time)."""
        task = asyncio.ensure_future(self.attend(member, event))
        self._attend_tasks.add(task)
        task.add_done_callback(self._attend_tasks.discard)

    async def _attend_all(self) -> None:
        try:
            while self._attendance:
                member, event, done = self._attendance.popleft()
                user = member.user
                actor = Actor(member.user_id, str(user.get("name") or member.user_id),
                              role_of(user, self.room.core.default_role))
                try:
                    await self.record(lambda actor=actor, event=event: Classroom.entry(  # type: ignore[misc]
                        "attendance", actor, entry_id=_id(), at=time.time(), event=event))
                except Exception as error:  # attendance must never fail a join or a leave
                    log.warning("room %s: could not log a %s of %s: %s", self.room.name, event, member.user_id,
                                error)
                if not done.done():
                    done.set_result(None)
        finally:
            self._attending = None

    def changed(self, joined: str | None = None) -> None:
        """Refresh the local connections' views at the end of this loop turn (once per turn).
        ``joined``: a new local connection, owed its first view. Only views that can have
        changed are rebuilt (see ``ServerRoom.class_refresh``): a join storm of people who
        change nobody's view costs one first view per joiner, not a pass over the room per turn."""
        if joined is not None:
            self._new.append(joined)
        if self._refresh is None:
            self._refresh = asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        self._refresh = None
        new, self._new = self._new, []
        for action in self.room.core.class_refresh(time.time(), skip=self.room.yjs_peers, new=new):
            self.room._send(action)


# -- the procedures ------------------------------------------------------------------------------


class PollInput(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    options: list[str] = Field(min_length=2, max_length=12)
    multiple: StrictBool = False
    anonymous: StrictBool = False


class VoteInput(BaseModel):
    poll: str = Field(min_length=1, max_length=64)
    choice: str | list[str] = Field()


class PollId(BaseModel):
    poll: str = Field(min_length=1, max_length=64)


class RaiseInput(BaseModel):
    note: str = Field(default="", max_length=MAX_NOTE_CHARS)


class ResolveInput(BaseModel):
    user_id: str = Field(min_length=1, max_length=200)


class CheckpointInput(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class ReportInput(BaseModel):
    cells_run: StrictInt = Field(ge=0)
    last_error: str | None = Field(default=None, max_length=100)
    sharing: StrictBool


class Nothing(BaseModel):
    pass


def _actor(caller: Caller) -> Actor:
    user, presence = caller["user"], caller["presence"]
    user_id = str(user.get("id", ""))
    name = user.get("name") or presence.get("name") or user_id
    return Actor(user_id, str(name)[:80], Role(caller["role"]))


def _refused(decision: Decision) -> Refusal | None:
    return decision if isinstance(decision, Refusal) else None


async def create(room: LiveRoom, data: PollInput, caller: Caller) -> Any:
    poll_id = _id()[:12]
    fold = room.classroom.fold
    decision = await room.classroom.record(lambda: fold.decide_create(
        _actor(caller), question=data.question, options=data.options, multiple=data.multiple,
        anonymous=data.anonymous, poll_id=poll_id, entry_id=_id(), at=time.time()))
    return _refused(decision) or fold.poll_for(Role(caller["role"]), fold.polls[poll_id])


async def vote(room: LiveRoom, data: VoteInput, caller: Caller) -> Any:
    fold = room.classroom.fold
    decision = await room.classroom.record(lambda: fold.decide_vote(
        _actor(caller), poll_id=data.poll, choice=data.choice, entry_id=_id(), at=time.time()))
    if isinstance(decision, Refusal):
        return decision
    mine = fold.polls[data.poll].votes.get(_actor(caller).user_id)
    return {"poll": data.poll, "choice": list(mine.choice) if mine is not None else []}


def _poll_state(kind: str) -> Handler:
    async def handler(room: LiveRoom, data: PollId, caller: Caller) -> Any:
        fold = room.classroom.fold
        decision = await room.classroom.record(lambda: fold.decide_poll_state(
            _actor(caller), kind, poll_id=data.poll, entry_id=_id(), at=time.time()))
        webhooks = room.config.webhooks
        if kind == "poll.close" and isinstance(decision, dict) and webhooks is not None:
            poll = fold.polls[data.poll]
            webhooks.send("poll.closed", room.name, {"poll": poll.id, "question": poll.question,
                                                     "counts": poll.counts()})
        return _refused(decision) or fold.poll_for(Role(caller["role"]), fold.polls[data.poll])

    return handler


async def raise_hand(room: LiveRoom, data: RaiseInput, caller: Caller) -> Any:
    fold, actor = room.classroom.fold, _actor(caller)
    decision = await room.classroom.record(lambda: fold.decide_raise(actor, note=data.note, entry_id=_id(),
                                                                     at=time.time()))
    if isinstance(decision, dict) and room.config.webhooks is not None:  # the note stays the teacher's
        room.config.webhooks.send("hand.raised", room.name, {"user": actor.user_id, "name": actor.name})
    return _refused(decision) or {"position": fold.position(actor.user_id), "queue_length": len(fold.queue)}


async def lower_hand(room: LiveRoom, _data: Nothing, caller: Caller) -> Any:
    fold = room.classroom.fold
    decision = await room.classroom.record(lambda: fold.decide_lower(_actor(caller), entry_id=_id(), at=time.time()))
    return {"lowered": decision is not None}


async def resolve(room: LiveRoom, data: ResolveInput, caller: Caller) -> Any:
    fold = room.classroom.fold
    decision = await room.classroom.record(lambda: fold.decide_resolve(
        _actor(caller), user_id=data.user_id, entry_id=_id(), at=time.time()))
    return {"resolved": decision is not None}


async def next_hand(room: LiveRoom, _data: Nothing, caller: Caller) -> Any:
    fold = room.classroom.fold
    resolved: list[dict[str, Any]] = []

    def decide() -> Decision:
        decision = fold.decide_resolve(_actor(caller), user_id=None, entry_id=_id(), at=time.time())
        if decision is not None:
            resolved.append(Classroom.hand_json(fold.queue[decision["target"]]))
        return decision

    await room.classroom.record(decide)
    return resolved[0] if resolved else None


async def checkpoint(room: LiveRoom, data: CheckpointInput, caller: Caller) -> Any:
    fold = room.classroom.fold
    decision = await room.classroom.record(lambda: fold.decide_checkpoint(
        _actor(caller), checkpoint=data.name, entry_id=_id(), at=time.time()))
    return _refused(decision) or {"checkpoint": data.name}


async def report(room: LiveRoom, data: ReportInput, caller: Caller) -> Any:
    fold = room.classroom.fold
    decision = await room.classroom.record(lambda: fold.decide_report(
        _actor(caller), cells_run=data.cells_run, last_error=data.last_error, sharing=data.sharing,
        entry_id=_id(), at=time.time()))
    return _refused(decision) or {}


async def export(room: LiveRoom, _data: Nothing, _caller: Caller) -> Any:
    from .live_room import state_scope

    copy: pycrdt.Doc[Any] = pycrdt.Doc()  # read on a copy: the room's document is never touched here
    copy.apply_update(room.core.protected.get_update())
    messages = to_json(copy.get("messages", type=pycrdt.Array))
    moderation = await room.config.persistence.read_log(state_scope(room.name))
    async with room.classroom.lock:  # after the actions under way
        return room.classroom.fold.export(list(messages), moderation)


#: Registered with the other built-ins in ``moderation.BUILTINS`` (the one registry).
CLASSROOM: dict[str, tuple[type[BaseModel], Handler]] = {
    "polls.create": (PollInput, create),
    "polls.vote": (VoteInput, vote),
    "polls.reveal": (PollId, _poll_state("poll.reveal")),
    "polls.close": (PollId, _poll_state("poll.close")),
    "hands.raise": (RaiseInput, raise_hand),
    "hands.lower": (Nothing, lower_hand),
    "hands.resolve": (ResolveInput, resolve),
    "hands.next": (Nothing, next_hand),
    "pulse.checkpoint": (CheckpointInput, checkpoint),
    "pulse.report": (ReportInput, report),
    "class.export": (Nothing, export),
}

"""Who may do what in a room: the one place permissions are decided (pure, no I/O).

Roles come from the token's ``user.role`` (stamped by the server, never by a message):

* ``teacher`` — everything: any storage write, every built-in procedure (moderation included).
  On a server without auth everyone is a teacher.
* ``student`` — writes storage and calls the ``messages`` procedures, but deletes only their own
  messages, never clears the list, never moderates; read-only while muted or the room is locked.
* ``observer`` — read-only (a projector, a TA screen): every write is refused with ``forbidden``.

The server room core asks :func:`write_refusal` before it proves a storage update, relays an
event or runs a procedure, and :func:`call_refusal` before it runs a ``call``; the built-in
``messages.delete`` asks :func:`may_delete_message`. Nothing is applied before they answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..protocol import ErrorCode


class Role(StrEnum):
    TEACHER = "teacher"
    STUDENT = "student"
    OBSERVER = "observer"


def role_of(user: dict[str, Any] | None, default: Role = Role.STUDENT) -> Role:
    """The role stamped in ``user`` (a token's user), or ``default`` when it has none."""
    value = user.get("role") if user else None
    try:
        return Role(value) if value is not None else default
    except ValueError:
        return Role.OBSERVER  # an unknown role gets the least power


@dataclass
class RoomRules:
    """A room's moderation state: who is muted or removed, whether it is locked, its generation.

    Durable (the server's state store) and shared by every process serving the room."""

    muted: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    locked: bool = False
    generation: str = ""  # changes on reset, clear and expiry (see ``Welcome.generation``)
    generation_since: float = 0.0  # when this generation began (seconds since the epoch)
    #: Per Yjs client id, the clock the storage had reached when a reset (or expiry, or delete)
    #: replaced it: content created below it belongs to an older generation and is refused.
    retired: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"muted": sorted(self.muted), "removed": sorted(self.removed), "locked": self.locked,
                "generation": self.generation, "generation_since": self.generation_since,
                "retired": {str(client): clock for client, clock in self.retired.items()}}

    @classmethod
    def from_json(cls, value: Any) -> RoomRules:
        if not isinstance(value, dict):
            return cls()
        retired = value.get("retired")
        retired = retired if isinstance(retired, dict) else {}
        return cls({str(v) for v in value.get("muted") or ()}, {str(v) for v in value.get("removed") or ()},
                   bool(value.get("locked")), str(value.get("generation") or ""),
                   float(value.get("generation_since") or 0.0),
                   {int(client): int(clock) for client, clock in retired.items()})

    def revives(self, starts: dict[int, int]) -> bool:
        """True when an update whose structs start at ``starts`` (per client) brings back content
        of an older generation."""
        retired = self.retired
        return bool(retired) and any(start < retired.get(client, 0) for client, start in starts.items())


@dataclass(frozen=True)
class ProcedureRule:
    """What a procedure needs: ``teacher`` only, or any writer (``writes``), or anyone."""

    teacher: bool = False
    writes: bool = True


#: The built-in procedures (see ``server/moderation.py`` and ``server/classroom.py``) and who may call them.
BUILTIN_PROCEDURES: dict[str, ProcedureRule] = {
    "messages.post": ProcedureRule(),
    "messages.delete": ProcedureRule(),  # students: their own (see may_delete_message)
    "messages.clear": ProcedureRule(teacher=True),
    "users.remove": ProcedureRule(teacher=True),
    "users.readmit": ProcedureRule(teacher=True),
    "users.mute": ProcedureRule(teacher=True),
    "users.unmute": ProcedureRule(teacher=True),
    "room.lock": ProcedureRule(teacher=True),
    "room.unlock": ProcedureRule(teacher=True),
    "room.reset": ProcedureRule(teacher=True),
    # The classroom (``server/classroom.py``): teachers run polls, the queue and the record;
    # writers vote, raise hands and report their progress.
    "polls.create": ProcedureRule(teacher=True),
    "polls.reveal": ProcedureRule(teacher=True),
    "polls.close": ProcedureRule(teacher=True),
    "polls.vote": ProcedureRule(),
    "hands.raise": ProcedureRule(),
    "hands.lower": ProcedureRule(),
    "hands.resolve": ProcedureRule(teacher=True),
    "hands.next": ProcedureRule(teacher=True),
    "pulse.checkpoint": ProcedureRule(),
    "pulse.report": ProcedureRule(),
    "class.export": ProcedureRule(teacher=True),
}


@dataclass(frozen=True)
class Refusal:
    code: ErrorCode
    message: str


def write_refusal(role: Role, user_id: str, rules: RoomRules) -> Refusal | None:
    """Why this member may not write now (storage, events, procedures), or None."""
    if role == Role.OBSERVER:
        return Refusal(ErrorCode.FORBIDDEN, "observers are read-only")
    if role == Role.TEACHER:
        return None
    if user_id in rules.muted:
        return Refusal(ErrorCode.MUTED, "a teacher muted you: you are read-only until unmuted")
    if rules.locked:
        return Refusal(ErrorCode.ROOM_LOCKED, "a teacher locked the room: it is read-only for students")
    return None


def call_refusal(rule: ProcedureRule, procedure: str, role: Role, user_id: str, rules: RoomRules) -> Refusal | None:
    """Why this member may not call ``procedure`` now, or None."""
    if rule.teacher and role != Role.TEACHER:
        return Refusal(ErrorCode.FORBIDDEN, f"only a teacher may call {procedure!r}")
    return write_refusal(role, user_id, rules) if rule.writes else None


def protected_write_refusal(role: Role, teacher_only_roots: bool) -> Refusal | None:
    """Why this member may not send an update of the protected document (None: a teacher, and
    the app declared teacher-only roots)."""
    if role == Role.TEACHER and teacher_only_roots:
        return None
    return Refusal(ErrorCode.FORBIDDEN, "the protected document is written by the server only "
                                        "(through its procedures); the update was not applied")


def may_delete_message(role: Role, user_id: str, message: dict[str, Any]) -> Refusal | None:
    """Students delete only their own messages; teachers any."""
    if role == Role.TEACHER or str(message.get("author_id", "")) == user_id:
        return None
    return Refusal(ErrorCode.FORBIDDEN, "students may delete only their own messages")

"""The classroom of a room: polls, the help queue, checkpoints, the class pulse, attendance.
Pure: no I/O, no clock, no randomness (times and ids are handed in).

**A fold over a log.** Every accepted action is one *entry* (a JSON object) appended to the
room's classroom log (``class:<room>`` in the server-held state) and mirrored to the other
server processes; the state here is nothing but those entries applied in turn, so a restart
(read the log, :meth:`Classroom.apply` each) and another process (apply the mirrored entry)
reach the same state. An entry::

    {"id": "<unique>", "at": epoch_s, "kind": "poll.vote", "user": "ada", "name": "Ada",
     "role": "student", ...the kind's own fields}

Kinds: ``poll.create`` (``poll``: the poll's public fields), ``poll.vote`` (``poll``, ``choice``:
list), ``poll.reveal`` / ``poll.close`` (``poll``), ``hand.raise`` (``note``), ``hand.lower``,
``hand.resolve`` (``target``: the student's user id), ``checkpoint`` (``checkpoint``), ``pulse``
(``cells_run``, ``last_error``, ``sharing``), ``attendance`` (``event``: join / leave).

Applying does not depend on the order entries arrive in where processes could disagree: a
vote and a pulse report are last-writer-wins by ``at`` (two tabs of one user on two processes),
reveal and close only ever go one way, an entry id applied twice counts once (a room opening
may read an entry from the log and hear it mirrored too).

**Deciding.** The ``decide_*`` methods check an action against the current state and return the
entry to record (None: nothing changes) or a :class:`~.permissions.Refusal`. Roles were checked
before (``permissions.BUILTIN_PROCEDURES``); what needs the state (a closed poll, an unknown
poll, a choice that is no option) is checked here.

**Seeing.** :meth:`Classroom.view_for` builds one connection's whole view for its role, and is
the one place deciding who sees what: votes, hands' notes, pulse and status reach teachers only;
students see a poll's counts once it is revealed, their own choice, hand and checkpoints; an
anonymous poll never names its voters, to anyone (nor does :meth:`Classroom.export`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import ErrorCode
from .permissions import Refusal, Role

MAX_QUESTION_CHARS = 500
MAX_OPTION_CHARS = 200
MIN_OPTIONS, MAX_OPTIONS = 2, 12
MAX_NOTE_CHARS = 300
CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9 _.-]{1,64}$")
#: An exception's type name (``ZeroDivisionError``, ``numpy.linalg.LinAlgError``): never its
#: message, which may hold code or values.
ERROR_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_ERROR_TYPE_CHARS = 100

Entry = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does something, as the server stamped it from the token."""

    user_id: str
    name: str
    role: Role


@dataclass(slots=True)
class Vote:
    choice: list[str]
    name: str
    at: float


@dataclass(slots=True)
class Poll:
    id: str
    question: str
    options: list[str]
    multiple: bool
    anonymous: bool
    created: float
    closed: bool = False
    revealed: bool = False
    votes: dict[str, Vote] = field(default_factory=dict)  # by user id: one vote per person

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.options, 0)
        for vote in self.votes.values():
            for choice in vote.choice:
                if choice in counts:
                    counts[choice] += 1
        return counts

    def public(self, *, counts: bool) -> dict[str, Any]:
        """What every role may see (``counts``: with the counts, else ``None``)."""
        return {"id": self.id, "question": self.question, "options": list(self.options),
                "multiple": self.multiple, "anonymous": self.anonymous,
                "state": "closed" if self.closed else "open", "revealed": self.revealed,
                "created": self.created, "voters": len(self.votes),
                "counts": self.counts() if counts else None}


@dataclass(slots=True)
class Hand:
    """A raised hand, and afterwards its record (for the export)."""

    user: str
    name: str
    note: str
    raised_at: float
    resolved_at: float | None = None
    resolved_by: str | None = None
    lowered: bool = False


@dataclass(slots=True)
class Student:
    """One student seen in the room (present or not), and what they chose to share."""

    user: str
    name: str
    first_seen: float
    sharing: bool = False
    cells_run: int | None = None
    last_error: str | None = None
    last_active: float | None = None
    reported_at: float = float("-inf")
    checkpoints: dict[str, float] = field(default_factory=dict)


class Classroom:
    """The fold of one room's classroom log; see the module docstring."""

    def __init__(self) -> None:
        self.polls: dict[str, Poll] = {}
        self.queue: dict[str, Hand] = {}  # raised hands by user id
        self.hands: list[Hand] = []  # every hand ever raised, in order (the export)
        self.students: dict[str, Student] = {}
        self.checkpoints: list[dict[str, Any]] = []  # who reached what, when (the export)
        self.attendance: list[dict[str, Any]] = []
        self._applied: set[str] = set()

    # -- the fold ----------------------------------------------------------------------------

    def load(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self.apply(entry)

    def apply(self, entry: Entry) -> bool:
        """Apply one log entry; False for one applied before or that is not an entry (a log of
        another version: skipped rather than failing the room)."""
        entry_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(entry_id, str) or entry_id in self._applied:
            return False
        try:
            applied = self._apply(entry)
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        if applied:
            self._applied.add(entry_id)
        return applied

    def _apply(self, entry: Entry) -> bool:
        kind, at, user = entry["kind"], float(entry["at"]), str(entry["user"])
        name = str(entry.get("name") or user)
        if entry.get("role") == Role.STUDENT:
            self._student(user, name, at)
        if kind == "poll.create":
            poll = entry["poll"]
            if poll["id"] not in self.polls:
                self.polls[poll["id"]] = Poll(str(poll["id"]), str(poll["question"]), [str(o) for o in poll["options"]],
                                              bool(poll["multiple"]), bool(poll["anonymous"]), at)
        elif kind == "poll.vote":
            poll = self.polls[entry["poll"]]
            previous = poll.votes.get(user)
            if previous is None or previous.at <= at:
                poll.votes[user] = Vote([str(choice) for choice in entry["choice"]], name, at)
        elif kind == "poll.reveal":
            self.polls[entry["poll"]].revealed = True
        elif kind == "poll.close":
            self.polls[entry["poll"]].closed = True
        elif kind == "hand.raise":
            note = str(entry.get("note") or "")
            raised = self.queue.get(user)
            if raised is not None:
                raised.note = note  # a new note keeps the hand's place
            else:
                hand = Hand(user, name, note, at)
                self.queue[user] = hand
                self.hands.append(hand)
        elif kind in ("hand.lower", "hand.resolve"):
            target = user if kind == "hand.lower" else str(entry["target"])
            done = self.queue.pop(target, None)
            if done is not None:
                if kind == "hand.lower":
                    done.lowered = True
                else:
                    done.resolved_at, done.resolved_by = at, user
        elif kind == "checkpoint":
            checkpoint = str(entry["checkpoint"])
            self.checkpoints.append({"user": user, "name": name, "checkpoint": checkpoint, "at": at})
            student = self.students.get(user)
            if student is not None:
                student.checkpoints.setdefault(checkpoint, at)
        elif kind == "pulse":
            student = self.students.get(user)
            if student is not None and student.reported_at <= at:
                student.reported_at = at
                student.sharing = bool(entry["sharing"])
                if student.sharing:
                    cells = entry.get("cells_run")
                    student.cells_run = int(cells) if cells is not None else None
                    error = entry.get("last_error")
                    student.last_error = str(error) if error is not None else None
                    student.last_active = at
                else:  # stopped sharing: forget what was shared
                    student.cells_run = student.last_error = student.last_active = None
        elif kind == "attendance":
            self.attendance.append({"user": user, "name": name, "role": str(entry.get("role", "")),
                                    "event": str(entry["event"]), "at": at})
        else:
            return False
        return True

    def _student(self, user: str, name: str, at: float) -> None:
        student = self.students.get(user)
        if student is None:
            self.students[user] = Student(user, name, at)
        elif name:
            student.name = name

    # -- deciding ----------------------------------------------------------------------------

    @staticmethod
    def entry(kind: str, actor: Actor, *, entry_id: str, at: float, **fields: Any) -> Entry:
        """A log entry of ``kind`` by ``actor`` (see the module docstring)."""
        return {"id": entry_id, "at": at, "kind": kind, "user": actor.user_id, "name": actor.name,
                "role": str(actor.role), **fields}

    def decide_create(self, actor: Actor, *, question: str, options: Sequence[str], multiple: bool,
                      anonymous: bool, poll_id: str, entry_id: str, at: float) -> Entry | Refusal:
        question = question.strip()
        cleaned = [option.strip() for option in options]
        if not 1 <= len(question) <= MAX_QUESTION_CHARS:
            return _invalid(f"a poll's question is 1 to {MAX_QUESTION_CHARS} characters")
        if not MIN_OPTIONS <= len(cleaned) <= MAX_OPTIONS:
            return _invalid(f"a poll has {MIN_OPTIONS} to {MAX_OPTIONS} options")
        if any(not 1 <= len(option) <= MAX_OPTION_CHARS for option in cleaned):
            return _invalid(f"each option is 1 to {MAX_OPTION_CHARS} characters (not blank)")
        if len(set(cleaned)) != len(cleaned):
            return _invalid("a poll's options must be distinct")
        if poll_id in self.polls:
            return _invalid(f"a poll with id {poll_id!r} exists already")
        poll = {"id": poll_id, "question": question, "options": cleaned, "multiple": multiple, "anonymous": anonymous}
        return self.entry("poll.create", actor, entry_id=entry_id, at=at, poll=poll)

    def decide_vote(self, actor: Actor, *, poll_id: str, choice: str | Sequence[str], entry_id: str,
                    at: float) -> Entry | Refusal:
        poll = self.polls.get(poll_id)
        if poll is None:
            return _invalid(f"there is no poll {poll_id!r}")
        if poll.closed:
            return _invalid("the poll is closed: it takes no more votes")
        choices = [choice] if isinstance(choice, str) else list(dict.fromkeys(choice))
        if not choices:
            return _invalid("a vote needs a choice")
        if len(choices) > 1 and not poll.multiple:
            return _invalid("this poll takes one choice, not a list")
        unknown = [c for c in choices if c not in poll.options]
        if unknown:
            return _invalid(f"{unknown[0]!r} is not an option of this poll (options: {', '.join(poll.options)})")
        return self.entry("poll.vote", actor, entry_id=entry_id, at=at, poll=poll_id, choice=choices)

    def decide_poll_state(self, actor: Actor, kind: str, *, poll_id: str, entry_id: str,
                          at: float) -> Entry | Refusal | None:
        """``poll.reveal`` or ``poll.close`` (None: it already is)."""
        poll = self.polls.get(poll_id)
        if poll is None:
            return _invalid(f"there is no poll {poll_id!r}")
        if (poll.revealed if kind == "poll.reveal" else poll.closed):
            return None
        return self.entry(kind, actor, entry_id=entry_id, at=at, poll=poll_id)

    def decide_raise(self, actor: Actor, *, note: str, entry_id: str, at: float) -> Entry | Refusal:
        note = note.strip()
        if len(note) > MAX_NOTE_CHARS:
            return _invalid(f"a note is at most {MAX_NOTE_CHARS} characters")
        return self.entry("hand.raise", actor, entry_id=entry_id, at=at, note=note)

    def decide_lower(self, actor: Actor, *, entry_id: str, at: float) -> Entry | None:
        if actor.user_id not in self.queue:
            return None
        return self.entry("hand.lower", actor, entry_id=entry_id, at=at)

    def decide_resolve(self, actor: Actor, *, user_id: str | None, entry_id: str, at: float) -> Entry | None:
        """Resolve ``user_id``'s hand, or the oldest one (None: no such hand)."""
        if user_id is None:
            queue = self.queue_in_order()
            if not queue:
                return None
            user_id = queue[0].user
        if user_id not in self.queue:
            return None
        return self.entry("hand.resolve", actor, entry_id=entry_id, at=at, target=user_id)

    def decide_checkpoint(self, actor: Actor, *, checkpoint: str, entry_id: str, at: float) -> Entry | Refusal | None:
        if not CHECKPOINT_NAME.match(checkpoint):
            return _invalid("a checkpoint's name is 1 to 64 of letters, digits, space, '_', '.', '-'")
        if any(c["user"] == actor.user_id and c["checkpoint"] == checkpoint for c in self.checkpoints):
            return None
        return self.entry("checkpoint", actor, entry_id=entry_id, at=at, checkpoint=checkpoint)

    def decide_report(self, actor: Actor, *, cells_run: int, last_error: str | None, sharing: bool,
                      entry_id: str, at: float) -> Entry | Refusal:
        if isinstance(cells_run, bool) or not isinstance(cells_run, int) or cells_run < 0:
            return _invalid("cells_run is a whole number, 0 or more")
        if last_error is not None and (len(last_error) > MAX_ERROR_TYPE_CHARS or not ERROR_TYPE.match(last_error)):
            return _invalid("last_error is an exception's type name (like 'ZeroDivisionError'), never its message")
        if not sharing:  # nothing is kept of a student who does not share
            return self.entry("pulse", actor, entry_id=entry_id, at=at, sharing=False)
        return self.entry("pulse", actor, entry_id=entry_id, at=at, sharing=True, cells_run=cells_run,
                          last_error=last_error)

    # -- reading -----------------------------------------------------------------------------

    def queue_in_order(self) -> list[Hand]:
        """Raised hands, oldest first (the same order on every process)."""
        return sorted(self.queue.values(), key=lambda hand: (hand.raised_at, hand.user))

    def position(self, user_id: str) -> int | None:
        """1-based place of ``user_id``'s hand in the queue (None: not raised)."""
        for index, hand in enumerate(self.queue_in_order(), 1):
            if hand.user == user_id:
                return index
        return None

    def polls_in_order(self) -> list[Poll]:
        return sorted(self.polls.values(), key=lambda poll: (poll.created, poll.id))

    def poll_for(self, role: Role, poll: Poll) -> dict[str, Any]:
        """A poll's public part as ``role`` sees it (counts: teachers always, others once revealed)."""
        return poll.public(counts=role == Role.TEACHER or poll.revealed)

    @staticmethod
    def hand_json(hand: Hand) -> dict[str, Any]:
        return {"user": hand.user, "name": hand.name, "note": hand.note, "since": hand.raised_at}

    def view_for(self, role: Role, user_id: str, present: Mapping[str, str]) -> dict[str, Any]:
        """The whole view of a connection of ``user_id`` with ``role``; ``present``: the students
        in the room now (user id → name). The server adds ``now`` when it sends it."""
        if role == Role.TEACHER:
            return self._teacher_view(present)
        polls = []
        for poll in self.polls_in_order():
            public = self.poll_for(role, poll)
            if role == Role.STUDENT:
                mine = poll.votes.get(user_id)
                public["my_choice"] = list(mine.choice) if mine is not None else []
            polls.append(public)
        if role != Role.STUDENT:
            return {"role": str(role), "polls": polls, "hand": None}
        hand = self.queue.get(user_id)
        student = self.students.get(user_id)
        return {
            "role": str(role), "polls": polls,
            "hand": {"raised": hand is not None, "position": self.position(user_id),
                     "queue_length": len(self.queue), "note": hand.note if hand is not None else ""},
            "checkpoints": list(student.checkpoints) if student is not None else [],
            "sharing": student.sharing if student is not None else False,
        }

    def _teacher_view(self, present: Mapping[str, str]) -> dict[str, Any]:
        polls = []
        for poll in self.polls_in_order():
            public = poll.public(counts=True)
            if not poll.anonymous:
                public["votes"] = {user: list(vote.choice) for user, vote in poll.votes.items()}
                public["names"] = {user: vote.name for user, vote in poll.votes.items()}
            polls.append(public)
        reached: dict[str, dict[str, str]] = {}  # checkpoint -> the present students who reached it
        for record in sorted(self.checkpoints, key=lambda c: c["at"]):
            if record["user"] not in self.students:  # a teacher trying it out
                continue
            who = reached.setdefault(record["checkpoint"], {})
            if record["user"] in present:
                who.setdefault(record["user"], present[record["user"]])
        pulse = {name: {"done": len(who), "of": len(present), "who": list(who.values())}
                 for name, who in reached.items()}
        status = []
        for student in sorted(self.students.values(), key=lambda s: (s.first_seen, s.user)):
            shares = student.sharing
            status.append({"user": student.user, "name": present.get(student.user, student.name),
                           "present": student.user in present, "sharing": shares,
                           "cells_run": student.cells_run if shares else None,
                           "last_error": student.last_error if shares else None,
                           "last_active": student.last_active if shares else None,
                           "checkpoints": list(student.checkpoints)})
        return {"role": str(Role.TEACHER), "polls": polls,
                "hands": [self.hand_json(hand) for hand in self.queue_in_order()],
                "pulse": pulse, "status": status, "present": len(present)}

    def export(self, messages: list[Any], moderation: list[dict[str, Any]]) -> dict[str, Any]:
        """The lesson's record (``class.export``): anonymous polls with counts, never votes."""
        polls = []
        for poll in self.polls_in_order():
            public = poll.public(counts=True)
            del public["voters"]
            public["votes"] = [] if poll.anonymous else [
                {"user": user, "name": vote.name, "choice": list(vote.choice)} for user, vote in poll.votes.items()]
            polls.append(public)
        hands = [{"user": h.user, "name": h.name, "note": h.note, "raised_at": h.raised_at,
                  "resolved_at": h.resolved_at, "resolved_by": h.resolved_by, "lowered": h.lowered}
                 for h in self.hands]
        return {"messages": messages, "polls": polls, "hands": hands,
                "checkpoints": [dict(c) for c in self.checkpoints],
                "attendance": [dict(a) for a in self.attendance], "moderation": moderation}


def _invalid(message: str) -> Refusal:
    return Refusal(ErrorCode.INVALID_INPUT, message)

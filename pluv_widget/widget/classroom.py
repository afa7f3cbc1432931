"""The classroom as a widget sees it: the server's view of this connection, and polls as objects.

The server holds votes, hands, pulse and status and sends each connection one ``class`` view (its
whole current picture, re-sent when it changes; see the server's classroom module). The widget
keeps the latest one in a :class:`ClassView`; every Python property (``w.polls``,
``w.help_queue``, ``w.pulse``, ``w.class_status``) reads it, so they are live and never ask the
server. Which fields a role receives is the server's decision: a student's view simply has no
votes, no notes but their own, no pulse — nothing here filters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol

from ..client.room import Pending as Answer


class ClassView:
    """The latest ``class`` view and when it arrived. Written on the client's loop, read anywhere
    (one reference swap: a reader sees a whole view, old or new)."""

    def __init__(self) -> None:
        self._state: tuple[dict[str, Any], float] | None = None

    def update(self, view: dict[str, Any]) -> None:
        self._state = (dict(view), time.monotonic())

    @property
    def view(self) -> dict[str, Any] | None:
        state = self._state
        return state[0] if state else None

    def server_now(self) -> float:
        """The server's clock now, estimated from its view's ``now`` and the time since it came
        (so waiting and idle times do not depend on this machine's clock agreeing with the server's)."""
        state = self._state
        if state is None or not isinstance(state[0].get("now"), (int, float)):
            return time.time()
        view, received = state
        return float(view["now"]) + (time.monotonic() - received)

    def get(self, key: str, default: Any = None) -> Any:
        view = self.view
        return default if view is None else view.get(key, default)

    def poll(self, poll_id: str) -> dict[str, Any] | None:
        for poll in self.get("polls") or []:
            if isinstance(poll, dict) and poll.get("id") == poll_id:
                return poll
        return None

    def for_browser(self) -> dict[str, Any]:
        """The view for the ``classroom`` traitlet, its ``now`` brought up to the moment of the push."""
        view = self.view
        if view is None:
            return {}
        return {**view, "now": self.server_now()}

    def status_rows(self) -> list[dict[str, Any]]:
        """The teacher's status rows, each with ``idle_s`` (seconds since the student's last cell
        run, by the server's clock; ``None`` unless they share)."""
        now = self.server_now()
        rows = []
        for row in self.get("status") or []:
            last = row.get("last_active")
            idle = max(0.0, round(now - float(last), 1)) if isinstance(last, (int, float)) else None
            rows.append({**row, "idle_s": idle})
        return rows


class PollHost(Protocol):
    """What a :class:`Poll` needs of its widget (the widget itself)."""

    _class: ClassView

    def _teacher_call(self, procedure: str, data: dict[str, Any]) -> Answer: ...

    def _check_role(self, what: str, *, allowed: tuple[str, ...]) -> None: ...

    def _remember_poll(self, poll: Poll) -> None: ...


class Poll:
    """A poll of the room: live, read from the widget's latest view whenever you look.

    ``w.poll(...)`` returns one at once, before the server has created it: the server assigns
    ids, so :attr:`id` is ``None`` and :attr:`state` ``"pending"`` until then. ``await p`` (or
    ``p.result()`` in a script) waits for the creation and returns the poll, or raises the
    server's refusal; :meth:`reveal`, :meth:`close` and ``w.vote(p, ...)`` made before that
    are sent once it exists.
    """

    def __init__(
        self, host: PollHost, *, data: dict[str, Any], created: concurrent.futures.Future[Any] | None = None
    ) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._draft = dict(data)
        self._id: str | None = str(data["id"]) if "id" in data else None
        self._created: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if created is None:
            self._created.set_result(self)
        else:
            created.add_done_callback(self._on_created)

    def _on_created(self, answer: concurrent.futures.Future[Any]) -> None:
        error = answer.exception()
        if error is not None:
            self._created.set_exception(error)
            return
        result = answer.result()
        with self._lock:
            if isinstance(result, dict):
                self._draft = dict(result)
                self._id = str(result.get("id")) if result.get("id") is not None else None
        if self._id is not None:
            self._host._remember_poll(self)
        self._created.set_result(self)

    # -- waiting for the server ---------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Poll]:
        return asyncio.wrap_future(self._created).__await__()

    def result(self, timeout: float | None = None) -> Poll:
        """Block until the server created the poll (scripts; in a notebook, ``await p``)."""
        poll: Poll = self._created.result(timeout)
        return poll

    def done(self) -> bool:
        return self._created.done()

    # -- what it is now -----------------------------------------------------------------------

    def _data(self) -> dict[str, Any]:
        poll_id = self._id
        live = self._host._class.poll(poll_id) if poll_id is not None else None
        return live if live is not None else self._draft

    @property
    def id(self) -> str | None:
        return self._id

    @property
    def question(self) -> str:
        return str(self._data().get("question", ""))

    @property
    def options(self) -> list[str]:
        return [str(option) for option in self._data().get("options", [])]

    @property
    def multiple(self) -> bool:
        return bool(self._data().get("multiple", False))

    @property
    def anonymous(self) -> bool:
        return bool(self._data().get("anonymous", False))

    @property
    def state(self) -> str:
        """``"open"``, ``"closed"``, or ``"pending"`` until the server created it."""
        if self._id is None:
            return "failed" if self._created.done() else "pending"
        return str(self._data().get("state", "open"))

    @property
    def revealed(self) -> bool:
        return bool(self._data().get("revealed", False))

    @property
    def voters(self) -> int:
        return int(self._data().get("voters", 0) or 0)

    @property
    def my_choice(self) -> list[str]:
        """What I voted (students; ``[]`` before voting or for a teacher's view)."""
        return [str(choice) for choice in self._data().get("my_choice") or []]

    @property
    def votes(self) -> dict[str, list[str]] | None:
        """Teachers, non-anonymous polls: ``{user_id: [choices]}``; otherwise ``None``."""
        votes = self._data().get("votes")
        return {str(user): list(choices) for user, choices in votes.items()} if isinstance(votes, dict) else None

    def results(self) -> dict[str, int] | None:
        """``{option: count}``: teachers always (live), students and observers once revealed, else ``None``."""
        counts = self._data().get("counts")
        if not isinstance(counts, dict):
            return None
        return {option: int(counts.get(option, 0) or 0) for option in self.options}

    # -- what a teacher does ------------------------------------------------------------------

    def reveal(self) -> Answer:
        """Show the counts to everyone (teachers). Awaitable."""
        return self._after_creation("polls.reveal")

    def close(self) -> Answer:
        """No more votes (teachers). Awaitable."""
        return self._after_creation("polls.close")

    def _after_creation(self, procedure: str) -> Answer:
        self._host._check_role(f"call {procedure!r} (teachers only)", allowed=("teacher",))
        return self.then(lambda poll_id: self._host._teacher_call(procedure, {"poll": poll_id}))

    def then(self, send: Callable[[str], Answer]) -> Answer:
        """``send(id)`` now if the poll exists, else once the server created it (chained answer)."""
        if self._id is not None:
            return send(self._id)
        chained: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def created(future: concurrent.futures.Future[Any]) -> None:
            error = future.exception()
            if error is not None or self._id is None:
                chained.set_exception(error or RuntimeError("the poll was not created"))
                return
            try:
                answer = send(self._id)
            except Exception as refused:
                chained.set_exception(refused)
                return
            answer.future.add_done_callback(lambda done: _copy_outcome(done, chained))

        self._created.add_done_callback(created)
        return Answer(chained)

    def __eq__(self, other: object) -> bool:
        """Two Poll objects of one widget are the same poll when they have the same id (the
        creator's object and one ``w.polls`` made are interchangeable)."""
        if not isinstance(other, Poll):
            return NotImplemented
        if self is other:
            return True
        return self._host is other._host and self._id is not None and self._id == other._id

    def __hash__(self) -> int:  # stable while the id is pending; equal polls share their widget
        return hash(id(self._host))

    def __repr__(self) -> str:
        voters = f", {self.voters} voter{'s' * (self.voters != 1)}" if self._id is not None else ""
        shown = ", revealed" if self.revealed else ""
        return f"Poll({self.question!r}, {self.options!r}, {self.state}{shown}{voters})"


def _copy_outcome(source: concurrent.futures.Future[Any], target: concurrent.futures.Future[Any]) -> None:
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def help_queue(view: ClassView, role: str) -> list[dict[str, Any]] | dict[str, Any] | None:
    """Teachers: the queue ``[{user, name, note, since}]`` oldest first; students: ``{position,
    queue_length}`` (their own place only); ``None`` for observers and before the first view."""
    if view.view is None:
        return None
    if role == "teacher":
        return [dict(hand) for hand in view.get("hands") or []]
    hand = view.get("hand")
    if not isinstance(hand, dict):
        return None
    return {"position": hand.get("position"), "queue_length": int(hand.get("queue_length") or 0)}

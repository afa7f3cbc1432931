"""Teacher tools through RoomWidget's public API, against a real server with teacher, student and
observer codes: polls, the help queue, checkpoints and the pulse (IPython's post_run_cell in a
real InteractiveShell), follow the teacher, the view's allow-listed calls, and the export.

Widgets run as in a script (their client's loop in a thread): every check waits, event-driven
with a generous deadline, for the widgets' traitlets to catch up with the server.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import DEADLINE_S
from helpers import until_widget as until

from pluv_widget.errors import PermissionDenied, ProcedureError
from pluv_widget.widget import RoomWidget, registry
from pluv_widget.widget.classroom import Poll

SECRET = "s3cret-for-tests-only-32-bytes-long!"
CODES = ("--secret", SECRET, "--join-code", "STUDENTS", "--teacher-code", "TEACH", "--observer-code", "SCREEN")


@pytest.fixture
def url(server_process: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PLUV_WIDGET_HOME", str(tmp_path / "home"))  # the widgets' name claims
    return str(server_process("--memory", *CODES).url)


@pytest.fixture
def join(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., RoomWidget]]:
    """``join(name, code, room="class")``: a widget in the room, open and holding its first view.

    Each widget here stands for another person's kernel; a kernel keeps one widget per room (a
    newer one replaces the older), so that per-process registry is switched off for these tests.
    """
    monkeypatch.setattr(registry, "claim", lambda _widget: None)
    monkeypatch.setattr(registry, "release", lambda _widget: None)
    made: list[RoomWidget] = []

    def make(name: str, code: str, room: str = "class") -> RoomWidget:
        widget = RoomWidget(room, user=name, url=url, join_code=code)
        made.append(widget)
        until(widget, lambda: widget.connection_state == "open" and widget.classroom.get("role"))
        return widget

    yield make
    for widget in made:
        widget.leave()


@pytest.fixture
def shell() -> Iterator[Any]:
    """A real IPython shell (what a kernel runs), so widgets register their post_run_cell hook."""
    from IPython.core.interactiveshell import InteractiveShell

    instance = InteractiveShell.instance()
    yield instance
    InteractiveShell.clear_instance()


def wait(answer: Any) -> Any:
    return answer.result(DEADLINE_S)


def from_view(widget: RoomWidget, content: dict[str, Any]) -> None:
    """What the browser sends: a custom message, handed to the client's loop as the comm does."""
    widget._on_frontend_message(widget, content, [])


def test_a_poll_from_question_to_reveal(join: Callable[..., RoomWidget]) -> None:
    teacher = join("Ms L", "TEACH")
    ada, bob = join("Ada", "STUDENTS"), join("Bob", "STUDENTS")
    until(teacher, lambda: teacher.classroom.get("present") == 2)

    poll = teacher.poll("Which sort is stable?", ["quicksort", "mergesort", "heapsort"])
    assert isinstance(poll, Poll) and poll.question == "Which sort is stable?"
    assert wait(poll) is poll and poll.id is not None and poll.state == "open"  # the server's id
    until(teacher, lambda: teacher.polls == [poll])  # the same object, now read from the view
    assert poll.results() == {"quicksort": 0, "mergesort": 0, "heapsort": 0}

    until(ada, lambda: len(ada.polls) == 1)
    ada_poll = ada.polls[0]
    assert ada_poll.id == poll.id and ada_poll.options == ["quicksort", "mergesort", "heapsort"]
    assert ada_poll.results() is None  # students: nothing until the reveal

    assert wait(ada.vote(poll.id, "quicksort")) == {"poll": poll.id, "choice": ["quicksort"]}
    wait(bob.vote(poll.id, "mergesort"))
    until(teacher, lambda: poll.voters == 2)
    assert poll.results() == {"quicksort": 1, "mergesort": 1, "heapsort": 0}
    until(teacher, lambda: [p["voters"] for p in teacher.classroom.get("polls", [])] == [2])  # the traitlet too
    assert teacher.classroom["present"] == 2

    wait(ada.vote(ada_poll, "mergesort"))  # again = a change of vote, still one voter
    until(teacher, lambda: poll.results() == {"quicksort": 0, "mergesort": 2, "heapsort": 0})
    assert poll.voters == 2 and poll.votes is not None and sorted(poll.votes.values()) == [["mergesort"]] * 2
    until(ada, lambda: ada_poll.my_choice == ["mergesort"])
    assert ada_poll.results() is None and ada_poll.votes is None

    # A student's view never holds another student's vote: not even the key.
    assert "votes" not in json.dumps(bob.classroom) and bob.polls[0].my_choice == ["mergesort"]
    until(bob, lambda: len(bob.classroom.get("polls", [])) == 1)
    assert bob.classroom["polls"][0].get("counts") is None

    wait(poll.reveal())
    until(ada, lambda: ada_poll.revealed)
    assert ada_poll.results() == {"quicksort": 0, "mergesort": 2, "heapsort": 0}

    wait(poll.close())
    until(bob, lambda: bob.polls[0].state == "closed")
    with pytest.raises(ProcedureError, match="the poll is closed") as refused:
        wait(bob.vote(poll.id, "heapsort"))
    assert refused.value.code == "invalid_input"
    with pytest.raises(ProcedureError) as unknown:
        wait(ada.vote("no-such-poll", "mergesort"))
    assert unknown.value.code == "invalid_input"


def test_several_answers_and_anonymous_polls(join: Callable[..., RoomWidget]) -> None:
    teacher, ada = join("Ms L", "TEACH"), join("Ada", "STUDENTS")
    several = wait(teacher.poll("Which are stable?", ["insertion", "merge", "heap"], multiple=True))
    secret = wait(teacher.poll("Did you do the reading?", ["yes", "no"], anonymous=True))
    assert several.multiple and secret.anonymous
    until(teacher, lambda: [p.id for p in teacher.polls] == [several.id, secret.id])  # oldest first
    wait(ada.vote(several.id, ["insertion", "merge"]))
    with pytest.raises(ProcedureError):
        wait(ada.vote(several.id, ["insertion", "quick"]))  # not an option
    wait(ada.vote(secret.id, "no"))
    until(teacher, lambda: secret.voters == 1 and several.voters == 1)
    assert several.results() == {"insertion": 1, "merge": 1, "heap": 0}
    assert several.votes == {ada.me["id"]: ["insertion", "merge"]}
    assert secret.results() == {"yes": 0, "no": 1} and secret.votes is None  # counts only, for anyone
    until(teacher, lambda: len(teacher.classroom.get("polls", [])) == 2)
    assert not teacher.classroom["polls"][1].get("names") and "votes" not in teacher.classroom["polls"][1]


def test_what_a_role_may_not_do_is_refused_at_once(join: Callable[..., RoomWidget]) -> None:
    teacher, ada, screen = join("Ms L", "TEACH"), join("Ada", "STUDENTS"), join("Projector", "SCREEN")
    for attempt in (
        lambda: ada.poll("?", ["a", "b"]),
        lambda: ada.resolve_hand(teacher.me["id"]),
        ada.next_hand,
        ada.export,
        lambda: ada.pulse,
        lambda: ada.class_status,
        lambda: ada.point_to("Part 1"),
        lambda: screen.vote("p", "a"),
        lambda: screen.raise_hand("?"),
        lambda: screen.checkpoint("ex1"),
        lambda: screen.share_progress(True),
    ):
        with pytest.raises(PermissionDenied):
            attempt()
    wait(teacher.poll("Ready?", ["yes", "no"]))
    until(ada, lambda: len(ada.polls) == 1)
    with pytest.raises(PermissionDenied):
        ada.polls[0].reveal()
    assert screen.help_queue is None  # an observer has no place in the queue
    until(screen, lambda: len(screen.polls) == 1)
    assert screen.polls[0].results() is None


def test_the_help_queue(join: Callable[..., RoomWidget]) -> None:
    teacher = join("Ms L", "TEACH")
    ada, bob = join("Ada", "STUDENTS"), join("Bob", "STUDENTS")
    assert teacher.help_queue == [] and ada.help_queue == {"position": None, "queue_length": 0}
    assert wait(ada.raise_hand("stuck on 3b")) == {"position": 1, "queue_length": 1}
    wait(bob.raise_hand("what is a CRDT?"))
    until(teacher, lambda: len(teacher.help_queue or []) == 2)
    queue = teacher.help_queue
    assert isinstance(queue, list)
    assert [(hand["name"], hand["note"]) for hand in queue] == [("Ada", "stuck on 3b"), ("Bob", "what is a CRDT?")]
    assert queue[0]["since"] <= queue[1]["since"] <= time.time() + 5
    until(bob, lambda: bob.help_queue == {"position": 2, "queue_length": 2})
    assert "stuck on 3b" not in json.dumps(bob.classroom)  # another student's note never reaches Bob

    assert wait(teacher.resolve_hand(ada.me["id"])) == {"resolved": True}
    until(bob, lambda: bob.help_queue == {"position": 1, "queue_length": 1})
    until(ada, lambda: ada.help_queue == {"position": None, "queue_length": 1})
    hand = wait(teacher.next_hand())
    assert hand is not None and hand["name"] == "Bob" and hand["note"] == "what is a CRDT?"
    assert wait(teacher.next_hand()) is None
    wait(ada.raise_hand())
    assert wait(ada.lower_hand()) == {"lowered": True}
    until(teacher, lambda: teacher.help_queue == [])


def test_checkpoints_and_the_pulse_from_post_run_cell(join: Callable[..., RoomWidget], shell: Any) -> None:
    teacher = join("Ms L", "TEACH")
    ada, bob = join("Ada", "STUDENTS"), join("Bob", "STUDENTS")
    # Counting starts at once (the view previews it); nothing is shared before the opt-in.
    shell.run_cell("x = 1")
    shell.run_cell("1 / 0")
    until(ada, lambda: ada.progress.get("cells_run") == 2)
    assert ada.progress["last_error"] == "ZeroDivisionError" and ada.progress["sharing"] is False
    assert ada.progress["counting"] is True
    until(teacher, lambda: len(teacher.class_status) == 2)
    assert all(row["cells_run"] is None and row["idle_s"] is None for row in teacher.class_status)

    wait(ada.checkpoint("ex1"))
    wait(bob.checkpoint("ex1"))
    wait(bob.checkpoint("ex2"))
    until(teacher, lambda: teacher.pulse.get("ex1", {}).get("done") == 2 and "ex2" in teacher.pulse)
    assert teacher.pulse["ex1"]["of"] == 2 and sorted(teacher.pulse["ex1"]["who"]) == ["Ada", "Bob"]
    assert teacher.pulse["ex2"]["done"] == 1
    until(bob, lambda: bob.classroom.get("checkpoints") == ["ex1", "ex2"])

    wait(ada.share_progress(True))
    for source in ("y = 2", "undefined_name", "z = 3", "[][1]"):  # a burst: reports are coalesced
        shell.run_cell(source)

    def ada_row() -> dict[str, Any]:
        return next(row for row in teacher.class_status if row["name"] == "Ada")

    until(teacher, lambda: ada_row()["cells_run"] == 6)
    row = ada_row()
    assert row["sharing"] is True and row["last_error"] == "IndexError" and row["present"] is True
    assert row["checkpoints"] == ["ex1"] and 0 <= row["idle_s"] < 60
    bob_row = next(row for row in teacher.class_status if row["name"] == "Bob")
    assert bob_row["sharing"] is False and bob_row["cells_run"] is None and bob_row["last_error"] is None
    assert "1 / 0" not in json.dumps(teacher.classroom)  # a type name, never code or values

    wait(ada.share_progress(False))
    until(teacher, lambda: ada_row()["sharing"] is False and ada_row()["cells_run"] is None)
    hooks = shell.events.callbacks["post_run_cell"]
    assert ada._progress.on_cell_run in hooks
    ada.leave()
    assert ada._progress.on_cell_run not in hooks  # leaving unregisters


def test_follow_the_teacher(join: Callable[..., RoomWidget]) -> None:
    teacher, ada = join("Ms L", "TEACH"), join("Ada", "STUDENTS")
    assert ada.teacher_cell is None
    teacher.point_to("Part 2 — merging", 5, 20)
    until(ada, lambda: ada.teacher_cell is not None)
    assert ada.teacher_cell == {"heading": "Part 2 — merging", "index": 5, "count": 20}
    until(ada, lambda: any(person["cell"] for person in ada.others))  # the traitlet, after a push
    shown = next(person for person in ada.others if person["name"] == "Ms L")
    assert shown["role"] == "teacher" and shown["cell"] == ada.teacher_cell
    # The teacher's view reports the active cell the same way (a frontend message).
    from_view(teacher, {"type": "cell", "heading": "Part 3", "index": 9, "count": 20})
    until(ada, lambda: (ada.teacher_cell or {}).get("heading") == "Part 3")
    # A student's view reporting a position changes nothing (students find the teacher by role).
    from_view(ada, {"type": "cell", "heading": "fake", "index": 0, "count": 1})
    from_view(ada, {"type": "call", "procedure": "no.such"})  # handled after the cell message
    until(ada, lambda: "no.such" in ada.error)
    assert "cell" not in ada.room.my_presence
    from_view(teacher, {"type": "cell", "heading": 3, "index": "x"})  # not a position: shown, not shared
    until(teacher, lambda: "heading" in teacher.error)


def test_the_view_may_call_only_its_allow_list(join: Callable[..., RoomWidget]) -> None:
    teacher, ada = join("Ms L", "TEACH"), join("Ada", "STUDENTS")
    from_view(ada, {"type": "call", "procedure": "hands.raise", "input": {"note": "from the view"}})
    until(teacher, lambda: [hand["note"] for hand in teacher.help_queue or []] == ["from the view"])
    from_view(ada, {"type": "call", "procedure": "room.reset", "input": {}})
    until(ada, lambda: "may not call 'room.reset'" in ada.error)
    from_view(ada, {"type": "call", "procedure": "users.mute", "input": {"user_id": teacher.me["id"]}})
    until(ada, lambda: "a student may not call 'users.mute'" in ada.error)  # no moderation to forward
    from_view(teacher, {"type": "call", "procedure": "users.mute", "input": {"user_id": ada.me["id"]}})
    from_view(teacher, {"type": "call", "procedure": "polls.create",
                        "input": {"question": "From the view?", "options": ["a", "b"]}})
    until(ada, lambda: [p.question for p in ada.polls] == ["From the view?"])  # sent after the mute
    with pytest.raises(PermissionDenied) as muted:
        wait(ada.raise_hand("muted now?"))  # the teacher's view muted Ada: the server refuses
    assert muted.value.code == "muted"
    from_view(teacher, {"type": "share-progress", "share": True})
    until(teacher, lambda: teacher.progress.get("sharing") is True)


def test_export_as_a_dict_json_and_csv(join: Callable[..., RoomWidget], tmp_path: Path) -> None:
    teacher = join("Ms L", "TEACH")
    ada, bob = join("Ada", "STUDENTS"), join("Bob", "STUDENTS")
    ada.post("hello")
    named = wait(teacher.poll("Stable?", ["merge", "quick"]))
    secret = wait(teacher.poll("Confident?", ["yes", "no"], anonymous=True))
    for student, choice in ((ada, "merge"), (bob, "quick")):
        wait(student.vote(named.id, choice))
        wait(student.vote(secret.id, "yes"))
    wait(ada.raise_hand("help"))
    wait(teacher.resolve_hand(ada.me["id"]))
    wait(bob.checkpoint("ex1"))
    wait(teacher.mute(bob.me["id"]))
    bob.leave()

    data = wait(teacher.export())
    assert set(data) >= {"messages", "polls", "hands", "checkpoints", "attendance", "moderation"}
    polls = {poll["question"]: poll for poll in data["polls"]}
    assert sorted((vote["name"], vote["choice"]) for vote in polls["Stable?"]["votes"]) == [
        ("Ada", ["merge"]), ("Bob", ["quick"])]
    assert polls["Confident?"]["votes"] == [] and polls["Confident?"]["counts"] == {"yes": 2, "no": 0}
    assert [(hand["name"], hand["note"]) for hand in data["hands"]] == [("Ada", "help")]
    assert data["hands"][0]["resolved_at"] is not None
    assert [(c["name"], c["checkpoint"]) for c in data["checkpoints"]] == [("Bob", "ex1")]
    assert {(a["name"], a["event"]) for a in data["attendance"]} >= {("Ada", "join"), ("Bob", "join")}
    assert any(entry.get("target") == bob.me["id"] or "mute" in json.dumps(entry) for entry in data["moderation"])

    written = wait(teacher.export(tmp_path / "class.json"))
    assert json.loads((tmp_path / "class.json").read_text())["polls"] == written["polls"]
    wait(teacher.export(str(tmp_path / "class.csv")))
    with (tmp_path / "class.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    kinds = {row["kind"] for row in rows}
    assert {"message", "poll", "vote", "hand", "checkpoint", "attendance"} <= kinds
    votes = [row for row in rows if row["kind"] == "vote"]
    assert len(votes) == 2 and all(row["poll"] == named.id for row in votes)  # none for the anonymous poll
    assert json.loads(next(row for row in votes if row["name"] == "Ada")["choice"]) == ["merge"]
    with pytest.raises(ValueError, match=r"\.csv or a \.json"):
        teacher.export(tmp_path / "class.xlsx")

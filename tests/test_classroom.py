"""The classroom (issue 13) on real servers: polls, the help queue, the class pulse, attendance and
the export, each rule enforced by the server — over the public client API and over raw frames —
and what a student's connection may never receive."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from helpers import until, url_of
from redis_helpers import RedisServer
from test_permissions import SECRET, endpoint, enter, eventually, next_text

from pluv_widget import create_io
from pluv_widget.core.classroom import Actor, Classroom
from pluv_widget.core.permissions import Role
from pluv_widget.errors import PermissionDenied, ProcedureError
from pluv_widget.protocol import PROTOCOL_VERSION, ClassView, decode_server_message
from pluv_widget.server.room_server import RoomServer

_rooms = itertools.count()
QUESTION = {"question": "Which sort is stable?", "options": ["quicksort", "mergesort", "heapsort"]}


def view(room: Any) -> dict[str, Any]:
    current = room.class_view
    assert current is not None
    return dict(current)


def poll_of(room: Any, poll_id: str) -> dict[str, Any] | None:
    current = room.class_view
    if current is None:
        return None
    return next((p for p in current["polls"] if p["id"] == poll_id), None)


async def until_view(room: Any, condition: Any) -> dict[str, Any]:
    """Wait until the room's class view satisfies ``condition(view)``."""
    await until(room, lambda: room.class_view is not None and condition(room.class_view))
    return view(room)


@pytest.fixture
async def lesson(start_server: Any, make_client: Any) -> dict[str, Any]:
    server = await start_server(secret=SECRET)
    return {
        "server": server,
        "teacher": await enter(make_client, server, "teacher", "teacher"),
        "ada": await enter(make_client, server, "ada", "student"),
        "bob": await enter(make_client, server, "bob", "student"),
        "screen": await enter(make_client, server, "screen", "observer"),
    }


# -- the wire ----------------------------------------------------------------------------------------


def test_the_class_message_is_decoded_and_a_client_may_not_send_it() -> None:
    frame = ClassView({"role": "student", "polls": [], "now": 1.0}).encode()
    assert json.loads(frame) == {"type": "class", "view": {"role": "student", "polls": [], "now": 1.0}}
    assert decode_server_message(frame) == ClassView({"role": "student", "polls": [], "now": 1.0})


async def test_every_role_gets_its_view_after_welcome(lesson: dict[str, Any]) -> None:
    teacher = await until_view(lesson["teacher"], lambda v: v["present"] == 2)
    assert teacher["role"] == "teacher" and teacher["hands"] == [] and teacher["polls"] == []
    assert [row["user"] for row in teacher["status"]] == ["ada", "bob"]
    assert all(row["present"] and not row["sharing"] and row["cells_run"] is None for row in teacher["status"])
    ada = await until_view(lesson["ada"], lambda v: True)
    assert ada["role"] == "student" and ada["hand"] == {"raised": False, "position": None, "queue_length": 0,
                                                        "note": ""}
    assert ada["checkpoints"] == [] and ada["sharing"] is False and "status" not in ada and "pulse" not in ada
    screen = await until_view(lesson["screen"], lambda v: True)
    assert screen["role"] == "observer" and screen["hand"] is None and "status" not in screen
    assert isinstance(ada["now"], float) and abs(ada["now"] - time.time()) < 60


# -- polls -------------------------------------------------------------------------------------------


async def test_only_teachers_create_reveal_and_close_polls(lesson: dict[str, Any]) -> None:
    ada, screen, teacher = lesson["ada"], lesson["screen"], lesson["teacher"]
    for room in (ada, screen):
        with pytest.raises(PermissionDenied):
            await room.call("polls.create", QUESTION)
    poll = await teacher.call("polls.create", QUESTION)
    assert poll["state"] == "open" and poll["revealed"] is False and poll["voters"] == 0
    assert poll["counts"] == {"quicksort": 0, "mergesort": 0, "heapsort": 0}
    for procedure in ("polls.reveal", "polls.close"):
        with pytest.raises(PermissionDenied):
            await ada.call(procedure, {"poll": poll["id"]})
    with pytest.raises(PermissionDenied):
        await screen.call("polls.vote", {"poll": poll["id"], "choice": "mergesort"})  # observers are read-only
    assert (await teacher.call("polls.reveal", {"poll": poll["id"]}))["revealed"] is True
    assert (await teacher.call("polls.close", {"poll": poll["id"]}))["state"] == "closed"


async def test_bad_polls_are_refused_with_clear_words(lesson: dict[str, Any]) -> None:
    teacher = lesson["teacher"]
    cases = [
        ({"question": "", "options": ["a", "b"]}, "question"),
        ({"question": "q", "options": ["a"]}, "options"),
        ({"question": "q", "options": ["a", "a"]}, "distinct"),
        ({"question": "q", "options": ["a", "  "]}, "blank"),
        ({"question": "q", "options": [str(i) for i in range(13)]}, "options"),
    ]
    for data, words in cases:
        with pytest.raises(ProcedureError) as refused:
            await teacher.call("polls.create", data)
        assert refused.value.code == "invalid_input" and words in str(refused.value), refused.value


async def test_one_vote_per_person_and_a_revote_changes_it(lesson: dict[str, Any], make_client: Any) -> None:
    teacher, ada, bob, server = lesson["teacher"], lesson["ada"], lesson["bob"], lesson["server"]
    poll = await teacher.call("polls.create", QUESTION)
    assert await ada.call("polls.vote", {"poll": poll["id"], "choice": "quicksort"}) == {
        "poll": poll["id"], "choice": ["quicksort"]}
    await ada.call("polls.vote", {"poll": poll["id"], "choice": "mergesort"})  # a change of mind
    ada_tab = await enter(make_client, server, "ada", "student")  # a second tab is the same voter
    await ada_tab.call("polls.vote", {"poll": poll["id"], "choice": ["mergesort"]})
    await bob.call("polls.vote", {"poll": poll["id"], "choice": "heapsort"})
    seen = await until_view(teacher, lambda v: v["polls"] and v["polls"][0]["voters"] == 2
                            and v["polls"][0]["counts"]["heapsort"] == 1)
    assert seen["polls"][0]["counts"] == {"quicksort": 0, "mergesort": 1, "heapsort": 1}
    assert seen["polls"][0]["votes"] == {"ada": ["mergesort"], "bob": ["heapsort"]}
    assert seen["polls"][0]["names"] == {"ada": "Ada", "bob": "Bob"}
    mine = await until_view(ada_tab, lambda v: v["polls"] and v["polls"][0]["my_choice"] == ["mergesort"])
    assert mine["polls"][0]["voters"] == 2


async def test_votes_are_checked_against_the_poll(lesson: dict[str, Any]) -> None:
    teacher, ada = lesson["teacher"], lesson["ada"]
    single = await teacher.call("polls.create", QUESTION)
    multi = await teacher.call("polls.create", {**QUESTION, "multiple": True})
    with pytest.raises(ProcedureError, match="not an option"):
        await ada.call("polls.vote", {"poll": single["id"], "choice": "bogosort"})
    with pytest.raises(ProcedureError, match="one choice"):
        await ada.call("polls.vote", {"poll": single["id"], "choice": ["quicksort", "heapsort"]})
    with pytest.raises(ProcedureError, match="no poll"):
        await ada.call("polls.vote", {"poll": "nope", "choice": "quicksort"})
    both = await ada.call("polls.vote", {"poll": multi["id"], "choice": ["quicksort", "heapsort"]})
    assert both["choice"] == ["quicksort", "heapsort"]
    await teacher.call("polls.close", {"poll": single["id"]})
    with pytest.raises(ProcedureError) as refused:
        await ada.call("polls.vote", {"poll": single["id"], "choice": "quicksort"})
    assert refused.value.code == "invalid_input" and "the poll is closed" in str(refused.value)
    seen = await until_view(teacher, lambda v: len(v["polls"]) == 2 and v["polls"][1]["voters"] == 1)
    assert seen["polls"][0]["state"] == "closed" and seen["polls"][0]["voters"] == 0
    assert seen["polls"][1]["counts"] == {"quicksort": 1, "mergesort": 0, "heapsort": 1}


async def test_students_see_counts_only_after_the_reveal(lesson: dict[str, Any]) -> None:
    teacher, ada, bob, screen = lesson["teacher"], lesson["ada"], lesson["bob"], lesson["screen"]
    poll = await teacher.call("polls.create", QUESTION)
    await ada.call("polls.vote", {"poll": poll["id"], "choice": "mergesort"})
    await bob.call("polls.vote", {"poll": poll["id"], "choice": "mergesort"})
    for room in (ada, bob, screen):
        seen = await until_view(room, lambda v: v["polls"] and v["polls"][0]["voters"] == 2)
        assert seen["polls"][0]["counts"] is None and "votes" not in seen["polls"][0]
    assert view(screen)["polls"][0].get("my_choice") is None
    await teacher.call("polls.reveal", {"poll": poll["id"]})
    for room in (ada, bob, screen):
        seen = await until_view(room, lambda v: v["polls"][0]["revealed"])
        assert seen["polls"][0]["counts"] == {"quicksort": 0, "mergesort": 2, "heapsort": 0}
        assert "votes" not in seen["polls"][0] and "names" not in seen["polls"][0]


def named(polls: list[dict[str, Any]]) -> str:
    """What polls say, as text, but their ids: a random hex id may well hold "ada"."""
    return json.dumps([{key: value for key, value in poll.items() if key != "id"} for poll in polls])


async def test_an_anonymous_poll_never_names_its_voters(lesson: dict[str, Any]) -> None:
    teacher, ada, bob = lesson["teacher"], lesson["ada"], lesson["bob"]
    poll = await teacher.call("polls.create", {**QUESTION, "anonymous": True})
    await ada.call("polls.vote", {"poll": poll["id"], "choice": "mergesort"})
    await bob.call("polls.vote", {"poll": poll["id"], "choice": "heapsort"})
    await teacher.call("polls.reveal", {"poll": poll["id"]})
    seen = await until_view(teacher, lambda v: v["polls"] and v["polls"][0]["voters"] == 2)
    assert seen["polls"][0]["counts"] == {"quicksort": 0, "mergesort": 1, "heapsort": 1}
    assert "votes" not in seen["polls"][0] and "names" not in seen["polls"][0]
    assert "ada" not in named(seen["polls"]) and "Bob" not in named(seen["polls"])
    mine = await until_view(ada, lambda v: v["polls"] and v["polls"][0]["revealed"])
    assert mine["polls"][0]["my_choice"] == ["mergesort"]  # each still sees their own choice
    exported = await teacher.call("class.export", {})
    assert exported["polls"][0]["votes"] == [] and exported["polls"][0]["counts"]["heapsort"] == 1
    assert "ada" not in named(exported["polls"]) and "bob" not in named(exported["polls"])


async def raw_student(server: RoomServer, user_id: str) -> Any:
    token = endpoint(server, user_id, "student")("class")
    socket = await websockets.connect(f"{url_of(server)}/class?token={token}")
    await socket.send(json.dumps({"type": "join", "protocol": PROTOCOL_VERSION, "presence": {}}))
    return socket


async def test_a_raw_student_gets_forbidden_for_every_teacher_procedure(lesson: dict[str, Any]) -> None:
    socket = await raw_student(lesson["server"], "mallory")
    teacher_only = {"polls.create": QUESTION, "polls.reveal": {"poll": "x"}, "polls.close": {"poll": "x"},
                    "hands.resolve": {"user_id": "ada"}, "hands.next": {}, "class.export": {}}
    for call_id, (procedure, data) in enumerate(teacher_only.items(), 1):
        await socket.send(json.dumps({"type": "call", "id": call_id, "procedure": procedure, "input": data}))
        error = await next_text(socket, "error")
        assert error["id"] == call_id and error["code"] == "forbidden", (procedure, error)
    # and a client may not send a class view
    await socket.send(json.dumps({"type": "class", "view": {"role": "teacher"}}))
    assert (await next_text(socket, "error"))["code"] == "unknown_type"
    await socket.close()


async def test_a_student_connection_never_receives_another_students_vote(lesson: dict[str, Any]) -> None:
    teacher, ada, bob, server = lesson["teacher"], lesson["ada"], lesson["bob"], lesson["server"]
    socket = await raw_student(server, "eve")
    frames: list[str] = []

    async def collect() -> None:
        async for frame in socket:
            if isinstance(frame, str):
                frames.append(frame)

    collector = asyncio.create_task(collect())
    poll = await teacher.call("polls.create", QUESTION)
    await ada.call("polls.vote", {"poll": poll["id"], "choice": "heapsort"})
    await bob.call("polls.vote", {"poll": poll["id"], "choice": "quicksort"})
    await ada.call("hands.raise", {"note": "ADA-SECRET-NOTE"})
    await ada.call("pulse.report", {"cells_run": 4242, "last_error": "AdaSecretError", "sharing": True})
    await ada.call("pulse.checkpoint", {"name": "ex1"})
    await until_view(teacher, lambda v: v["polls"] and v["polls"][0]["voters"] == 2 and v["hands"]
                     and v["status"] and any(r["cells_run"] == 4242 for r in v["status"]))
    await eventually(lambda: any('"voters":2' in frame for frame in frames))
    await asyncio.sleep(0.2)
    collector.cancel()
    await socket.close()
    received = "\n".join(frames)
    for secret in ("ADA-SECRET-NOTE", "4242", "AdaSecretError", '"votes"', '"names"', '"status"', '"pulse"',
                   '"hands"', '"choice"'):
        assert secret not in received, secret
    views = [json.loads(frame)["view"] for frame in frames if json.loads(frame)["type"] == "class"]
    assert views and all(v["role"] == "student" for v in views)
    public = {"id", "question", "options", "multiple", "anonymous", "state", "revealed", "created", "voters",
              "counts", "my_choice"}
    for seen in views:
        for poll_view in seen["polls"]:
            assert set(poll_view) == public and poll_view["counts"] is None and poll_view["my_choice"] == []
    assert views[-1]["hand"] == {"raised": False, "position": None, "queue_length": 1, "note": ""}


# -- hands -------------------------------------------------------------------------------------------


async def test_hands_queue_in_order_with_positions_next_and_resolve(lesson: dict[str, Any],
                                                                    make_client: Any) -> None:
    teacher, ada, bob, server = lesson["teacher"], lesson["ada"], lesson["bob"], lesson["server"]
    carol = await enter(make_client, server, "carol", "student")
    assert await ada.call("hands.raise", {"note": "stuck on 3b"}) == {"position": 1, "queue_length": 1}
    assert await bob.call("hands.raise", {}) == {"position": 2, "queue_length": 2}
    assert await carol.call("hands.raise", {"note": "me too"}) == {"position": 3, "queue_length": 3}
    # raising again changes the note and keeps the place
    assert await ada.call("hands.raise", {"note": "stuck on 3c"}) == {"position": 1, "queue_length": 3}
    with pytest.raises(PermissionDenied):
        await ada.call("hands.resolve", {"user_id": "bob"})
    seen = await until_view(teacher, lambda v: len(v["hands"]) == 3)
    assert [(h["user"], h["name"], h["note"]) for h in seen["hands"]] == [
        ("ada", "Ada", "stuck on 3c"), ("bob", "Bob", ""), ("carol", "Carol", "me too")]
    assert seen["hands"][0]["since"] <= seen["hands"][1]["since"] <= seen["hands"][2]["since"]
    mine = await until_view(carol, lambda v: v["hand"]["queue_length"] == 3)
    assert mine["hand"] == {"raised": True, "position": 3, "queue_length": 3, "note": "me too"}
    nxt = await teacher.call("hands.next", {})
    assert nxt["user"] == "ada" and nxt["note"] == "stuck on 3c"
    assert await teacher.call("hands.resolve", {"user_id": "carol"}) == {"resolved": True}
    assert await teacher.call("hands.resolve", {"user_id": "carol"}) == {"resolved": False}
    await until_view(bob, lambda v: v["hand"] == {"raised": True, "position": 1, "queue_length": 1, "note": ""})
    assert await bob.call("hands.lower", {}) == {"lowered": True}
    assert await bob.call("hands.lower", {}) == {"lowered": False}
    assert await teacher.call("hands.next", {}) is None
    await until_view(teacher, lambda v: v["hands"] == [])
    exported = await teacher.call("class.export", {})
    hands = {h["user"]: h for h in exported["hands"]}
    assert hands["ada"]["resolved_by"] == "teacher" and hands["ada"]["resolved_at"] is not None
    assert hands["bob"]["lowered"] is True and hands["bob"]["resolved_at"] is None
    with pytest.raises(ProcedureError):
        await ada.call("hands.raise", {"note": "x" * 301})


# -- pulse -------------------------------------------------------------------------------------------


async def test_pulse_counts_checkpoints_of_the_students_present(lesson: dict[str, Any], make_client: Any) -> None:
    teacher, ada, bob, server = lesson["teacher"], lesson["ada"], lesson["bob"], lesson["server"]
    assert await ada.call("pulse.checkpoint", {"name": "ex3"}) == {"checkpoint": "ex3"}
    await ada.call("pulse.checkpoint", {"name": "ex3"})  # twice is once
    await bob.call("pulse.checkpoint", {"name": "ex1"})
    await teacher.call("pulse.checkpoint", {"name": "ex3"})  # a teacher trying it does not count
    seen = await until_view(teacher, lambda v: "ex1" in v["pulse"] and "ex3" in v["pulse"])
    assert seen["pulse"]["ex3"] == {"done": 1, "of": 2, "who": ["Ada"]}
    assert seen["pulse"]["ex1"] == {"done": 1, "of": 2, "who": ["Bob"]}
    carol = await enter(make_client, server, "carol", "student")
    seen = await until_view(teacher, lambda v: v["present"] == 3)
    assert seen["pulse"]["ex3"]["of"] == 3
    await until_view(ada, lambda v: v["checkpoints"] == ["ex3"])
    with pytest.raises(ProcedureError):
        await carol.call("pulse.checkpoint", {"name": "no/slashes"})
    # status: only what a student shares, and only while sharing
    await ada.call("pulse.report", {"cells_run": 7, "last_error": "ZeroDivisionError", "sharing": True})
    await bob.call("pulse.report", {"cells_run": 3, "last_error": None, "sharing": False})
    seen = await until_view(teacher, lambda v: any(r["user"] == "ada" and r["cells_run"] == 7 for r in v["status"]))
    rows = {row["user"]: row for row in seen["status"]}
    assert rows["ada"]["sharing"] and rows["ada"]["last_error"] == "ZeroDivisionError"
    assert rows["ada"]["last_active"] is not None and rows["ada"]["checkpoints"] == ["ex3"]
    assert rows["bob"] == {"user": "bob", "name": "Bob", "present": True, "sharing": False, "cells_run": None,
                           "last_error": None, "last_active": None, "checkpoints": ["ex1"]}
    assert (await until_view(ada, lambda v: v["sharing"]))["sharing"] is True
    for bad in ({"cells_run": -1, "sharing": True}, {"cells_run": 1, "last_error": "x = 1/0", "sharing": True},
                {"cells_run": True, "sharing": True}):
        with pytest.raises(ProcedureError):
            await ada.call("pulse.report", bad)
    await ada.call("pulse.report", {"cells_run": 8, "last_error": None, "sharing": False})
    seen = await until_view(teacher, lambda v: any(r["user"] == "ada" and not r["sharing"] for r in v["status"]))
    assert {row["user"]: row for row in seen["status"]}["ada"]["cells_run"] is None
    # a student who leaves is still a row, not present, and no longer counted
    bob._client.leave(bob)
    seen = await until_view(teacher, lambda v: v["present"] == 2)
    assert {row["user"]: row for row in seen["status"]}["bob"]["present"] is False
    assert seen["pulse"]["ex1"] == {"done": 0, "of": 2, "who": []}


# -- the record --------------------------------------------------------------------------------------


async def test_export_holds_the_lesson(lesson: dict[str, Any]) -> None:
    teacher, ada, bob = lesson["teacher"], lesson["ada"], lesson["bob"]
    await teacher.call("messages.post", {"id": "m1", "text": "welcome"})
    poll = await teacher.call("polls.create", QUESTION)
    await ada.call("polls.vote", {"poll": poll["id"], "choice": "mergesort"})
    await ada.call("hands.raise", {"note": "help"})
    await ada.call("pulse.checkpoint", {"name": "ex1"})
    await teacher.call("users.mute", {"user_id": "bob"})
    bob._client.leave(bob)
    await until_view(teacher, lambda v: v["present"] == 1)
    exported = await teacher.call("class.export", {})
    assert [m["text"] for m in exported["messages"]] == ["welcome"]
    assert exported["polls"][0]["votes"] == [{"user": "ada", "name": "Ada", "choice": ["mergesort"]}]
    assert exported["polls"][0]["counts"]["mergesort"] == 1 and exported["polls"][0]["question"] == QUESTION["question"]
    assert exported["hands"][0]["note"] == "help" and exported["hands"][0]["resolved_at"] is None
    assert exported["checkpoints"][0]["checkpoint"] == "ex1" and exported["checkpoints"][0]["user"] == "ada"
    events = [(a["user"], a["event"]) for a in exported["attendance"]]
    assert ("ada", "join") in events and ("bob", "join") in events and ("bob", "leave") in events
    assert ("teacher", "join") in events
    assert all(a["role"] in ("teacher", "student", "observer") and a["at"] > 0 for a in exported["attendance"])
    assert [entry["action"] for entry in exported["moderation"]] == ["users.mute"]


async def test_the_classroom_survives_a_restart(tmp_path: Path, make_client: Any) -> None:
    io = create_io(secret=SECRET, data_dir=tmp_path)
    server = await io.start("127.0.0.1", 0)
    try:
        teacher = await enter(make_client, server, "teacher", "teacher")
        ada = await enter(make_client, server, "ada", "student")
        poll = await teacher.call("polls.create", QUESTION)
        await ada.call("polls.vote", {"poll": poll["id"], "choice": "heapsort"})
        await teacher.call("polls.reveal", {"poll": poll["id"]})
        await ada.call("hands.raise", {"note": "still stuck"})
        await ada.call("pulse.checkpoint", {"name": "ex2"})
        teacher._client.leave(teacher)
        ada._client.leave(ada)
    finally:
        await server.close()
    io = create_io(secret=SECRET, data_dir=tmp_path)
    server = await io.start("127.0.0.1", 0)
    try:
        teacher = await enter(make_client, server, "teacher", "teacher")
        seen = await until_view(teacher, lambda v: bool(v["polls"]))
        assert seen["polls"][0]["id"] == poll["id"] and seen["polls"][0]["revealed"]
        assert seen["polls"][0]["votes"] == {"ada": ["heapsort"]}
        assert [h["note"] for h in seen["hands"]] == ["still stuck"]
        assert [row["checkpoints"] for row in seen["status"]] == [["ex2"]]
        ada = await enter(make_client, server, "ada", "student")
        mine = await until_view(ada, lambda v: bool(v["polls"]))
        assert mine["polls"][0]["my_choice"] == ["heapsort"] and mine["hand"]["position"] == 1
        with pytest.raises(ProcedureError):  # still one poll of that id: votes still checked
            await ada.call("polls.vote", {"poll": poll["id"], "choice": "nope"})
    finally:
        await server.close()


async def test_a_vote_on_one_process_reaches_a_teacher_on_another(
    redis_server: RedisServer, start_server: Any, make_client: Any
) -> None:
    room = f"class-redis-{time.monotonic_ns()}-{next(_rooms)}"
    a = await start_server(redis=redis_server.url, secret=SECRET)
    b = await start_server(redis=redis_server.url, secret=SECRET)
    teacher = await enter(make_client, b, "teacher", "teacher", room)
    ada = await enter(make_client, a, "ada", "student", room)
    bob = await enter(make_client, b, "bob", "student", room)
    await until_view(teacher, lambda v: v["present"] == 2)
    poll = await teacher.call("polls.create", QUESTION)  # on b
    await until_view(ada, lambda v: bool(v["polls"]))  # a heard of it
    await ada.call("polls.vote", {"poll": poll["id"], "choice": "mergesort"})  # on a
    seen = await until_view(teacher, lambda v: v["polls"][0]["voters"] == 1)
    assert seen["polls"][0]["votes"] == {"ada": ["mergesort"]}
    assert (await until_view(bob, lambda v: v["polls"][0]["voters"] == 1))["polls"][0]["counts"] is None
    await ada.call("hands.raise", {"note": "on a"})
    assert [h["user"] for h in (await until_view(teacher, lambda v: bool(v["hands"])))["hands"]] == ["ada"]
    assert (await teacher.call("hands.next", {}))["user"] == "ada"  # resolved on b, seen on a
    await until_view(ada, lambda v: v["hand"]["raised"] is False)
    await teacher.call("polls.close", {"poll": poll["id"]})
    await until_view(ada, lambda v: v["polls"][0]["state"] == "closed")
    with pytest.raises(ProcedureError, match="the poll is closed"):
        await ada.call("polls.vote", {"poll": poll["id"], "choice": "heapsort"})
    # a process opening the room later reads the log
    c = await start_server(redis=redis_server.url, secret=SECRET)
    late = await enter(make_client, c, "teacher", "teacher", room)
    assert (await until_view(late, lambda v: bool(v["polls"])))["polls"][0]["votes"] == {"ada": ["mergesort"]}


# -- the fold alone (pure) ---------------------------------------------------------------------------


def test_the_fold_is_order_independent_for_votes_and_counts_an_entry_once() -> None:
    teacher = Actor("t", "T", Role.TEACHER)
    ada = Actor("ada", "Ada", Role.STUDENT)
    room = Classroom()
    create = room.decide_create(teacher, question="q", options=["a", "b"], multiple=False, anonymous=False,
                                poll_id="p", entry_id="1", at=1.0)
    assert isinstance(create, dict) and room.apply(create)
    first = room.decide_vote(ada, poll_id="p", choice="a", entry_id="2", at=2.0)
    second = room.decide_vote(ada, poll_id="p", choice="b", entry_id="3", at=3.0)
    assert isinstance(first, dict) and isinstance(second, dict)
    other = Classroom()
    for entry in (create, second, first, second):  # late, out of order, twice
        other.apply(entry)
    room.apply(first)
    room.apply(second)
    assert room.polls["p"].votes["ada"].choice == other.polls["p"].votes["ada"].choice == ["b"]
    assert not room.apply({"id": "x", "kind": "poll.vote", "at": 1, "user": "u", "poll": "missing", "choice": []})
    assert not room.apply({"nonsense": True})


def test_the_core_sends_a_view_only_when_it_changed() -> None:
    from pluv_widget.core import Member, ServerRoom

    room = ServerRoom("r", default_role=Role.STUDENT)
    room.join(Member("c1", {"id": "ada", "name": "Ada", "role": "student"}))
    room.join(Member("c2", {"id": "t", "name": "T", "role": "teacher"}))
    room.join(Member("c3", {"id": "far", "role": "student"}, local=False))  # another process's socket
    first = room.class_views(1.0)
    assert sorted(send.to for send in first) == [("c1",), ("c2",)]  # local connections only
    assert room.class_views(2.0) == []  # nothing changed but the clock: nothing sent
    entry = room.classroom.decide_raise(Actor("ada", "Ada", Role.STUDENT), note="n", entry_id="e1", at=3.0)
    assert isinstance(entry, dict) and room.record_class(entry)  # mirrored to the other processes
    again = {send.to: json.loads(send.frame)["view"] for send in room.class_views(4.0)}
    assert again[("c2",)]["hands"][0]["note"] == "n" and again[("c2",)]["present"] == 2
    assert again[("c1",)]["hand"]["position"] == 1 and "hands" not in again[("c1",)]

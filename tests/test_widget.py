"""RoomWidget's traitlets mirror a real room, both ways, against the real server on 127.0.0.1.

Widgets here run as in a plain script: their client has a private loop in a thread, so every
check waits (event-driven, with a generous deadline) for the widget's traitlets to catch up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import DEADLINE_S, free_port
from helpers import until_widget as until

from pluv_widget import PluvClient, PluvRoom, crdt, create_client
from pluv_widget.local import local_status, stop_local_server
from pluv_widget.widget import PUSH_INTERVAL_S, RoomWidget, color_for, display_name, token_endpoint
from pluv_widget.widget.messages import shown as _shown


def until_room(room: PluvRoom, condition: Callable[[], Any], timeout: float = DEADLINE_S) -> None:
    changed = threading.Event()
    unsubscribe = room.subscribe.all(lambda _topic: changed.set())
    try:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out waiting for the room")
            changed.wait(min(remaining, 0.5))
            changed.clear()
    finally:
        unsubscribe()


@pytest.fixture
def url(server_process: Callable[..., Any]) -> str:
    # The widget's messages are protected; "messages" as a teacher-only root lets the peer (a
    # teacher: no auth) edit them directly, as the server's procedures do.
    return str(server_process("--memory", "--teacher-only-root", "messages").url)


@pytest.fixture
def peer() -> Iterator[Callable[[str, str, str], tuple[PluvClient, PluvRoom]]]:
    """Another person in the room, as a plain client (what another kernel's widget does).

    Left, not closed, at the end: closing stops a private loop before the leave goes out.
    """
    clients: list[PluvClient] = []

    def enter(url: str, room_name: str, name: str) -> tuple[PluvClient, PluvRoom]:
        client = create_client(ws_endpoint=url)
        clients.append(client)
        room = client.create_room(
            room_name,
            initial_presence={"name": name, "color": "#123456", "selection_id": None},
            initial_storage=crdt.doc(lambda: {"messages": crdt.array([])}),
        )
        asyncio.run_coroutine_threadsafe(client.enter(room), client.loop).result(DEADLINE_S)
        until_room(room, lambda: room.storage_state == "synced")
        return client, room

    yield enter
    for client in clients:
        for room in client.get_rooms():
            client.leave(room)


def test_traitlets_mirror_the_room_both_ways(url: str, widgets: list[RoomWidget], peer: Any) -> None:
    ada = RoomWidget("mirror", user="Ada", url=url)
    widgets.append(ada)
    until(ada, lambda: ada.connection_state == "open")
    assert ada.me["name"] == "Ada" and ada.me["connection_id"] == ada.room.myself.connection_id  # type: ignore[union-attr]
    assert ada.me["color"] == ada.me["presence"]["color"]

    client, bob = peer(url, "mirror", "Bob")
    until(ada, lambda: [o["name"] for o in ada.others] == ["Bob"])
    assert ada.others[0]["connection_id"] == bob.connection_id
    assert ada.others[0]["color"] == "#123456"

    # Python → room: a post is a map in the shared array; a selection is presence.
    message_id = ada.post("hello from Ada")
    until_room(bob, lambda: len(bob.storage_json()["messages"]) == 1)
    stored = bob.storage_json()["messages"][0]
    assert stored["id"] == message_id and stored["author"] == "Ada" and stored["text"] == "hello from Ada"
    assert isinstance(stored["time"], int)
    ada.select(message_id)
    until_room(bob, lambda: bob.others[0].presence.get("selection_id") == message_id)
    assert ada.selection == message_id

    # room → traitlets: the other's post and selection.
    bob.transact(
        lambda: bob.storage("messages").append(crdt.map({"id": "b1", "author": "Bob", "text": "hi", "time": 1}))
    )
    bob.update_my_presence({"selection_id": "b1"})
    until(ada, lambda: [m["id"] for m in ada.messages] == [message_id, "b1"])
    until(ada, lambda: ada.others[0]["presence"]["selection_id"] == "b1")
    assert ada.messages[1] == {"id": "b1", "author": "Bob", "color": color_for("Bob"), "text": "hi", "time": 1}

    client.leave(bob)
    until(ada, lambda: ada.others == [])


def test_frontend_messages_from_another_thread_land_on_the_clients_loop(
    url: str, widgets: list[RoomWidget], peer: Any
) -> None:
    """Comms over subshells: the browser's messages arrive on another thread with its own loop."""
    ada = RoomWidget("subshell", user="Ada", url=url)
    widgets.append(ada)
    _, bob = peer(url, "subshell", "Bob")
    until(ada, lambda: ada.connection_state == "open" and len(ada.others) == 1)
    seen_on: list[asyncio.AbstractEventLoop] = []
    original = ada.post

    def post(text: str) -> str:
        seen_on.append(asyncio.get_running_loop())
        return original(text)

    ada.post = post  # type: ignore[method-assign]

    def subshell() -> None:
        async def deliver() -> None:
            ada._on_frontend_message(ada, {"type": "post", "text": "from the browser"}, [])

        asyncio.run(deliver())

    thread = threading.Thread(target=subshell)
    thread.start()
    thread.join()
    until(ada, lambda: [m["text"] for m in ada.messages] == ["from the browser"])
    assert seen_on == [ada.client.loop]
    # The browser sets `selection` itself; on a subshell the observer runs on that thread.
    message_id = ada.messages[0]["id"]
    thread = threading.Thread(target=lambda: asyncio.run(set_selection(ada, message_id)))
    thread.start()
    thread.join()
    until_room(bob, lambda: bob.others[0].presence.get("selection_id") == message_id)
    until(ada, lambda: ada.me["presence"]["selection_id"] == message_id)
    assert ada.selection == message_id
    thread = threading.Thread(target=lambda: asyncio.run(set_selection(ada, None)))
    thread.start()
    thread.join()
    until_room(bob, lambda: bob.others[0].presence.get("selection_id") is None)


async def set_selection(widget: RoomWidget, message_id: str | None) -> None:
    """What ipywidgets does with the view's ``model.set("selection", id); model.save_changes()``."""
    widget.set_state({"selection": message_id})


def replay(sent: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """What js/widget.js does with the frontend messages: a snapshot, then deltas on top of it."""
    shown: list[dict[str, Any]] | None = None
    version: int | None = None
    for content in sent:
        if content["type"] == "messages-snapshot":
            shown, version = list(content["messages"]), content["version"]
        elif content["type"] == "messages-delta":
            if shown is None or version is None or content["version"] <= version:
                continue
            assert content["base"] == version, "a gap in the deltas"
            for op in content["ops"]:
                index = op["index"]
                if "insert" in op:
                    shown[index:index] = op["insert"]
                elif "delete" in op:
                    del shown[index : index + op["delete"]]
                else:
                    shown[index] = op["set"]
            version = content["version"]
    return shown


def test_messages_reach_the_browser_as_deltas(url: str, widgets: list[RoomWidget], peer: Any) -> None:
    ada = RoomWidget("deltas", user="Ada", url=url)
    widgets.append(ada)
    sent: list[dict[str, Any]] = []
    ada.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    _, bob = peer(url, "deltas", "Bob")
    until(ada, lambda: ada.connection_state == "open" and len(ada.others) == 1)
    ada._on_frontend_message(ada, {"type": "sync-request"}, [])  # the first view renders

    def stored() -> list[dict[str, Any]]:
        return [_shown(i, item) for i, item in enumerate(bob.storage_json()["messages"])]  # type: ignore[index]

    def message(n: int) -> Any:
        return crdt.map({"id": f"b{n}", "author": "Bob", "color": "#123456", "text": f"m{n}", "time": n})

    messages = bob.storage("messages")

    def step(edit: Callable[[], Any]) -> None:
        bob.transact(edit)
        until(ada, lambda: ada.messages == stored())
        deadline = time.monotonic() + DEADLINE_S
        while replay(sent) != ada.messages and time.monotonic() < deadline:
            time.sleep(0.02)  # the push that set the traitlet sends its delta right after
        assert replay(sent) == ada.messages

    step(lambda: messages.extend([message(n) for n in range(5)]))
    step(lambda: messages.insert(2, message(10)))  # in the middle
    step(lambda: messages.__delitem__(0))
    step(lambda: messages.__delitem__(slice(1, 3)))
    ada.post("from Ada")
    until(ada, lambda: [m["text"] for m in ada.messages] == ["m1", "m3", "m4", "from Ada"])
    late_view = len(sent)
    ada._on_frontend_message(ada, {"type": "sync-request"}, [])  # a second view renders later
    deadline = time.monotonic() + DEADLINE_S
    while not any(c["type"] == "messages-snapshot" for c in sent[late_view:]) and time.monotonic() < deadline:
        time.sleep(0.02)
    step(lambda: messages[1].__setitem__("text", "m3, edited"))  # an edit inside a message
    step(lambda: messages.extend([message(20), message(21)]))
    assert [m["text"] for m in ada.messages] == ["m1", "m3, edited", "m4", "from Ada", "m20", "m21"]
    assert replay(sent[late_view:]) == stored()  # the late view starts from its snapshot
    deltas = [content for content in sent if content["type"] == "messages-delta"]
    kinds = {kind for delta in deltas for op in delta["ops"] for kind in ("insert", "delete", "set") if kind in op}
    assert kinds == {"insert", "delete", "set"}
    assert all(len(op.get("insert", [])) <= 5 for delta in deltas for op in delta["ops"])  # never the list
    assert "messages" not in ada.keys  # not a synced traitlet: no whole-list pushes


BOB = """
import json, sys, time
from pluv_widget.widget import RoomWidget

def until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out: " + json.dumps(w.get_state(), default=str))
        time.sleep(0.02)

w = RoomWidget("two-processes", user="Bob", url=sys.argv[1])
until(lambda: w.connection_state == "open")
mine = w.post("hi from Bob")
w.select(mine)
until(lambda: any(m["text"] == "hi from Ada" for m in w.messages))
until(lambda: any(o["name"] == "Ada" and o["presence"]["selection_id"] == mine for o in w.others))
print(json.dumps({"others": w.others, "messages": w.messages, "me": w.me}), flush=True)
w.leave()
"""


def test_two_widgets_in_two_processes(url: str, widgets: list[RoomWidget], tmp_path: Path) -> None:
    ada = RoomWidget("two-processes", user="Ada", url=url)
    widgets.append(ada)
    until(ada, lambda: ada.connection_state == "open")
    script = tmp_path / "bob.py"
    script.write_text(textwrap.dedent(BOB))
    bob = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        until(ada, lambda: any(m["text"] == "hi from Bob" for m in ada.messages))
        bobs = next(m for m in ada.messages if m["text"] == "hi from Bob")
        until(ada, lambda: [(o["name"], o["presence"]["selection_id"]) for o in ada.others] == [("Bob", bobs["id"])])
        ada.post("hi from Ada")
        ada.select(bobs["id"])
        out, err = bob.communicate(timeout=DEADLINE_S * 2)
    finally:
        bob.kill()
    assert bob.returncode == 0, err.decode()
    seen = json.loads(out)
    assert [o["name"] for o in seen["others"]] == ["Ada"]
    assert seen["others"][0]["color"] == ada.me["color"]
    assert [m["text"] for m in seen["messages"]] == ["hi from Bob", "hi from Ada"]
    until(ada, lambda: ada.others == [])  # Bob left when his process ended


def test_rerunning_the_cell_replaces_the_connection_without_a_ghost(
    url: str, widgets: list[RoomWidget], peer: Any
) -> None:
    _, bob = peer(url, "rerun", "Bob")
    first = RoomWidget("rerun", user="Ada", url=url)
    widgets.append(first)
    until(first, lambda: first.connection_state == "open")
    until_room(bob, lambda: len(bob.others) == 1)
    second = RoomWidget("rerun", user="Ada", url=url)  # the cell, run again
    widgets.append(second)
    until(first, lambda: first.connection_state == "closed")
    assert "replaced" in first.error
    until(second, lambda: second.connection_state == "open")
    until_room(bob, lambda: [o.connection_id for o in bob.others] == [second.me["connection_id"]])
    with pytest.raises(RuntimeError):
        first.post("from a replaced widget")
    # Someone arriving now sees exactly one Ada and one Bob: no ghost.
    _, cy = peer(url, "rerun", "Cy")
    assert sorted(o.presence["name"] for o in cy.others) == ["Ada", "Bob"]


def test_pushes_are_coalesced_and_the_latest_state_arrives(url: str, widgets: list[RoomWidget], peer: Any) -> None:
    ada = RoomWidget("burst", user="Ada", url=url)
    widgets.append(ada)
    _, bob = peer(url, "burst", "Bob")
    until(ada, lambda: len(ada.others) == 1)
    pushes: list[float] = []
    ada.observe(lambda _change: pushes.append(time.monotonic()), names="others")
    started = time.monotonic()
    for n in range(300):
        bob.update_my_presence({"n": n})
    until(ada, lambda: ada.others[0]["presence"].get("n") == 299)
    elapsed = time.monotonic() - started
    assert len(pushes) <= elapsed / PUSH_INTERVAL_S + 2, (len(pushes), elapsed)
    assert len(pushes) < 300


def test_the_widget_comes_back_after_its_loop_was_blocked(
    server_process: Callable[..., Any], widgets: list[RoomWidget], peer: Any, tmp_path: Path
) -> None:
    """A long cell blocks the kernel's loop past the server's ping timeout: the widget returns."""
    app = tmp_path / "quick_pings.py"
    app.write_text(
        "from pluv_widget import Limits, create_io\n"
        "io = create_io(limits=Limits(ping_interval_s=0.5, ping_timeout_s=0.5))\n"
    )
    url = server_process("--app", f"{app}:io", "--memory").url
    ada = RoomWidget("blocked", user="Ada", url=url)
    widgets.append(ada)
    _, bob = peer(url, "blocked", "Bob")
    until(ada, lambda: ada.connection_state == "open" and len(ada.others) == 1)
    states: list[str] = []
    ada.observe(lambda change: states.append(change["new"]), names="connection_state")
    ada.client.loop.call_soon_threadsafe(time.sleep, 3.0)  # the "long-running cell"
    until_room(bob, lambda: bob.others == [])  # the server dropped the silent connection
    until(ada, lambda: ada.connection_state == "open" and "unavailable" in states)
    until_room(bob, lambda: [o.presence["name"] for o in bob.others] == ["Ada"])


def test_join_code_fetches_a_token_and_a_wrong_one_is_shown(
    server_process: Callable[..., Any], widgets: list[RoomWidget]
) -> None:
    url = server_process("--memory", "--secret", "s3cret-for-tests-only-32-bytes-long!", "--join-code", "maple-42").url
    ada = RoomWidget("class", user="Ada", url=url, join_code="maple-42")
    widgets.append(ada)
    until(ada, lambda: ada.connection_state == "open")
    assert ada.room.myself.info["name"] == "Ada" and ada.me["role"] == "student"  # type: ignore[union-attr]
    assert ada.me["color"] == color_for("Ada")  # with auth the colour follows the user id
    eve = RoomWidget("class2", user="Eve", url=url, join_code="wrong")
    widgets.append(eve)
    until(eve, lambda: "not allowed" in eve.error)
    assert "join code" in eve.error


def test_configuration_from_the_environment(
    server_process: Callable[..., Any], widgets: list[RoomWidget], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server_process("--memory", "--secret", "s3cret-for-tests-only-32-bytes-long!", "--join-code", "oak").url
    monkeypatch.setenv("PLUV_WIDGET_URL", url)
    monkeypatch.setenv("PLUV_WIDGET_JOIN_CODE", "oak")
    monkeypatch.setenv("JUPYTERHUB_USER", "grace")
    grace = RoomWidget("env")
    widgets.append(grace)
    until(grace, lambda: grace.connection_state == "open")
    assert grace.me["name"] == "grace" and grace.url == url


def test_nothing_configured_starts_the_local_server(
    widgets: list[RoomWidget], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PLUV_WIDGET_URL", raising=False)
    monkeypatch.delenv("PLUV_WIDGET_JOIN_CODE", raising=False)
    monkeypatch.setenv("PLUV_WIDGET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PLUV_WIDGET_PORT", str(free_port()))
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    try:
        with pytest.warns(UserWarning, match="private local server"):
            ada = RoomWidget("local")
        widgets.append(ada)
        until(ada, lambda: ada.connection_state == "open")
        status = local_status()
        assert status is not None and status["health"]["connections"] == 1
        assert status["data_dir"] == str(tmp_path / "home" / "data")
        ada.post("kept in SQLite")
        until(ada, lambda: len(ada.messages) == 1)
    finally:
        for widget in widgets:
            widget.leave()
        assert stop_local_server()
    assert local_status() is None


def test_identity_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    assert display_name() == "ada"
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert display_name()
    assert color_for("x") == color_for("x")
    assert token_endpoint("wss://h.example/pluv/", name="A b", join_code="c") == (
        "https://h.example/pluv/token?join_code=c&name=A+b"
    )

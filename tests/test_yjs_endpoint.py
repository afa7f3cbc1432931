"""Stock Yjs clients at ``/yjs/<room>``: npm y-websocket + yjs in Node, pycrdt's Provider in Python,
and raw y-websocket frames for what a stock client would never send. Real server, real clients;
Node and tests/interop/node_modules come from .ci/run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from helpers import until, until_storage
from httpx_ws import aconnect_ws
from pycrdt.websocket.websocket import HttpxWebsocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pluv_widget import crdt
from pluv_widget.protocol import Limits, is_valid_room_name, sync
from pluv_widget.protocol.awareness import AwarenessEntry, decode_awareness, encode_awareness
from pluv_widget.server.room_server import RoomServer

INTEROP = Path(__file__).parent / "interop"
SECRET = "s3cret-for-tests-only-32-bytes-long!"
STORAGE = crdt.doc(lambda: {"messages": crdt.array([]), "notes": crdt.text("")})


def token(server: RoomServer, room: str, user_id: str, role: str = "student", name: str | None = None) -> str:
    assert server.io is not None
    return server.io.create_token(room=room, user={"id": user_id, "name": name or user_id.title(), "role": role})


def auth(server: RoomServer, user_id: str, role: str = "student") -> Any:
    return lambda room: token(server, room, user_id, role)


class NodeProvider:
    """tests/interop/yjs_provider.mjs: a y-websocket WebsocketProvider, one JSON command per line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def command(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(self.process.stdout.readline(), 20))
        return answer

    async def until(self, condition: Any, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                state = await self.command("state")
                if condition(state):
                    return state
                await asyncio.sleep(0.05)


@asynccontextmanager
async def node_provider(server: RoomServer, room: str, token: str | None = None) -> AsyncIterator[NodeProvider]:
    args = [f"ws://127.0.0.1:{server.port}/yjs", room, *([token] if token else [])]
    process = await asyncio.create_subprocess_exec(
        "node", "yjs_provider.mjs", *args, cwd=INTEROP,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        yield NodeProvider(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def others_named(state: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [other["state"] for other in state["others"] if other["state"].get("user", {}).get("name") == name]


# -- Node: y-websocket 2 + yjs 13 --------------------------------------------------------------


async def test_y_websocket_in_node_edits_with_a_pluv_client_both_ways(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    pluv = await make_client(server, auth_endpoint=auth(server, "grace"), initial_storage=STORAGE).enter("doc")
    pluv.update_my_presence({"selection": "cell-3"})
    async with node_provider(server, "doc", token(server, "doc", "ada")) as node:
        state = await node.until(lambda s: s["synced"])
        await node.command("push", key="messages", value="from node")
        await node.command("insert", key="notes", index=0, text="typed in node")
        await node.command("awareness", state={"user": {"name": "Mallory", "color": "#ff0000"}, "cursor": 7})
        await until_storage(pluv, "notes", lambda text: text == "typed in node")
        assert pluv.storage_json()["messages"] == ["from node"]  # type: ignore[index]
        # pluv → Yjs, Y.Array and Y.Text
        pluv.storage("messages").append("from python")
        pluv.storage("notes").insert(0, ">> ")
        state = await node.until(lambda s: s["notes"] == ">> typed in node" and len(s["messages"]) == 2)
        assert state["messages"] == ["from node", "from python"]
        # awareness: the pluv user under its token's name, with its presence
        state = await node.until(lambda s: others_named(s, "Grace"))
        assert others_named(state, "Grace") == [{"selection": "cell-3", "user": {"name": "Grace"}}]
        # presence: the Yjs user's awareness, user.name forced to the token's, color kept
        await until(pluv, lambda: any(u.presence.get("cursor") == 7 for u in pluv.others))
        ada = next(u for u in pluv.others if u.id == "ada")
        assert ada.presence == {"user": {"name": "Ada", "color": "#ff0000"}, "cursor": 7}
        assert ada.info["name"] == "Ada"
        pluv.update_my_presence({"selection": "cell-4"})
        await node.until(lambda s: others_named(s, "Grace") and others_named(s, "Grace")[0]["selection"] == "cell-4")
        assert state["connected"] == 1 and state["closed"] == 0 and state["denied"] == 0


async def test_a_stock_client_and_a_pluv_client_on_two_processes_share_the_room_through_redis(
        redis_server: Any, start_server: Any, make_client: Any) -> None:
    room = f"spread-{id(redis_server)}-{asyncio.get_running_loop().time():.0f}"
    a = await start_server(secret=SECRET, redis=redis_server.url)
    b = await start_server(secret=SECRET, redis=redis_server.url)
    pluv = await make_client(b, auth_endpoint=auth(b, "grace"), initial_storage=STORAGE).enter(room)
    pluv.update_my_presence({"selection": "cell-1"})
    async with node_provider(a, room, token(a, room, "ada")) as node:
        await node.until(lambda s: s["synced"])
        await node.command("insert", key="notes", index=0, text="from process a")
        await node.command("awareness", state={"user": {"name": "Ada", "color": "#00ff00"}, "cursor": 3})
        await until_storage(pluv, "notes", lambda text: text == "from process a")
        await until(pluv, lambda: any(u.presence.get("cursor") == 3 for u in pluv.others))
        pluv.storage("messages").append("from process b")
        state = await node.until(lambda s: s["messages"] == ["from process b"] and others_named(s, "Grace"))
        assert others_named(state, "Grace")[0]["selection"] == "cell-1"  # a member of another process


async def test_a_reset_sticks_when_a_stock_client_reconnects_with_its_old_document(
        start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    pluv = await make_client(server, auth_endpoint=auth(server, "grace", "teacher"), initial_storage=STORAGE).enter("r")
    async with node_provider(server, "r", token(server, "r", "ada")) as node:
        await node.until(lambda s: s["synced"])
        await node.command("push", key="messages", value="before the reset")
        await until_storage(pluv, "messages", lambda items: items == ["before the reset"])
        before = pluv._core.generation
        await pluv.call("room.reset", {})
        # The Node client reconnects (4010) with its old document and sends it back (its sync step
        # 2): refused, so the room stays reset for everyone; the stock client keeps its copy, and
        # its writes are refused, until it reloads.
        await node.until(lambda s: s["connected"] >= 2 and s["synced"])
        await until(pluv, lambda: pluv._core.generation != before and pluv.storage_state == "synced", timeout=20)
        await node.command("awareness", state={"user": {"name": "Ada"}, "after": "the step 2"})
        await until(pluv, lambda: any(u.presence.get("after") == "the step 2" for u in pluv.others))
        assert pluv.storage_json()["messages"] == []  # type: ignore[index]


async def test_a_pluv_member_who_leaves_disappears_from_awareness(server: RoomServer, make_client: Any) -> None:
    client = make_client(server, initial_storage=STORAGE)
    await client.enter("leaving")
    async with node_provider(server, "leaving") as node:
        state = await node.until(lambda s: len(s["others"]) == 1)
        assert state["others"][0]["state"]["user"]["name"] == "guest"
        client.leave("leaving")
        await node.until(lambda s: s["others"] == [])


@pytest.mark.timeout(150)
async def test_y_websocket_stays_connected_through_a_minute_of_idleness(server: RoomServer, make_client: Any) -> None:
    """y-websocket closes a socket after 30 s without a message, y-protocols forgets a state
    after 30 s without renewal: the server's 15 s awareness renewal keeps both alive."""
    pluv = await make_client(server, initial_storage=STORAGE).enter("idle")
    async with node_provider(server, "idle") as node:
        await node.until(lambda s: s["synced"] and len(s["others"]) == 1)
        await asyncio.sleep(65)
        state = await node.command("state")
        assert (state["connected"], state["closed"]) == (1, 0), state
        assert len(state["others"]) == 1  # the pluv member was renewed, not timed out
        await node.command("push", key="messages", value="after a minute")
        await until_storage(pluv, "messages", lambda items: items == ["after a minute"])


# -- Python: pycrdt-websocket's provider ------------------------------------------------------------------


async def test_pycrdt_provider_converges_with_a_pluv_client(server: RoomServer, make_client: Any) -> None:
    pluv = await make_client(server, initial_storage=STORAGE).enter("pycrdt")
    pluv.storage("messages").append("before")
    await until_storage(pluv, "messages", lambda items: items == ["before"])
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    messages = doc.get("messages", type=pycrdt.Array)
    notes = doc.get("notes", type=pycrdt.Text)
    # pycrdt-websocket's client side: pycrdt's Provider over its HttpxWebsocket channel (httpx-ws)
    async with aconnect_ws(f"http://127.0.0.1:{server.port}/yjs/pycrdt") as socket:
        async with pycrdt.Provider(doc, HttpxWebsocket(socket, "pycrdt")) as provider:
            await asyncio.wait_for(provider.synced.wait(), 20)
            async with asyncio.timeout(20):
                while messages.to_py() != ["before"]:
                    await asyncio.sleep(0.02)
            messages.append("from pycrdt")
            notes += "pycrdt notes"
            await until_storage(pluv, "notes", lambda text: text == "pycrdt notes")
            pluv.storage("messages").append("after")
            async with asyncio.timeout(20):
                while messages.to_py() != ["before", "from pycrdt", "after"]:
                    await asyncio.sleep(0.02)
    assert pluv.storage_json() == {"messages": ["before", "from pycrdt", "after"], "notes": "pycrdt notes"}


# -- raw frames: what a hostile client sends ---------------------------------------------------


async def frames(socket: ClientConnection, seconds: float) -> list[bytes]:
    """Every binary frame ``socket`` receives within ``seconds``."""
    received: list[bytes] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                frame = await socket.recv()
                if isinstance(frame, bytes):
                    received.append(frame)
    except TimeoutError:
        pass
    return received


def awareness_of(received: list[bytes]) -> list[AwarenessEntry]:
    return [entry for frame in received if frame[:1] == b"\x01" for entry in decode_awareness(frame, 1 << 20)]


async def test_hostile_yjs_frames_are_dropped_and_the_room_is_untouched(server: RoomServer, make_client: Any) -> None:
    pluv = await make_client(server, initial_storage=STORAGE).enter("hostile")
    pluv.storage("messages").append("kept")
    await until_storage(pluv, "messages", lambda items: items == ["kept"])
    limit = Limits().max_presence_bytes
    async with connect(f"ws://127.0.0.1:{server.port}/yjs/hostile") as hostile:
        own = AwarenessEntry(1234, 1, {"user": {"name": "Eve"}, "cursor": 1})
        await hostile.send(encode_awareness([own]))  # binds the connection to 1234
        for frame in (
            b"",  # empty
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint that never ends
            b"garbage that is not a y-websocket frame",
            b"\x00\x07\x01\x00",  # unknown sync step
            sync.update(b"\x01\x05\xff\xff\xff\xff garbage"),  # a corrupt update
            sync.update(b"\x01\x01\x85\x87\x91\x02\x00\x28\x01\x05notes\x01\x77\x01x\x00"),  # half-valid
            b"\x01\x05\x01\x01\x01",  # truncated awareness
            encode_awareness([AwarenessEntry(5678, 9, {"user": {"name": "Someone else"}})]),  # another id
            encode_awareness([AwarenessEntry(1234, 2, {"user": {"name": "Eve"}, "blob": "x" * 100_000})]),  # huge
            encode_awareness([AwarenessEntry(1234, 3, {"user": {"name": "Eve"}, "blob": "x" * (limit - 10)})]),
            "a text frame",
        ):
            await hostile.send(frame)
        # The pluv member sees Eve's first state only, and never 5678's.
        await until(pluv, lambda: any(u.presence.get("cursor") == 1 for u in pluv.others))
        await asyncio.sleep(0.5)
        eve = [u for u in pluv.others]
        assert len(eve) == 1 and eve[0].presence == {"user": {"name": "guest"}, "cursor": 1}
        # The room and its other client are untouched, and the server still serves both.
        pluv.storage("messages").append("still works")
        await until_storage(pluv, "messages", lambda items: items == ["kept", "still works"])
        assert pluv.storage_json() == {"messages": ["kept", "still works"], "notes": ""}
        async with connect(f"ws://127.0.0.1:{server.port}/yjs/hostile") as other:
            await other.send(sync.step1(b"\x00"))
            received = await frames(other, 1.0)
            step2 = next(f for f in received if f[:2] == b"\x00\x01")
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.apply_update(pycrdt.read_message(step2[2:]))
            assert doc.get("messages", type=pycrdt.Array).to_py() == ["kept", "still works"]
            # the second Yjs client sees Eve (under her own id) and the pluv member, nobody else
            ids = {entry.client_id for entry in awareness_of(received) if entry.state is not None}
            assert 1234 in ids and 5678 not in ids and len(ids) == 2
        assert not hostile.close_code


# -- auth and roles ------------------------------------------------------------------------------


async def test_without_a_token_the_yjs_endpoint_refuses_with_4001(start_server: Any) -> None:
    server = await start_server(secret=SECRET)
    async with connect(f"ws://127.0.0.1:{server.port}/yjs/class") as socket:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 10)
    assert socket.close_code == 4001
    wrong_room = token(server, "other", "ada")
    async with connect(f"ws://127.0.0.1:{server.port}/yjs/class?token={wrong_room}") as socket:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 10)
    assert socket.close_code == 4004


async def test_an_observer_gets_permission_denied_and_its_writes_reach_no_one(start_server: Any,
                                                                              make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    teacher = await make_client(server, auth_endpoint=auth(server, "tess", "teacher"),
                                initial_storage=STORAGE).enter("class")
    teacher.storage("messages").append("from the teacher")
    await until_storage(teacher, "messages", lambda items: len(items) == 1)
    observer = token(server, "class", "olive", "observer")
    async with connect(f"ws://127.0.0.1:{server.port}/yjs/class?token={observer}") as socket:
        received = await frames(socket, 0.5)
        assert received[0][:2] == b"\x02\x00" and b"observers are read-only" in received[0]
        # a write: a doc that starts from the room's and appends
        await socket.send(sync.step1(b"\x00"))
        step2 = next(f for f in await frames(socket, 1.0) if f[:2] == b"\x00\x01")
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(pycrdt.read_message(step2[2:]))
        before = doc.get_state()
        doc.get("messages", type=pycrdt.Array).append("from the observer")
        await socket.send(sync.update(doc.get_update(before)))
        await socket.send(encode_awareness([AwarenessEntry(99, 1, {"user": {"name": "Olive"}, "cursor": 2})]))
        await asyncio.sleep(0.5)
        assert not socket.close_code
    # the observer's stock Node client too: permission denied at connect, writes dropped
    async with node_provider(server, "class", observer) as node:
        await node.until(lambda s: s["synced"] and s["denied"] == 1)
        await node.command("push", key="messages", value="node observer")
        state = await node.until(lambda s: s["messages"] == ["from the teacher", "node observer"])
        assert state["connected"] == 1  # diverged locally, still connected
    teacher.storage("messages").append("later")
    await until_storage(teacher, "messages", lambda items: len(items) == 2)
    assert teacher.storage_json()["messages"] == ["from the teacher", "later"]  # type: ignore[index]
    assert server.rooms["class"].core.storage_bytes > 0


async def test_a_muted_student_gets_permission_denied_when_it_writes(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    teacher = await make_client(server, auth_endpoint=auth(server, "tess", "teacher"),
                                initial_storage=STORAGE).enter("class")
    await server.call("class", "users.mute", {"user_id": "sam"})
    async with node_provider(server, "class", token(server, "class", "sam")) as node:
        await node.until(lambda s: s["synced"] and s["denied"] == 1)
        await node.command("push", key="messages", value="while muted")
        await asyncio.sleep(0.5)
    assert teacher.storage_json()["messages"] == []  # type: ignore[index]


def test_yjs_and_the_http_routes_are_reserved_room_names() -> None:
    for name in ("api", "yjs", "dashboard", "token", "health"):
        assert not is_valid_room_name(name)
    assert is_valid_room_name("yjs-notes")

"""Interop with real Yjs (the npm package, in Node): what yjs writes, our rooms read; what Python
writes, yjs reads. Node and tests/interop/node_modules are installed by .ci/run."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pycrdt
from helpers import until_storage
from websockets.asyncio.client import connect

from pluv_widget import crdt
from pluv_widget.protocol import sync

INTEROP = Path(__file__).parent / "interop"
STORAGE = crdt.doc(lambda: {"messages": crdt.array([]), "notes": crdt.text("")})


async def node(mode: str, stdin: str = "") -> str:
    def run() -> str:
        result = subprocess.run(["node", "yjs_roundtrip.mjs", mode], input=stdin, cwd=INTEROP,
                                capture_output=True, text=True, check=True, timeout=60)
        return result.stdout

    return await asyncio.to_thread(run)


async def server_document(server: Any, room: str) -> bytes:
    """The room's whole document as the server holds it, fetched like a Yjs provider would."""
    async with connect(f"ws://127.0.0.1:{server.port}/{room}", max_size=None) as socket:
        await socket.send(json.dumps({"type": "join", "protocol": 2, "presence": {}}))
        await socket.send(sync.step1(b"\x00"))
        async with asyncio.timeout(20):
            while True:
                frame = await socket.recv()
                if isinstance(frame, bytes) and frame[1] == pycrdt.YSyncMessageType.SYNC_STEP2:
                    return bytes(pycrdt.read_message(frame[2:]))


async def test_a_yjs_update_from_node_reaches_python_clients(server: Any, make_client: Any) -> None:
    reader = await make_client(server, initial_storage=STORAGE).enter("interop")
    update = base64.b64decode(await node("make"))
    async with connect(f"ws://127.0.0.1:{server.port}/interop") as socket:
        await socket.send(json.dumps({"type": "join", "protocol": 2, "presence": {}}))
        await socket.send(sync.update(update))
        messages = await until_storage(reader, "messages", lambda items: len(items) == 3)
    assert messages == ["from yjs", "second", {"id": 7, "text": "a map inside an array"}]
    assert reader.storage_json()["notes"] == "typed in node"  # type: ignore[index]


async def test_python_edits_are_read_by_yjs_in_node(server: Any, make_client: Any) -> None:
    writer = await make_client(server, initial_storage=STORAGE).enter("py")
    writer.storage("messages").append("from python")
    writer.storage("messages").append(crdt.map({"n": 1}))
    writer.storage("notes").insert(0, "héllo ✓")
    await until_storage(writer, "messages", lambda items: len(items) == 2)
    document = b""
    async with asyncio.timeout(20):
        while True:  # the writer's edits reach the server asynchronously
            document = await server_document(server, "py")
            read = json.loads(await node("read", base64.b64encode(document).decode()))
            if len(read["messages"]) == 2 and read["notes"]:
                break
    assert read == {"messages": ["from python", {"n": 1}], "notes": "héllo ✓"}

"""Edits per second between a stock y-websocket client (Node) and a pluv client, through ``/yjs/<room>``.

One in-process server on 127.0.0.1, one pluv client in this process, one ``WebsocketProvider``
(npm y-websocket 2 + yjs 13, ``tests/interop/yjs_provider.mjs``) in Node. Each way, ``--edits``
appends to a ``Y.Array``, one transaction (one update) each, timed from the first edit to the
moment the other side holds all of them (Node polled every 20 ms).

The peer, in the same run: the stock ``@y/websocket-server`` (``bench/node``) with only Yjs
clients, two Node providers, the same edits from one to the other (the receiver polled the same
way). Needs ``npm ci`` in ``bench/node`` and ``tests/interop``.

    python bench/yjs_edits.py [--edits 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluv_widget import crdt, create_client, create_io

INTEROP = Path(__file__).resolve().parents[1] / "tests" / "interop"
NODE_SERVER = Path(__file__).resolve().parent / "node" / "node_modules" / "@y" / "websocket-server" / "src" / \
    "server.js"


async def run(edits: int, runs: int) -> dict[str, Any]:
    server = await create_io().start("127.0.0.1", 0)
    client = create_client(ws_endpoint=f"ws://127.0.0.1:{server.port}",
                           initial_storage=crdt.doc(lambda: {"a": crdt.array([]), "b": crdt.array([])}))
    process = await asyncio.create_subprocess_exec(
        "node", "yjs_provider.mjs", f"ws://127.0.0.1:{server.port}/yjs", "bench", cwd=INTEROP,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None

    async def command(op: str, **fields: Any) -> dict[str, Any]:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        await process.stdin.drain()
        answer: dict[str, Any] = json.loads(await process.stdout.readline())
        return answer

    try:
        room = await client.enter("bench")
        while not (await command("state"))["synced"]:
            await asyncio.sleep(0.02)
        node_to_pluv, pluv_to_node = [], []
        for run_index in range(runs):
            expected = edits * (run_index + 1)
            start = time.perf_counter()
            await command("bench", key="a", count=edits)
            while len(room.storage_json()["a"]) < expected:  # type: ignore[index]
                await asyncio.sleep(0.002)
            node_to_pluv.append(edits / (time.perf_counter() - start))
            start = time.perf_counter()
            for i in range(edits):
                room.storage("b").append(i)
            while True:
                seen = await command("count", key="b")
                if seen.get("count", 0) >= expected:
                    break
                await asyncio.sleep(0.02)
            pluv_to_node.append(edits / (time.perf_counter() - start))
        return {"edits": edits, "runs": runs,
                "node_to_pluv_edits_per_s": round(statistics.median(node_to_pluv)),
                "pluv_to_node_edits_per_s": round(statistics.median(pluv_to_node))}
    finally:
        process.kill()
        await process.wait()
        await client.aclose()
        await server.close()


class NodeClient:
    """tests/interop/yjs_provider.mjs: one JSON command per line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, room: str) -> NodeClient:
        process = await asyncio.create_subprocess_exec(
            "node", "yjs_provider.mjs", url, room, cwd=INTEROP,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        client = cls(process)
        while not (await client.command("state"))["synced"]:
            await asyncio.sleep(0.02)
        return client

    async def command(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        answer: dict[str, Any] = json.loads(await self.process.stdout.readline())
        return answer

    async def close(self) -> None:
        self.process.kill()
        await self.process.wait()


async def run_peer(edits: int, runs: int) -> dict[str, Any]:
    """The same edits between two Node providers through the stock @y/websocket-server."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        "node", str(NODE_SERVER), env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(200):  # until it listens
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        sender = await NodeClient.start(f"ws://127.0.0.1:{port}", "bench")
        receiver = await NodeClient.start(f"ws://127.0.0.1:{port}", "bench")
        rates = []
        for run_index in range(runs):
            expected = edits * (run_index + 1)
            start = time.perf_counter()
            await sender.command("bench", key="a", count=edits)
            while (await receiver.command("count", key="a")).get("count", 0) < expected:
                await asyncio.sleep(0.02)
            rates.append(edits / (time.perf_counter() - start))
        await sender.close()
        await receiver.close()
        return {"y_websocket_server_node_to_node_edits_per_s": round(statistics.median(rates))}
    finally:
        server.kill()
        await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures = asyncio.run(run(args.edits, args.runs))
    if NODE_SERVER.exists():
        figures.update(asyncio.run(run_peer(args.edits, args.runs)))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""What one hostile client costs the server and everyone else: memory, latency, lock-outs.

    python -m bench.attacks                      # every attack, figures as a table and JSON
    python -m bench.attacks --only amplification slow-consumer
    python -m bench.attacks --pluv-root DIR      # serve the pluv_widget package in DIR instead

Each attack runs against a fresh ``pluv-widget serve`` (shipped defaults, SQLite store) on a free
loopback port, while two honest clients in another room measure presence round trips:

* ``amplification`` — a room holds a 1 MB document; the attacker sends 5-byte sync step 1
  frames (each asks for the whole document) and never reads. Peak server RSS, seconds until the
  server cuts the attacker off (``-`` if it never does within the attack).
* ``slow-consumer`` — the attacker joins a busy room (a writer appends 2 kB items 100 times a
  second) and never reads. Peak RSS, seconds until it is cut off.
* ``event-flood`` / ``presence-flood`` / ``update-flood`` — the attacker sends 60 kB events,
  presence patches, or CRDT updates as fast as the server reads them. The honest pair's
  presence round trip p50/p99 (ms), against a quiet run.
* ``idle-sockets`` — 2,000 sockets connect from 127.0.0.1 and never send a byte; then 30
  students join one after another from other machines (source addresses 127.0.0.2, .3, ...):
  how many got in, and the median join time.

Figures, not verdicts: the machine has 2 cores shared with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.run import ROOT, SYSTEMS, Server

ATTACK_S = 10.0
JOIN = json.dumps({"type": "join", "protocol": 2, "presence": {}})


def sync_frame(step: int, payload: bytes) -> bytes:
    """A y-websocket sync frame, built here so the attacks do not depend on the package measured."""
    return bytes([0, step]) + pycrdt.write_message(payload)


async def joined(url: str, room: str, *, max_queue: int | None = 16, source: str | None = None) -> ClientConnection:
    """Join ``room``; ``source``: the local address to connect from (another "machine")."""
    extra: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
    ws = await connect(f"{url}/{room}", max_size=None, open_timeout=20, max_queue=max_queue, compression=None,
                       **extra)
    await ws.send(JOIN)
    return ws


async def seed_document(url: str, room: str, megabytes: float) -> None:
    """Fill ``room`` with about ``megabytes`` of storage, in 64 kB updates."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    items = doc.get("items", type=pycrdt.Array)
    ws = await joined(url, room)
    async with ws:
        chunk = "x" * 1000
        for _ in range(int(megabytes * 1000 / 64)):
            before = doc.get_state()
            with doc.transaction():
                for _ in range(64):
                    items.append(chunk)
            await ws.send(sync_frame(2, doc.get_update(before)))
        await ws.send(json.dumps({"type": "event", "event": "done", "data": None}))
        await asyncio.sleep(1.0)  # let the group commit land before the socket closes


class PresenceProbe:
    """Two honest clients in their own room: A patches presence, B's copy arrives; A measures
    the round trip of its patch reaching B and B's answer coming back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        a = await joined(self.url, "probe")
        b = await joined(self.url, "probe")
        pending: dict[int, float] = {}

        async def echo() -> None:
            async for frame in b:
                message = json.loads(frame) if isinstance(frame, str) else {}
                if message.get("type") == "presence" and "ping" in message["patch"]:
                    await b.send(json.dumps({"type": "presence", "patch": {"pong": message["patch"]["ping"]}}))

        async def listen() -> None:
            async for frame in a:
                message = json.loads(frame) if isinstance(frame, str) else {}
                if message.get("type") == "presence" and "pong" in message["patch"]:
                    pong = message["patch"]["pong"]
                    if pong in pending:
                        self.samples.append((time.perf_counter() - pending.pop(pong)) * 1000)

        tasks = [asyncio.create_task(echo()), asyncio.create_task(listen())]
        try:
            ping = 0
            while not self._stop.is_set():
                ping += 1
                pending[ping] = time.perf_counter()
                await a.send(json.dumps({"type": "presence", "patch": {"ping": ping}}))
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await a.close()
            await b.close()

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        if not self.samples:
            return {"p50_ms": None, "p99_ms": None, "samples": 0}
        ordered = sorted(self.samples)
        return {
            "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
            "samples": len(ordered),
        }


async def watch_rss(server: Server, until: asyncio.Event) -> int:
    peak = 0
    while not until.is_set():
        peak = max(peak, server.rss())
        await asyncio.sleep(0.05)
    return max(peak, server.rss())


async def never_reading(url: str, room: str, send: Callable[[ClientConnection], Awaitable[None]]) -> float | None:
    """Join ``room``, then keep sending with ``send`` and never read; seconds until cut off."""
    ws = await joined(url, room, max_queue=1)
    started = time.monotonic()
    try:
        while time.monotonic() - started < ATTACK_S:
            await asyncio.wait_for(send(ws), timeout=ATTACK_S)
    except (ConnectionClosed, TimeoutError, OSError):
        pass
    finally:
        cut_off = ws.protocol.state.name == "CLOSED" or ws.close_code is not None
        ws.transport.abort()
    return round(time.monotonic() - started, 2) if cut_off else None


async def amplification(server: Server, rounds: int = 3) -> dict[str, Any]:
    """The attack ``rounds`` times on one server: peak RSS during each, RSS after each (growth
    across rounds would be memory the server never gave back)."""
    await seed_document(server.url, "big", 1.0)
    baseline = server.rss()

    async def ask_for_everything(ws: ClientConnection) -> None:
        await ws.send(sync_frame(0, b"\x00"))

    peaks, after, cut_offs = [], [], []
    for _ in range(rounds):
        done = asyncio.Event()
        watcher = asyncio.create_task(watch_rss(server, done))
        cut_offs.append(await never_reading(server.url, "big", ask_for_everything))
        done.set()
        peaks.append(round(await watcher / 2**20, 1))
        await asyncio.sleep(1.0)
        after.append(round(server.rss() / 2**20, 1))
    return {"baseline_rss_mb": round(baseline / 2**20, 1), "peak_rss_mb": max(peaks), "peaks_mb": peaks,
            "rss_after_each_mb": after, "cut_off_s": cut_offs[0], "cut_offs_s": cut_offs, "alive": server.alive}


async def slow_consumer(server: Server) -> dict[str, Any]:
    writer = await joined(server.url, "busy")
    stop = asyncio.Event()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    items = doc.get("items", type=pycrdt.Array)

    async def write() -> None:
        while not stop.is_set():
            before = doc.get_state()
            items.append("y" * 2000)
            await writer.send(sync_frame(2, doc.get_update(before)))
            await asyncio.sleep(0.01)

    async def drain() -> None:
        async for _ in writer:
            pass

    tasks = [asyncio.create_task(write()), asyncio.create_task(drain())]
    baseline = server.rss()
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_rss(server, done))

    async def idle(_ws: ClientConnection) -> None:
        await asyncio.sleep(0.5)

    cut_off = await never_reading(server.url, "busy", idle)
    done.set()
    stop.set()
    peak = await watcher
    for task in tasks:
        task.cancel()
    await writer.close()
    return {"baseline_rss_mb": round(baseline / 2**20, 1), "peak_rss_mb": round(peak / 2**20, 1),
            "cut_off_s": cut_off, "alive": server.alive}


async def flood(server: Server, kind: str | None) -> dict[str, Any]:
    """The honest pair's presence round trips while an attacker (its own process, so it cannot
    starve the probe's event loop) floods ``kind`` frames for ``ATTACK_S`` seconds."""
    probe = PresenceProbe(server.url)
    probing = asyncio.create_task(probe.run())
    sent = 0
    if kind is None:
        await asyncio.sleep(ATTACK_S)
    else:
        attacker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.attacks", "--flooder", kind, "--url", server.url,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await attacker.communicate()
        sent = int(output.decode().strip() or 0)
    figures = probe.stop()
    await probing
    return {**figures, "attacker_frames": sent, "alive": server.alive}


async def flooder(kind: str, url: str) -> int:
    """The attacker's side of :func:`flood`: send as fast as the server reads; frames sent."""
    frame = FLOODS[kind]()
    attacker = await joined(url, "flood")
    drain = asyncio.create_task(_drain(attacker))
    sent, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < ATTACK_S:
            await attacker.send(frame(sent))
            sent += 1
    except ConnectionClosed:
        pass
    drain.cancel()
    await attacker.close()
    return sent


async def _drain(ws: ClientConnection) -> None:
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass


def _update_frames() -> Callable[[int], bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    items = doc.get("items", type=pycrdt.Array)

    def frame(_index: int) -> bytes:
        before = doc.get_state()
        items.append("z" * 200)
        return sync_frame(2, doc.get_update(before))

    return frame


async def idle_sockets(server: Server, count: int = 2000, students: int = 30) -> dict[str, Any]:
    idle: list[socket.socket] = []
    refused = 0
    for _ in range(count):
        try:
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
        except OSError:
            refused += 1
    times: list[float] = []
    got_in = 0
    for index in range(students):
        started = time.monotonic()
        try:
            ws = await joined(server.url, "class", source=f"127.0.0.{2 + index % 200}")
            async with asyncio.timeout(10):
                while '"welcome"' not in str(await ws.recv()):
                    pass
            got_in += 1
            times.append((time.monotonic() - started) * 1000)
            await ws.close()
        except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError):
            pass
    for sock in idle:
        sock.close()
    return {"idle_opened": len(idle), "idle_refused": refused, "students_in": f"{got_in}/{students}",
            "median_join_ms": round(statistics.median(times), 1) if times else None, "alive": server.alive}


FLOODS: dict[str, Callable[[], Callable[[int], str | bytes]]] = {
    "event-flood": lambda: lambda i: json.dumps({"type": "event", "event": "spam", "data": "e" * 60_000}),
    "presence-flood": lambda: lambda i: json.dumps({"type": "presence", "patch": {"n": i}}),
    "update-flood": _update_frames,
}

ATTACKS: dict[str, Callable[[Server], Awaitable[dict[str, Any]]]] = {
    "amplification": amplification,
    "slow-consumer": slow_consumer,
    "quiet": lambda server: flood(server, None),
    "event-flood": lambda server: flood(server, "event-flood"),
    "presence-flood": lambda server: flood(server, "presence-flood"),
    "update-flood": lambda server: flood(server, "update-flood"),
    "idle-sockets": idle_sockets,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(ATTACKS), help="a subset of the attacks")
    parser.add_argument("--pluv-root", type=Path, help="serve the pluv_widget package in this folder")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--flooder", choices=list(FLOODS), help=argparse.SUPPRESS)  # flood()'s attacker process
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flooder:
        print(asyncio.run(flooder(args.flooder, args.url)))
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    system = next(system for system in SYSTEMS if system.key == "pluv-widget")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pluv-attacks-") as scratch:
        for name in args.only or list(ATTACKS):
            server = Server(system, Path(scratch), cwd=args.pluv_root or ROOT)
            try:
                results[name] = asyncio.run(ATTACKS[name](server))
            except Exception as error:  # a figure we could not take is reported, not hidden
                results[name] = {"error": f"{type(error).__name__}: {error}", "alive": server.alive}
            finally:
                server.stop()
            print(f"{name:16} {json.dumps(results[name])}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

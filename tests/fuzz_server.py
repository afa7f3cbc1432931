"""Fuzz a real server with mutated frames of every message type, then check every room still loads.

    python tests/fuzz_server.py --frames 100000          # the full run (about a minute)
    python tests/fuzz_server.py --frames 3000 --json     # what CI runs (tests/test_fuzz_server.py)

A ``pluv-widget serve`` subprocess on a free 127.0.0.1 port, with its SQLite store. Several
connections enter a few rooms and send frames drawn from a corpus of valid ones (``join``,
``presence``, ``event``, sync step 1, step 2 and updates built by pycrdt from random edits), each
mutated: bytes flipped, cut or repeated, JSON values swapped for odd ones (NaN, lone surrogates,
deep nesting, huge numbers), CRDT payloads mutated *inside* a valid sync frame so that they reach
the CRDT decoder. A connection the server closes is opened again. A quarter of the connections
are stock Yjs clients' (``/yjs/<room>``, no ``join``), which also send awareness messages.

Counted as failures: the server process dying, a close with 1011 (an internal error), a
traceback in the server's log, and afterwards — with the server restarted on the same store —
a room that an honest client can no longer enter and sync.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOMS = ("fuzz-a", "fuzz-b", "fuzz-c")
ODD_VALUES: list[str] = [
    "NaN", "-Infinity", '"\\ud800"', '"\\udfff\\ud800"', "[" * 3000 + "]" * 3000, "1e999", "-0",
    str(2**80), '"' + "x" * 70_000 + '"', '{"__proto__":1}', "null", "[]", "{}", '"😀"',
]


def varuint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sync_frame(step: int, payload: bytes) -> bytes:
    return bytes([0, step]) + varuint(len(payload)) + payload


def honest_updates(rng: random.Random, count: int) -> list[bytes]:
    """Updates of random edits to arrays, maps, text and XML, as a real client makes them."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=rng.randrange(1, 2**31))
    items, notes, text = doc.get("items", type=pycrdt.Array), doc.get("notes", type=pycrdt.Map), doc.get(
        "text", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for index in range(count):
        choice = rng.random()
        with doc.transaction():
            if choice < 0.35:
                items.append(rng.choice([index, "x" * rng.randrange(1, 30), {"id": str(index)}, [1, 2], None, 2.5]))
            elif choice < 0.45 and len(items):
                del items[rng.randrange(len(items))]
            elif choice < 0.65:
                notes[f"k{index % 7}"] = pycrdt.Map({"v": index, "t": pycrdt.Text("hi")})
            elif choice < 0.9:
                text.insert(rng.randrange(len(text) + 1), rng.choice(["a", "bc", "😀", "é"]))
            elif len(text) > 1:
                text.format(0, 1, {"bold": True})
    return [*updates, doc.get_update()]


@dataclass
class Corpus:
    updates: list[bytes]
    texts: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, rng: random.Random) -> Corpus:
        updates = [update for _ in range(8) for update in honest_updates(rng, 40)]
        full = pycrdt.Doc()
        full.apply_update(updates[-1])
        corpus = cls(updates)
        corpus.texts = [
            json.dumps({"type": "presence", "patch": {"name": "Ada", "selection_id": None, "n": 1}}),
            json.dumps({"type": "event", "event": "poll", "data": {"question": "q", "options": ["a", "b"]}}),
            json.dumps({"type": "event", "event": "chat", "data": "hello"}),
            json.dumps({"type": "join", "protocol": 2, "presence": {}}),
            json.dumps({"type": "join", "protocol": 2, "presence": {"name": "x"},
                        "initial_storage": base64.b64encode(updates[0]).decode(), "metadata": {"a": 1}}),
            # Protocol 2: calls of the built-in procedures (the fuzz server has no auth: everyone
            # is a teacher, so moderation and resets are fuzzed too).
            json.dumps({"type": "call", "id": 1, "procedure": "messages.post", "input": {"id": "m1", "text": "hi"}}),
            json.dumps({"type": "call", "id": 2, "procedure": "messages.delete", "input": {"id": "m1"}}),
            json.dumps({"type": "call", "id": 3, "procedure": "messages.clear", "input": {}}),
            json.dumps({"type": "call", "id": 4, "procedure": "users.mute", "input": {"user_id": "someone"}}),
            json.dumps({"type": "call", "id": 5, "procedure": "room.lock", "input": {}}),
            json.dumps({"type": "call", "id": 6, "procedure": "room.unlock", "input": {}}),
            json.dumps({"type": "call", "id": 7, "procedure": "nope", "input": None}),
            # The classroom's procedures (issue 13): polls, hands, pulse, export.
            json.dumps({"type": "call", "id": 8, "procedure": "polls.create",
                        "input": {"question": "q?", "options": ["a", "b", "c"], "multiple": True}}),
            json.dumps({"type": "call", "id": 9, "procedure": "polls.vote", "input": {"poll": "p1", "choice": ["a"]}}),
            json.dumps({"type": "call", "id": 10, "procedure": "polls.reveal", "input": {"poll": "p1"}}),
            json.dumps({"type": "call", "id": 11, "procedure": "polls.close", "input": {"poll": "p1"}}),
            json.dumps({"type": "call", "id": 12, "procedure": "hands.raise", "input": {"note": "stuck"}}),
            json.dumps({"type": "call", "id": 13, "procedure": "hands.next", "input": {}}),
            json.dumps({"type": "call", "id": 14, "procedure": "hands.resolve", "input": {"user_id": "u"}}),
            json.dumps({"type": "call", "id": 15, "procedure": "hands.lower", "input": {}}),
            json.dumps({"type": "call", "id": 16, "procedure": "pulse.checkpoint", "input": {"name": "ex1"}}),
            json.dumps({"type": "call", "id": 17, "procedure": "pulse.report",
                        "input": {"cells_run": 3, "last_error": "ValueError", "sharing": True}}),
            json.dumps({"type": "call", "id": 18, "procedure": "class.export", "input": {}}),
        ]
        return corpus

    def state_vector(self, rng: random.Random) -> bytes:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        for update in rng.sample(self.updates, k=min(5, len(self.updates))):
            doc.apply_update(update)
        return doc.get_state()


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        operation = rng.random()
        if not out:
            out.append(rng.randrange(256))
        elif operation < 0.55:
            out[rng.randrange(len(out))] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif operation < 0.7:
            del out[rng.randrange(len(out)):]
        elif operation < 0.85:
            start = rng.randrange(len(out))
            out[start:start] = out[start:start + rng.randint(1, 16)]
        else:
            out[rng.randrange(len(out) + 1):0] = bytes([0xFF] * rng.randint(1, 10))
    return bytes(out)


def mutate_text(rng: random.Random, text: str) -> str:
    choice = rng.random()
    if choice < 0.45:  # swap one JSON value for an odd one
        message = json.loads(text)
        key = rng.choice([*message.keys(), "type", "patch", "data", "event"])
        raw = json.dumps({k: v for k, v in message.items() if k != key})
        odd = rng.choice([*ODD_VALUES, '"presence"', '"event"', '"join"', '"welcome"', "1"])
        return raw[:-1] + ("," if len(raw) > 2 else "") + json.dumps(key) + ":" + odd + "}"
    if choice < 0.8:
        return mutate_bytes(rng, text.encode()).decode("utf-8", errors="replace")
    return "".join(rng.choice('{}[]":,0123456789abcnul\\ tyep') for _ in range(rng.randint(0, 40)))


def protected_frame(step: int, payload: bytes) -> bytes:
    """A frame of the protected document (binary message type 8): clients may only ask (step 1)."""
    return bytes([8, step]) + varuint(len(payload)) + payload


def awareness_frame(rng: random.Random) -> bytes:
    """A y-protocols awareness message: entries of (client id, clock, JSON state), some odd."""
    entries = []
    for _ in range(rng.choice([0, 1, 1, 1, 2, 5])):
        state = rng.choice(['{"user":{"name":"Eve","color":"#f00"},"cursor":1}', "null", "", *ODD_VALUES,
                            '{"user":' + '{"a":' * 40 + "1" + "}" * 41])
        entries.append(varuint(rng.choice([1, 2, rng.randrange(2**53)])) + varuint(rng.randrange(2**40))
                       + varuint(len(state.encode())) + state.encode())
    payload = varuint(len(entries)) + b"".join(entries)
    return bytes([1]) + varuint(len(payload)) + payload


def next_frame(rng: random.Random, corpus: Corpus) -> tuple[str, str | bytes]:
    kind = rng.choice(["text", "text", "update", "update", "step2", "step1", "frame", "protected", "awareness"])
    if kind == "awareness":
        frame = awareness_frame(rng)
        return "awareness", mutate_bytes(rng, frame) if rng.random() < 0.5 else frame
    if kind == "protected":
        step = rng.choice([0, 1, 2])
        payload = corpus.state_vector(rng) if step == 0 else rng.choice(corpus.updates)
        return "protected", mutate_bytes(rng, protected_frame(step, payload)) if rng.random() < 0.5 else \
            protected_frame(step, payload)
    if kind == "text":
        text = rng.choice(corpus.texts)
        return "text", text if rng.random() < 0.1 else mutate_text(rng, text)  # some valid ones too
    if kind == "update":
        return "update", sync_frame(2, mutate_bytes(rng, rng.choice(corpus.updates)))
    if kind == "step2":
        return "step2", sync_frame(1, mutate_bytes(rng, rng.choice(corpus.updates)))
    if kind == "step1":
        return "step1", sync_frame(0, mutate_bytes(rng, corpus.state_vector(rng)))
    return "frame", mutate_bytes(rng, sync_frame(2, rng.choice(corpus.updates)))


@dataclass
class Report:
    frames: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    internal_errors: int = 0
    server_died: bool = False
    tracebacks: int = 0
    unreadable_rooms: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def crashes(self) -> int:
        return self.internal_errors + int(self.server_died) + self.tracebacks

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "crashes": self.crashes}


class Server:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "server.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        env = {**os.environ, "PLUV_WIDGET_HOME": str(self.directory / "home")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pluv_widget", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(self.directory / "data")],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.healthy():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as answer:
                return bool(json.loads(answer.read()).get("server"))
        except OSError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


async def drain(socket_: ClientConnection) -> None:
    try:
        async for _frame in socket_:
            pass
    except ConnectionClosed:
        pass


async def attacker(server: Server, corpus: Corpus, seed: int, frames: int, report: Report) -> None:
    rng = random.Random(seed)
    sent = 0
    while sent < frames and server.alive():
        room = rng.choice(ROOMS)
        yjs = rng.random() < 0.25  # a stock Yjs client's endpoint: no join
        try:
            async with connect(f"{server.url}/{'yjs/' if yjs else ''}{room}", max_size=None, open_timeout=10) as ws:
                reader = asyncio.create_task(drain(ws))
                join = corpus.texts[3] if rng.random() < 0.9 else mutate_text(rng, corpus.texts[4])
                if not yjs:
                    await ws.send(join)
                while sent < frames:
                    kind, frame = next_frame(rng, corpus)
                    report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
                    sent += 1
                    report.frames += 1
                    await ws.send(frame)
                    if rng.random() < 0.002:
                        break  # a fresh connection now and then: joins and leaves get fuzzed too
                await ws.close()
                await reader
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            report.closes[str(code)] = report.closes.get(str(code), 0) + 1
            if code == 1011:
                report.internal_errors += 1
        except (OSError, InvalidHandshake, TimeoutError):
            await asyncio.sleep(0.05)


async def room_loads(url: str, room: str) -> bool:
    """An honest client enters ``room`` and receives its whole storage (sync step 2)."""
    try:
        async with connect(f"{url}/{room}", max_size=None, open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "join", "protocol": 2, "presence": {}}))
            await ws.send(sync_frame(0, b"\x00"))
            async with asyncio.timeout(15):
                async for frame in ws:
                    if isinstance(frame, bytes) and frame[:2] == b"\x00\x01":
                        doc: pycrdt.Doc[Any] = pycrdt.Doc()
                        doc.apply_update(_payload(frame))
                        return True
    except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError, ValueError):
        return False
    return False


def _payload(frame: bytes) -> bytes:
    decoder = pycrdt.Decoder(frame)
    decoder.read_var_uint()
    decoder.read_var_uint()
    payload = decoder.read_message()
    return bytes(payload or b"")


async def fuzz(frames: int, connections: int, seed: int, directory: Path) -> Report:
    report = Report()
    rng = random.Random(seed)
    corpus = Corpus.build(rng)
    server = Server(directory).start()
    started = time.monotonic()
    try:
        per_connection = max(1, frames // connections)
        await asyncio.gather(*(attacker(server, corpus, seed * 1000 + index, per_connection, report)
                               for index in range(connections)))
        report.server_died = not server.alive()
        if not report.server_died:
            for room in ROOMS:
                if not await room_loads(server.url, room):
                    report.unreadable_rooms.append(f"{room} (before restart)")
    finally:
        server.stop()
    server.start()  # the same store: every room must load again
    try:
        for room in ROOMS:
            if not await room_loads(server.url, room):
                report.unreadable_rooms.append(f"{room} (after restart)")
    finally:
        server.stop()
    report.seconds = round(time.monotonic() - started, 1)
    report.tracebacks = server.log.read_text(errors="replace").count("Traceback")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep", type=Path, help="keep the server's folder (log, store) here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pluv-fuzz-") as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(fuzz(args.frames, args.connections, args.seed, directory))
        if report.crashes or report.unreadable_rooms:
            print((directory / "server.log").read_text(errors="replace")[-4000:], file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(f"{report.frames} frames in {report.seconds} s ({report.by_kind}); closes {report.closes}; "
              f"crashes {report.crashes} (1011: {report.internal_errors}, died: {report.server_died}, "
              f"tracebacks: {report.tracebacks}); unreadable rooms: {report.unreadable_rooms or 0}")
    return 1 if report.crashes or report.unreadable_rooms else 0


if __name__ == "__main__":
    sys.exit(main())

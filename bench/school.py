"""A whole school on one server (issue 15): 30 classes of 35 students at once, for 5 minutes.

    python -m bench.school                          # 30 rooms × (1 teacher + 35 students), 5 min, 1 then 2 processes
    python -m bench.school --processes 2 --minutes 1
    python -m bench.school --smoke                  # seconds-long, both layouts; exit 1 if anything failed

Layouts: ``1`` = one ``pluv-widget serve`` (shipped defaults, SQLite store); ``2`` = two
``pluv-widget serve --redis URL`` on two ports sharing one ``redis-server`` that this script starts
(``appendonly yes, appendfsync everysec``, as ``docs/scaling.md`` recommends). With two, member
``m`` of room ``r`` connects to process ``(r + m) % 2``: every room has students on both, so every
presence update, message and vote crosses Redis to reach half its room.

Every room has one teacher and ``--students`` students, each with their own token (tokens with
roles, ``--secret``). The load comes from two client worker processes, apart from the servers;
each runs half of the connections (by index) on one asyncio loop, as websockets' sans-I/O client
on asyncio transports speaking the wire protocol — not ``create_client``, whose full client core
(member list, undo, reconnects) would make two processes of 540 clients the bottleneck sooner. A
client does with what it receives what the widget's client core does: it decodes every frame,
applies the protected document's updates (message type 8) to its own ``pycrdt.Doc`` and reads its
``class`` views; it skips the member list. Connections come from 200 loopback addresses
(127.0.0.2 …: a school is many machines, and the server allows ``max_connections_per_address`` =
512 sockets per address; no server option is changed).

During the run, from a shared ``CLOCK_MONOTONIC`` instant ``t0``:

* **presence**: every student sets ``{"t": <send instant>, "s": <seq>}`` ``--hz`` (2) times a
  second, phases spread at random; each of the room's other members (the teacher included)
  records the latency from the send instant carried in the state;
* **messages**: every student posts one message a minute (the first at a random instant within the
  first minute; in a run shorter than a minute, one each), as the widget does: a ``call`` of the
  server's ``messages.post``, which appends it to the room's protected document. Latency: from the
  call's send instant (in the text) to each other member having applied the update that holds it;
* **a poll per room**: room ``r``'s teacher creates a poll (``polls.create``) at
  ``t0 + duration × (0.2 + 0.4 r / rooms)``; each student votes (``polls.vote``) once their
  ``class`` view shows it, after a random ``--vote-spread`` (2 s) of thinking. Figure: from the
  room's last vote sent until the teacher's ``class`` view shows every student as a voter.

Figures per layout: server CPU (user + system, psutil, every server process) over the timed phase,
in % of one core, in total and per connection; the busiest 5-second window; Redis and client CPU
(on 2 cores the clients compete with the server: their CPU is shown so that a figure bound by the
load generator can be told apart); server RSS before any connection, after connecting and at the
end, and its growth per connection; latency p50 / p99 over the deliveries that arrived, per minute
too (a p99 that grows minute after minute means the server is falling behind), and the % of
expected deliveries that arrived within ``drain`` seconds of the end (a server may merge a
sender's presence patches queued within one tick: the merged-away ones count as not delivered);
every error (``error`` frames, refused or unanswered calls, closed connections). Other processes'
CPU is measured too: before the clock starts the script waits (``--calm-wait``, 60 s; not in
``--smoke``) for them to be quiet, and the report says when they were not.

Writes ``bench/results/school.md`` and ``school.json`` (``--smoke``: ``bench/results/smoke/``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import pycrdt
from websockets.client import ClientProtocol
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/school.py``
    sys.path.insert(0, str(ROOT))

from bench.loadgen import close_all, now, sleep_until  # noqa: E402
from bench.redis_spread import Redis  # noqa: E402
from bench.run import Server, System, Workers, machine_busy, raise_open_files  # noqa: E402
from pluv_widget.protocol import PROTOCOL_VERSION  # noqa: E402
from pluv_widget.server.tokens import create_token  # noqa: E402

SECRET = "bench-school-secret-at-least-32-bytes!!"
OPTIONS = ["quicksort", "mergesort", "heapsort"]
SYNC, PROTECTED = 0, 8  # pluv_widget.protocol.sync's SYNC_MESSAGE, PROTECTED_MESSAGE (the wire is the contract)
ADDRESSES = 200  # 127.0.0.2 … 127.0.0.201
CONNECT_CONCURRENCY = 64  # per worker: the server's max_pending_per_address is 64, its total 1,024
WORKERS = 2
SAMPLE_S = 5.0
MESSAGE_PERIOD_S = 60.0
OUT = ROOT / "bench" / "results"


# -- latency histograms ---------------------------------------------------------------------------


class Histogram:
    """Latencies in ms: 0.1 ms buckets below 1 s, 10 ms buckets up to 60 s, then one overflow bucket.

    Counts, not samples: 1,050 presence senders × 2 Hz × 35 receivers × 300 s is 22 million
    deliveries, too many to ship between processes as floats."""

    FINE = 10_000  # 0.1 ms buckets: [0, 1000) ms
    COARSE = 5_900  # 10 ms buckets: [1000, 60000) ms (``add`` has both inlined: it runs 70,000 times a second)

    def __init__(self, counts: array[int] | None = None) -> None:
        self.counts = counts if counts is not None else array("q", bytes(8 * (self.FINE + self.COARSE + 1)))

    def add(self, seconds: float) -> None:
        ms = seconds * 1000.0
        self.counts[int(ms * 10.0) if ms < 1000.0 else min(15_900, 10_000 + int((ms - 1000.0) / 10.0))] += 1

    @staticmethod
    def upper_ms(index: int) -> float:
        if index < Histogram.FINE:
            return (index + 1) / 10.0
        if index < Histogram.FINE + Histogram.COARSE:
            return 1000.0 + (index - Histogram.FINE + 1) * 10.0
        return float("inf")

    def merge(self, other: Histogram) -> None:
        for index, count in enumerate(other.counts):
            if count:
                self.counts[index] += count

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, fraction: float) -> float | None:
        """Nearest rank, as the bucket's upper edge (ms); None when empty."""
        total = self.total
        if not total:
            return None
        rank, seen = max(1, int(fraction * total + 0.999999)), 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return self.upper_ms(index)
        return float("inf")

    def to_bytes(self) -> bytes:
        return self.counts.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Histogram:
        counts = array("q")
        counts.frombytes(data)
        return cls(counts)


class Timeline:
    """One histogram per minute of the run, by send instant (a p99 that grows minute after minute
    means the server is falling behind); ``all`` merges them."""

    def __init__(self, minutes: int, t0: float = 0.0) -> None:
        self.t0 = t0
        self.minutes = [Histogram() for _ in range(minutes)]
        self.last = minutes - 1

    def add(self, sent: float, latency: float) -> None:
        self.minutes[min(self.last, int((sent - self.t0) * (1 / 60)))].add(latency)

    @property
    def all(self) -> Histogram:
        merged = Histogram()
        for minute in self.minutes:
            merged.merge(minute)
        return merged

    def to_wire(self) -> list[bytes]:
        return [h.to_bytes() for h in self.minutes]

    @classmethod
    def merged(cls, wires: list[list[bytes]]) -> Timeline:
        timeline = cls(len(wires[0]))
        for wire in wires:
            for mine, data in zip(timeline.minutes, wire, strict=True):
                mine.merge(Histogram.from_bytes(data))
        return timeline


# -- one member of a class: a raw client of the wire protocol -----------------------------------------


@dataclass(frozen=True)
class Seat:
    """Who sits where: member ``member`` of room ``room`` (0: the teacher), its connection index."""

    room: int
    member: int
    index: int

    @property
    def teacher(self) -> bool:
        return self.member == 0

    @property
    def user_id(self) -> str:
        return "teacher" if self.teacher else f"s{self.member:02d}"


class Member(asyncio.Protocol):
    """A teacher's or a student's connection: join, storage and protected sync, ``class`` views,
    calls (``call`` → ``result`` / ``error`` with the same id) and presence.

    websockets' sans-I/O ``ClientProtocol`` on a plain asyncio transport: frames are handled as
    they are parsed, with no task, future or queue per frame: 540 connections share a worker's
    loop, and the clients must cost as little as they can beside the server they load."""

    def __init__(self, school: Share, seat: Seat, url: str, source: str) -> None:
        self.school = school
        self.seat = seat
        self.room = school.room_name(seat.room)
        self.uri = parse_uri(url)
        self.source = source
        self.ws = ClientProtocol(self.uri, max_size=None)  # no extensions: compression off, as the server
        self.transport: asyncio.Transport | None = None
        self.errors: list[str] = []
        self.closed: str | None = None  # why the connection ended; None while it is open
        self.connection_id: str | None = None
        self.storage: pycrdt.Doc[Any] = pycrdt.Doc()
        self.protected: pycrdt.Doc[Any] = pycrdt.Doc()
        self.messages: pycrdt.Array[Any] = self.protected.get("messages", type=pycrdt.Array)
        self.messages.observe(self._on_messages)
        self.calls: dict[int, tuple[str, float]] = {}  # id -> (procedure, sent instant)
        self.next_call = 0
        self.voted: set[str] = set()
        self.rng = random.Random(school.plan["seed"] * 1_000_003 + seat.index)  # phases, think times
        self._open: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._welcome = asyncio.Event()
        self._synced = asyncio.Event()
        self._protected_synced = asyncio.Event()
        self._viewed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self, timeout: float) -> None:
        """Open the socket, join, and return once storage, the protected document and the first
        ``class`` view are in."""
        loop = asyncio.get_running_loop()
        self._open, self._lost = loop.create_future(), loop.create_future()
        await asyncio.wait_for(loop.create_connection(lambda: self, self.uri.host, self.uri.port,
                                                      local_addr=(self.source, 0)), timeout)
        await asyncio.wait_for(self._join(), timeout)

    async def _join(self) -> None:
        assert self._open is not None
        await self._open
        self.send(json.dumps({"type": "join", "protocol": PROTOCOL_VERSION, "presence": {}}))
        await self._welcome.wait()
        self.send(pycrdt.create_sync_message(self.storage))  # this bench writes no storage
        self.send(bytes([PROTECTED]) + pycrdt.create_sync_message(self.protected)[1:])
        for event in (self._synced, self._protected_synced, self._viewed):
            await event.wait()

    async def close(self) -> None:
        if self.transport is None or self._lost is None or self._lost.done():
            return
        self.ws.send_close()
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), 2)
        except TimeoutError:
            self.transport.abort()

    def send(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            self.ws.send_text(frame.encode())
        else:
            self.ws.send_binary(frame)
        self._flush()

    def call(self, procedure: str, data: dict[str, Any]) -> float:
        self.next_call += 1
        sent = now()
        self.calls[self.next_call] = (procedure, sent)
        self.send(json.dumps({"type": "call", "id": self.next_call, "procedure": procedure, "input": data}))
        return sent

    def error(self, problem: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{self.room}/{self.seat.user_id}: {problem}")

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            try:
                if isinstance(event, Response):
                    assert self._open is not None
                    if self.ws.handshake_exc is not None:
                        self._open.set_exception(self.ws.handshake_exc)
                    else:
                        self._open.set_result(None)
                elif isinstance(event, WsFrame) and event.opcode is Opcode.TEXT:
                    self.on_text(json.loads(bytes(event.data)))  # bytes(bytes) is no copy
                elif isinstance(event, WsFrame) and event.opcode is Opcode.BINARY:
                    self.on_binary(bytes(event.data))
            except Exception as problem:  # a decoding bug must show, not vanish in the loop's log
                self.error(f"handling a frame: {problem!r}")
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = f"close code {self.ws.close_code}" + (f", {exc!r}" if exc else "")
        if self._open is not None and not self._open.done():
            self._open.set_exception(ConnectionError(f"closed before the handshake ({self.closed})"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    # -- frames ---------------------------------------------------------------------------------

    def on_binary(self, frame: bytes) -> None:
        if frame[0] == SYNC:
            reply = pycrdt.handle_sync_message(frame[1:], self.storage)
            if reply is not None:  # the server's step 1: answer it
                self.send(reply)
            elif frame[1] == pycrdt.YSyncMessageType.SYNC_STEP2:
                self._synced.set()
        elif frame[0] == PROTECTED:
            pycrdt.handle_sync_message(frame[1:], self.protected)
            if frame[1] == pycrdt.YSyncMessageType.SYNC_STEP2:
                self._protected_synced.set()

    def on_text(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "presence":
            if "updates" in message:  # [connection_id, patch] (protocol 3) or {"connection_id", "patch"}
                for update in message["updates"]:
                    sender, patch = update if isinstance(update, list) else (update["connection_id"], update["patch"])
                    if sender != self.connection_id:
                        self.school.presence(patch)
            else:
                self.school.presence(message["patch"])
        elif kind == "class":
            self._viewed.set()
            self.school.class_view(self, message["view"])
        elif kind == "result":
            if self.calls.pop(message["id"], None) is None:
                self.error(f"a result for no call: {message['id']}")
        elif kind == "welcome":
            self.connection_id = message["connection_id"]
            self._welcome.set()
        elif kind == "error":
            call = self.calls.pop(message["id"], None) if "id" in message else None
            self.error(f"{call[0] if call else 'error'}: {message.get('code')}: {message.get('message')}")
        # joined / left: the member list is not needed here

    def _on_messages(self, event: Any) -> None:
        for part in event.delta:
            for item in part.get("insert", ()):
                if item["author_id"] != self.seat.user_id:
                    self.school.message(item["text"])


# -- a worker process's share of the school ----------------------------------------------------------


class Share:
    """The connections of one worker process (index ``i`` with ``i % workers == worker``) and what
    they observe; ``setup`` connects them, ``run`` plays the timed phase and returns raw figures."""

    def __init__(self, plan: dict[str, Any], worker: int, workers: int) -> None:
        self.plan = plan
        self.rooms, self.students = plan["rooms"], plan["students"]
        self.duration, self.drain = plan["duration"], plan["drain"]
        self.t0 = float("inf")
        minutes = max(1, int((self.duration + 59) // 60))
        self.presence_latency = Timeline(minutes)
        self.message_latency = Timeline(minutes)
        self.presence_received = 0
        self.messages_received = 0
        self.presence_sent = [0] * self.rooms
        self.messages_sent = [0] * self.rooms
        self.lateness = Histogram()  # how late the senders' timers fired: the clients' own load
        self.votes: dict[int, list[float]] = {}  # room -> vote send instants
        self.poll_created: dict[int, float] = {}
        self.poll_complete: dict[int, float] = {}  # room -> when the teacher saw every vote
        self.voting: set[asyncio.Task[None]] = set()
        urls = plan["urls"]
        self.members: list[Member] = []
        for room in range(self.rooms):
            for member in range(self.students + 1):
                index = room * (self.students + 1) + member
                if index % workers != worker:
                    continue
                seat = Seat(room, member, index)
                token = create_token(plan["secret"], room=self.room_name(room), max_age=3600, user={
                    "id": seat.user_id, "name": "Teacher" if seat.teacher else f"Student {member}",
                    "role": "teacher" if seat.teacher else "student"})
                url = f"{urls[(room + member) % len(urls)]}/{self.room_name(room)}?token={token}"
                self.members.append(Member(self, seat, url, f"127.0.0.{2 + index % ADDRESSES}"))

    def room_name(self, room: int) -> str:
        return f"{self.plan['prefix']}-class-{room:02d}"

    async def setup(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(member: Member) -> None:
            async with gate:
                await member.connect(timeout=120)

        await asyncio.gather(*(one(member) for member in self.members))
        return {"connected": len(self.members)}

    # -- what receivers observe ----------------------------------------------------------------

    def presence(self, patch: dict[str, Any]) -> None:
        sent = patch.get("t")
        if sent is None or sent < self.t0:
            return
        self.presence_latency.add(sent, now() - sent)
        self.presence_received += 1

    def message(self, text: str) -> None:
        sent = float(text.split(" ", 1)[0])
        if sent < self.t0:
            return
        self.message_latency.add(sent, now() - sent)
        self.messages_received += 1

    def class_view(self, member: Member, view: dict[str, Any]) -> None:
        polls = view.get("polls") or []
        if member.seat.teacher:
            room = member.seat.room
            if room not in self.poll_complete and any(p.get("voters", 0) >= self.students for p in polls):
                self.poll_complete[room] = now()
            return
        for poll in polls:
            if poll["id"] not in member.voted and poll.get("state") == "open":
                member.voted.add(poll["id"])
                delay = member.rng.uniform(0, self.plan["vote_spread"])
                task = asyncio.get_running_loop().create_task(self._vote(member, poll["id"], delay))
                self.voting.add(task)  # the loop keeps only a weak reference
                task.add_done_callback(self.voting.discard)

    # -- what senders do -------------------------------------------------------------------------

    async def _vote(self, member: Member, poll: str, delay: float) -> None:
        await asyncio.sleep(delay)
        sent = member.call("polls.vote", {"poll": poll, "choice": OPTIONS[member.seat.member % 3]})
        self.votes.setdefault(member.seat.room, []).append(sent)

    async def _presence(self, member: Member) -> None:
        period = 1.0 / self.plan["hz"]
        scheduled = self.t0 + member.rng.uniform(0, period)
        seq, end = 0, self.t0 + self.duration
        while scheduled < end:
            await sleep_until(scheduled)
            sent = now()
            self.lateness.add(max(0.0, sent - scheduled))
            member.send(json.dumps({"type": "presence", "patch": {"t": sent, "s": seq}}, separators=(",", ":")))
            self.presence_sent[member.seat.room] += 1
            seq += 1
            scheduled += period

    async def _messages(self, member: Member) -> None:
        period = min(MESSAGE_PERIOD_S, self.duration)
        scheduled = self.t0 + member.rng.uniform(0, period)
        seq, end = 0, self.t0 + self.duration
        while scheduled < end:
            await sleep_until(scheduled)
            seat = member.seat
            text = f"{now():.6f} question {seq} from {seat.user_id}: what does this cell print?"
            member.call("messages.post", {"id": f"r{seat.room}-{seat.user_id}-{seq}", "text": text})
            self.messages_sent[seat.room] += 1
            seq += 1
            scheduled += period

    async def _poll(self, member: Member) -> None:
        room = member.seat.room
        await sleep_until(self.t0 + self.duration * (0.2 + 0.4 * room / self.rooms))
        self.poll_created[room] = member.call(
            "polls.create", {"question": f"Which sort is stable? (class {room})", "options": OPTIONS})

    async def run(self, t0: float) -> dict[str, Any]:
        self.t0 = self.presence_latency.t0 = self.message_latency.t0 = t0
        tasks = []
        for member in self.members:
            if member.seat.teacher:
                tasks.append(asyncio.create_task(self._poll(member)))
            else:
                tasks.append(asyncio.create_task(self._presence(member)))
                tasks.append(asyncio.create_task(self._messages(member)))
        await sleep_until(t0 + self.duration)
        await asyncio.gather(*tasks, return_exceptions=True)
        failed = [repr(task.exception()) for task in tasks if not task.cancelled() and task.exception()]
        await sleep_until(t0 + self.duration + self.drain)
        errors = [error for member in self.members for error in member.errors]
        for member in self.members:
            if member.closed is not None:
                errors.append(f"{member.room}/{member.seat.user_id}: connection closed ({member.closed})")
            for procedure, _ in member.calls.values():
                errors.append(f"{member.room}/{member.seat.user_id}: {procedure}: no answer")
        return {
            "presence": self.presence_latency.to_wire(),
            "messages": self.message_latency.to_wire(),
            "presence_received": self.presence_received,
            "messages_received": self.messages_received,
            "presence_sent": self.presence_sent,
            "messages_sent": self.messages_sent,
            "lateness": self.lateness.to_bytes(),
            "votes": self.votes,
            "poll_created": self.poll_created,
            "poll_complete": self.poll_complete,
            "errors": (failed + errors)[:50],
            "error_count": len(failed) + len(errors),
        }

    async def teardown(self) -> None:
        await close_all(self.members)


def worker_main(conn: Connection, worker: int, workers: int) -> None:
    """A client worker process: ``setup`` / ``go`` / ``teardown`` / ``exit`` commands over a pipe."""
    asyncio.run(_serve(conn, worker, workers))


async def _serve(conn: Connection, worker: int, workers: int) -> None:
    share: Share | None = None
    while True:
        command: dict[str, Any] = await asyncio.to_thread(conn.recv)
        op, reply = command["op"], dict[str, Any]()
        try:
            if op == "setup":
                share = Share(command, worker, workers)
                reply = await share.setup()
            elif op == "go":
                assert share is not None
                gc.collect()
                gc.freeze()  # the connected clients are long-lived: keep them out of every collection
                reply = await share.run(command["t0"])
            elif op == "teardown":
                if share is not None:
                    await share.teardown()
                share = None
                gc.unfreeze()
            elif op == "exit":
                conn.send({})
                return
        except Exception as error:
            reply = {"error": f"worker {worker} {op}: {error!r}"}
        conn.send(reply)


class SchoolWorkers(Workers):
    main = staticmethod(worker_main)


# -- a layout: its servers, the run, the figures -------------------------------------------------------


def pluv_server(*extra: str) -> System:
    def command(port: int, data: Path) -> list[str]:
        store = list(extra) or ["--data-dir", str(data)]
        return [sys.executable, "-m", "pluv_widget", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--secret", SECRET, "--log-level", "warning", *store]

    return System("pluv-widget", "pluv", command)


@dataclass
class Layout:
    processes: int
    on_redis: bool  # one process: on Redis rather than SQLite (two always share Redis)
    servers: list[Server] = field(default_factory=list)
    redis: Redis | None = None

    @property
    def title(self) -> str:
        if self.processes == 1:
            return "1 process + Redis" if self.on_redis else "1 process, SQLite"
        return f"{self.processes} processes + Redis"

    def start(self, workdir: Path) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="layout-", dir=workdir))  # Redis's folder is fixed
        if self.processes == 1 and not self.on_redis:
            self.servers = [Server(pluv_server(), workdir)]
        else:
            self.redis = Redis(workdir)
            self.servers = [Server(pluv_server("--redis", self.redis.url), workdir) for _ in range(self.processes)]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.redis is not None:
            self.redis.stop()


class Bystanders:
    """The CPU of processes that are not this bench's (this process and its descendants): another
    job on the machine takes cores from the servers and clients and skews every figure."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.last = self.snapshot()

    def snapshot(self) -> dict[int, tuple[float, str]]:
        ours = {self.me.pid, *(child.pid for child in self.me.children(recursive=True))}
        seen: dict[int, tuple[float, str]] = {}
        for process in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
            info = process.info
            if info["pid"] in ours or info["cpu_times"] is None:
                continue
            command = " ".join(info["cmdline"] or [info["name"] or "?"])
            seen[info["pid"]] = (info["cpu_times"].user + info["cpu_times"].system, command[:80])
        return seen

    def since(self, seconds: float) -> tuple[float, list[tuple[str, float]]]:
        """Their CPU since the last call, in % of one core, and the three busiest of them."""
        current = self.snapshot()
        used = sorted(((command, 100 * (cpu - self.last.get(pid, (cpu, ""))[0]) / seconds)
                       for pid, (cpu, command) in current.items()), key=lambda item: -item[1])
        self.last = current
        return sum(pct for _, pct in used), [(command, round(pct, 1)) for command, pct in used[:3] if pct >= 1]

    def wait_calm(self, max_wait: float) -> float:
        """Wait until they used under 10 % of a core for 2 s (at most ``max_wait``); their last 2 s."""
        deadline, busy = time.monotonic() + max_wait, 0.0
        self.since(1.0)
        while time.monotonic() < deadline:
            time.sleep(2.0)
            busy, _ = self.since(2.0)
            if busy < 10:
                break
        return busy


def _mb(value: float) -> float:
    return value / 1_000_000


def run_layout(layout: Layout, workers: Workers, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    layout.start(workdir)
    try:
        return _measure(layout, workers, args)
    finally:
        try:
            workers.ask_all({"op": "teardown"}, 120)
        finally:
            layout.stop()


def _measure(layout: Layout, workers: Workers, args: argparse.Namespace) -> dict[str, Any]:
    servers, rooms, students = layout.servers, args.rooms, args.students
    connections = rooms * (students + 1)
    for server in servers:
        server.wait_quiet(max_wait=10)
    rss_idle = sum(server.rss() for server in servers)
    plan = {"op": "setup", "urls": [server.url for server in servers], "secret": SECRET, "rooms": rooms,
            "students": students, "duration": args.duration, "drain": args.drain, "hz": args.hz,
            "vote_spread": args.vote_spread, "seed": args.seed, "prefix": f"school{os.getpid()}-{layout.processes}"}
    started = now()
    connected = sum(reply["connected"] for reply in workers.ask_all(plan, 300))
    connect_s = now() - started
    for server in servers:
        server.wait_quiet(max_wait=20)
    rss_connected = sum(server.rss() for server in servers)
    bystanders = Bystanders()
    calm = bystanders.wait_calm(args.calm_wait) if args.calm_wait else None
    if calm is not None and calm >= 10:
        print(f"  the machine is not calm: other processes use {calm:.0f} % of a core", flush=True)

    t0 = now() + 1.0
    for index in range(workers.count):
        workers.send(index, {"op": "go", "t0": t0})
    time.sleep(max(0.0, t0 - now()))
    server_cpu0, client_cpu0, machine0 = [s.cpu() for s in servers], workers.cpu(), machine_busy()
    bystanders.since(1.0)
    others_total, others_top = 0.0, dict[str, float]()
    redis_cpu0 = layout.redis.cpu() if layout.redis else 0.0
    samples: list[dict[str, Any]] = []
    last, last_cpu = t0, server_cpu0
    while now() < t0 + args.duration - 0.05:
        time.sleep(max(0.0, min(SAMPLE_S, t0 + args.duration - now())))
        cpu, at = [s.cpu() for s in servers], now()
        busy = [round(100 * (b - a) / (at - last), 1) for a, b in zip(last_cpu, cpu, strict=True)]
        others, top = bystanders.since(at - last)
        others_total += others * (at - last)
        for command, pct in top:
            others_top[command] = others_top.get(command, 0.0) + pct * (at - last)
        samples.append({"t": round(at - t0, 1), "server_cpu": busy, "others": round(others, 1), "others_top": top})
        last, last_cpu = at, cpu
    wall = now() - t0
    server_cpu = [100 * (b - a) / wall for a, b in zip(server_cpu0, [s.cpu() for s in servers], strict=True)]
    client_cpu = [100 * (b - a) / wall for a, b in zip(client_cpu0, workers.cpu(), strict=True)]
    redis_cpu = 100 * (layout.redis.cpu() - redis_cpu0) / wall if layout.redis else None
    machine = 100 * (machine_busy() - machine0) / wall
    rss_end = sum(server.rss() for server in servers)
    replies = [workers.receive(index, args.duration + args.drain + 120) for index in range(workers.count)]

    size = students + 1  # every member of a room receives every other's presence and messages
    presence_by_minute = Timeline.merged([reply["presence"] for reply in replies])
    messages_by_minute = Timeline.merged([reply["messages"] for reply in replies])
    presence, messages = presence_by_minute.all, messages_by_minute.all
    presence_sent = [sum(reply["presence_sent"][room] for reply in replies) for room in range(rooms)]
    messages_sent = [sum(reply["messages_sent"][room] for reply in replies) for room in range(rooms)]
    presence_expected = sum(presence_sent) * (size - 1)
    messages_expected = sum(messages_sent) * (size - 1)
    lateness = Histogram()
    for reply in replies:
        lateness.merge(Histogram.from_bytes(reply["lateness"]))
    poll_latency = Histogram()
    polls_complete = 0
    for room in range(rooms):
        votes = [sent for reply in replies for sent in reply["votes"].get(room, [])]
        seen = next((reply["poll_complete"][room] for reply in replies if room in reply["poll_complete"]), None)
        if seen is not None and len(votes) == students:
            polls_complete += 1
            poll_latency.add(max(0.0, seen - max(votes)))
    errors = [error for reply in replies for error in reply["errors"]]
    error_count = sum(reply["error_count"] for reply in replies)
    alive = all(server.alive for server in servers)
    if not alive:
        errors.append("a server process died: " + " | ".join(s.log_tail() for s in servers if not s.alive))
        error_count += 1
    busiest = max((max(sample["server_cpu"]) for sample in samples), default=0.0)
    return {
        "layout": layout.title,
        "processes": layout.processes,
        "rooms": rooms,
        "students": students,
        "connections": connections,
        "connected": connected,
        "connect_s": connect_s,
        "duration_s": wall,
        "server_cpu_pct": sum(server_cpu),
        "server_cpu_pct_per_process": server_cpu,
        "server_cpu_pct_per_connection": sum(server_cpu) / connections,
        "server_cpu_busiest_5s_pct": busiest,
        "redis_cpu_pct": redis_cpu,
        "client_cpu_pct": client_cpu,
        "machine_busy_pct": machine,
        "other_cpu_pct": others_total / wall,
        "other_busiest": sorted(((c, round(t / wall, 1)) for c, t in others_top.items()), key=lambda i: -i[1])[:3],
        "calm_before_pct": calm,
        "rss_idle_mb": _mb(rss_idle),
        "rss_connected_mb": _mb(rss_connected),
        "rss_end_mb": _mb(rss_end),
        "rss_per_connection_kb": (rss_connected - rss_idle) / connections / 1000,
        "rss_per_connection_end_kb": (rss_end - rss_idle) / connections / 1000,
        "presence_sent": sum(presence_sent),
        "presence_sent_per_s": sum(presence_sent) / args.duration,
        "presence_deliveries_per_s": presence.total / args.duration,
        "server_us_per_delivery": sum(server_cpu) / 100 * wall / max(1, presence.total) * 1e6,
        "presence_p50_ms": presence.percentile(0.5),
        "presence_p99_ms": presence.percentile(0.99),
        "presence_p99_by_minute_ms": [h.percentile(0.99) for h in presence_by_minute.minutes],
        "presence_delivered_pct": 100 * presence.total / presence_expected if presence_expected else 0.0,
        "messages_sent": sum(messages_sent),
        "message_p50_ms": messages.percentile(0.5),
        "message_p99_ms": messages.percentile(0.99),
        "message_p99_by_minute_ms": [h.percentile(0.99) for h in messages_by_minute.minutes],
        "messages_delivered_pct": 100 * messages.total / messages_expected if messages_expected else 0.0,
        "polls_complete": polls_complete,
        "poll_p50_ms": poll_latency.percentile(0.5),
        "poll_p99_ms": poll_latency.percentile(0.99),
        "sender_lateness_p99_ms": lateness.percentile(0.99),
        "cpu_samples": samples,
        "errors": errors[:30],
        "error_count": error_count,
    }


# -- the report -----------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if value == float("inf"):
        return "∞"
    return f"{value:,.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{_num(a, digits)} / {_num(b, digits)}"


ROWS: list[tuple[str, Any]] = [
    ("connections (rooms × (1 teacher + students))", lambda f: f"{f['connected']:,} of {f['connections']:,} "
                                                                f"({f['rooms']} × {f['students'] + 1})"),
    ("all connected in", lambda f: f"{f['connect_s']:.1f} s"),
    ("server CPU, % of one core (per process)", lambda f: f"{f['server_cpu_pct']:.0f} % ("
     + " + ".join(f"{c:.0f}" for c in f["server_cpu_pct_per_process"]) + ")"),
    ("server CPU per connection, % of one core", lambda f: f"{f['server_cpu_pct_per_connection']:.3f} %"),
    ("busiest 5 s of one server process", lambda f: f"{f['server_cpu_busiest_5s_pct']:.0f} %"),
    ("Redis CPU", lambda f: "—" if f["redis_cpu_pct"] is None else f"{f['redis_cpu_pct']:.0f} %"),
    ("client processes' CPU (2 workers)", lambda f: " + ".join(f"{c:.0f}" for c in f["client_cpu_pct"]) + " %"),
    ("whole machine busy (of 200 %); other processes", lambda f: f"{f['machine_busy_pct']:.0f} %; "
                                                                  f"{f['other_cpu_pct']:.0f} %"),
    ("server RSS idle / connected / end", lambda f: f"{f['rss_idle_mb']:.0f} / {f['rss_connected_mb']:.0f} / "
                                                    f"{f['rss_end_mb']:.0f} MB"),
    ("RSS per connection, connected / end", lambda f: f"{f['rss_per_connection_kb']:.0f} / "
                                                      f"{f['rss_per_connection_end_kb']:.0f} kB"),
    ("presence updates sent / delivered per s", lambda f: f"{f['presence_sent_per_s']:,.0f} / "
                                                          f"{f['presence_deliveries_per_s']:,.0f}"),
    ("server CPU per presence delivery (all work included)", lambda f: f"{f['server_us_per_delivery']:.1f} µs"),
    ("presence p50 / p99", lambda f: _pair(f["presence_p50_ms"], f["presence_p99_ms"]) + " ms"),
    ("presence p99 per minute", lambda f: ", ".join(_num(v, 0) for v in f["presence_p99_by_minute_ms"]) + " ms"),
    ("presence delivered", lambda f: f"{f['presence_delivered_pct']:.2f} %"),
    ("messages sent; p50 / p99 to each member", lambda f: f"{f['messages_sent']:,}; "
     + _pair(f["message_p50_ms"], f["message_p99_ms"]) + " ms"),
    ("message p99 per minute", lambda f: ", ".join(_num(v, 0) for v in f["message_p99_by_minute_ms"]) + " ms"),
    ("messages delivered", lambda f: f"{f['messages_delivered_pct']:.2f} %"),
    ("polls complete; last vote → teacher p50 / p99", lambda f: f"{f['polls_complete']} of {f['rooms']}; "
     + _pair(f["poll_p50_ms"], f["poll_p99_ms"], 0) + " ms"),
    ("client timers late, p99", lambda f: _num(f["sender_lateness_p99_ms"]) + " ms"),
    ("errors", lambda f: str(f["error_count"])),
]


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| | " + " | ".join(f["layout"] for f in results) + " |", "|---" * (len(results) + 1) + "|"]
    for label, show in ROWS:
        lines.append(f"| {label} | " + " | ".join(show(f) for f in results) + " |")
    return "\n".join(lines)


def checkout() -> str:
    """The commit the servers ran, and whether ``pluv_widget/`` differed from it."""
    def git(*arguments: str) -> str:
        done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "an unknown commit"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--", "pluv_widget") else "")


def report(results: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    import pluv_widget

    version = getattr(pluv_widget, "__version__", "?")
    machine = (f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
               f"pluv-widget {version} at {checkout()}, {time.strftime('%Y-%m-%d %H:%M')}")
    head = (f"## A school on one server: {args.rooms} rooms × (1 teacher + {args.students} students), "
            f"{args.duration:.0f} s\n\n`{command}` — {machine}. Presence {args.hz:g} Hz per student, a message per "
            f"student per minute, one poll per room. Servers and the two client processes share the machine.\n")
    shared = [f"{f['layout']}: {f['other_cpu_pct']:.0f} % of a core"
              + (" (" + ", ".join(f"`{command}` {pct:.0f} %" for command, pct in f["other_busiest"]) + ")"
                 if f["other_busiest"] else "")
              for f in results if f["other_cpu_pct"] >= 10]
    if shared:
        head += "\n**The machine was shared**: other processes used " + "; ".join(shared) + ".\n"
    errors = [f"- {f['layout']}: {error}" for f in results for error in f["errors"][:10]]
    tail = "\nErrors (first ones):\n\n" + "\n".join(errors) + "\n" if errors else ""
    return head + "\n" + table(results) + "\n" + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=30)
    parser.add_argument("--students", type=int, default=35, help="students per room (plus one teacher)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the timed phase")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                        help="layouts to run: 1 (SQLite) and/or 2 (two processes + Redis)")
    parser.add_argument("--redis", action="store_true", help="run the one-process layout on Redis too")
    parser.add_argument("--hz", type=float, default=2.0, help="presence updates per student per second")
    parser.add_argument("--vote-spread", type=float, default=2.0, help="students vote within this many seconds")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds after the last send to count deliveries")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--calm-wait", type=float, default=60.0,
                        help="wait up to this many seconds for other processes to be quiet before each layout")
    parser.add_argument("--out", type=Path, default=None, help="folder for school.md / school.json")
    parser.add_argument("--smoke", action="store_true", help="2 rooms × 4 students × 6 s, both layouts; "
                                                              "exit 1 unless everything arrived without error")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rooms, args.students, args.minutes, args.processes = 2, 4, 6 / 60, [1, 2]
        args.drain, args.vote_spread, args.calm_wait = 1.5, 1.0, 0.0
    args.duration = args.minutes * 60
    out: Path = args.out or (OUT / "smoke" if args.smoke else OUT)
    command = "python -m bench.school " + shlex.join(argv if argv is not None else sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanup below on kill, too
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="pluv-school-bench-"))
    workers = SchoolWorkers(WORKERS)
    results: list[dict[str, Any]] = []
    try:
        for processes in args.processes:
            layout = Layout(processes, on_redis=args.redis)
            print(f"{layout.title}: {args.rooms} rooms × (1 + {args.students}), {args.duration:.0f} s ...", flush=True)
            figures = run_layout(layout, workers, args, workdir)
            results.append(figures)
            print(table([figures]), flush=True)
    finally:
        workers.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, args, command.strip())
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "school.md").write_text(text)
    (out / "school.json").write_text(json.dumps({"command": command, "results": results}, indent=1))
    failed = [f["layout"] for f in results
              if f["error_count"] or not f["presence_deliveries_per_s"] or not f["messages_delivered_pct"]
              or f["polls_complete"] < f["rooms"] or f["connected"] < f["connections"]]
    if failed:
        print(f"FAILED: {', '.join(failed)} (errors, or something was not delivered)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

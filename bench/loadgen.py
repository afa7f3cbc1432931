"""The load generator: the same workloads for every system, run by client worker processes.

The runner (``bench/run.py``) starts two worker processes (``worker_main``) beside the
server under test and drives them over a pipe, one command at a time:

* ``setup`` — build this worker's share of the workload's clients and connect them (each
  client joined and synced before the reply), plus whatever must exist before the clock
  starts (the writer's edits, the seeded 5 MB document);
* ``go`` — run the timed phase from ``t0``, a ``CLOCK_MONOTONIC`` instant shared by both
  processes (the clock is system-wide on Linux), and reply with raw observations: completion
  instants, latencies, counts. The runner turns those into figures;
* ``teardown`` — close every client.

Clients are spread over the workers by index (``i % workers``), so both processes carry the
same load. What a client sends and when is decided here, identically for every system; how it
is framed and decoded is the adapter's business (``bench/adapters``).

Workloads (see issue 6 and ``bench/README.md``):

* ``fanout`` — one room, client 0 writes ``edits`` one-append transactions as fast as its
  socket takes them, ``readers`` others apply them; done when every reader's array holds all.
* ``presence`` — one room, ``clients`` each send a small presence state ``hz`` times a second
  for ``duration`` s (staggered phases); with ``hz == 0`` each sends ``updates`` states at once
  (the burst of issue 2). Receivers record sender-to-receiver latency from the send instant
  carried in the state.
* ``join`` — worker 0's seeder holds a document of ``strings`` strings of ~100 bytes and syncs
  it to the room (a probe checks the room has it all); at ``t0`` worker 1 connects a new client
  and times until its document holds every string.
* ``idle`` — ``connections`` connected, joined and synced clients that then do nothing, all in
  one room or each in its own; the runner reads the server's RSS meanwhile.
* ``storm`` — issue 15's join storm: at ``t0`` every worker opens all of its share of
  ``clients`` connections to one room at once (no connection gate), each from one of
  ``addresses`` loopback source addresses (127.0.0.2, .3, ...: a class is many machines, and
  the server limits sockets per address). A client counts once it is in (joined and synced)
  *and*, for a protocol with a member list, knows every other client of the storm; a system
  without one (the Yjs servers, the relay) is timed until it accepted and synced them all.
  With ``announce`` every client enters with a presence state (a name and a colour), as a
  y-websocket provider sets its awareness on open, and counts once it holds everyone else's:
  the same complete view asked of every system that can give one.
"""

from __future__ import annotations

import asyncio
import gc
import time
import traceback
from array import array
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

import pycrdt

from .adapters import Client, adapter
from .adapters.relay import RelayClient

CONNECT_CONCURRENCY = 64


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


async def sleep_until(instant: float) -> None:
    delay = instant - now()
    if delay > 0:
        await asyncio.sleep(delay)


async def close_all(connections: Iterable[Any]) -> None:
    """Close every connection, a bounded number at a time; one that fails to close spoils nothing."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY * 4)

    async def one(connection: Any) -> None:
        async with gate:
            try:
                await connection.close()
            except Exception:
                pass

    await asyncio.gather(*(one(connection) for connection in connections))


class Workload:
    """One workload's share of clients in one worker process."""

    def __init__(self, params: dict[str, Any], worker: int, workers: int) -> None:
        self.params = params
        self.worker = worker
        self.workers = workers
        self.client_class = adapter(params["adapter"])
        self.base_url = params["url"]
        self.clients: list[Client] = []

    def mine(self, count: int) -> list[int]:
        """The client indices this worker runs."""
        return [i for i in range(count) if i % self.workers == self.worker]

    def client(self, room: str, **kwargs: Any) -> Client:
        client = self.client_class(self.base_url, room, compression=self.params["compression"], **kwargs)
        self.clients.append(client)
        return client

    async def connect_all(self, clients: Iterable[Client]) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(client: Client) -> None:
            async with gate:
                await client.connect()

        await asyncio.gather(*(one(client) for client in clients))

    async def setup(self) -> dict[str, Any]:
        return {}

    async def run(self, t0: float) -> dict[str, Any]:
        return {}

    async def teardown(self) -> None:
        await close_all(self.clients)
        self.clients.clear()

    def errors(self) -> list[str]:
        return [error for client in self.clients for error in client.errors][:10]

    # Sink defaults: workloads override what they listen to.
    def storage(self, client: Client) -> None:
        pass

    def presence(self, client: Client, sender: Any, state: dict[str, Any]) -> None:
        pass

    def members(self, client: Client) -> None:
        pass


class Fanout(Workload):
    """One writer, many readers, ``edits`` one-append transactions."""

    async def setup(self) -> dict[str, Any]:
        room, readers, self.edits = self.params["room"], self.params["readers"], self.params["edits"]
        self.writer: Client | None = None
        if self.worker == 0:
            self.writer = self.client(room)
            await self.writer.connect()
        self.readers = [self.client(room, sink=self) for i in self.mine(readers + 1) if i != 0]
        self.arrays = {reader: reader.doc.get("a", type=pycrdt.Array) for reader in self.readers}
        self.done: dict[Client, float] = {}
        self.all_done = asyncio.Event()
        await self.connect_all(self.readers)
        self.frames: list[str | bytes] = []
        if self.writer is not None:
            doc = self.writer.doc
            updates: list[bytes] = []
            subscription = doc.observe(lambda event: updates.append(event.update))
            edits = doc.get("a", type=pycrdt.Array)
            for i in range(self.edits):
                with doc.transaction():
                    edits.append(f"edit-{i:05d}")
            doc.unobserve(subscription)
            self.frames = [self.writer.update_frame(update) for update in updates]
        return {"readers": len(self.readers)}

    def storage(self, client: Client) -> None:
        if client not in self.done and len(self.arrays[client]) >= self.edits:
            self.done[client] = now()
            if len(self.done) == len(self.readers):
                self.all_done.set()

    async def run(self, t0: float) -> dict[str, Any]:
        await sleep_until(t0)
        sent = None
        if self.writer is not None:
            for frame in self.frames:
                await self.writer.send(frame)
            sent = now()
        try:
            await asyncio.wait_for(self.all_done.wait(), max(0.0, t0 + self.params["timeout"] - now()))
        except TimeoutError:
            pass
        return {
            "done": list(self.done.values()),
            "readers": len(self.readers),
            "delivered": sum(len(array) for array in self.arrays.values()),
            "writer_sent": sent,
            "errors": self.errors(),
        }


class Presence(Workload):
    """Presence fan-out, paced (``hz``) or as one burst (``hz == 0``)."""

    async def setup(self) -> dict[str, Any]:
        self.count, self.updates, self.hz = self.params["clients"], self.params["updates"], self.params["hz"]
        self.indices = self.mine(self.count)
        self.local = [self.client(self.params["room"], sink=self) for _ in self.indices]
        self.expected = (self.count - 1) * self.updates
        self.received = {client: 0 for client in self.local}
        # Senders whose last state reached each client: a client is done when it holds every
        # other's last state (a server may coalesce a sender's queued states to its latest).
        self.finals = {client: 0 for client in self.local}
        self.remaining = len(self.local)
        self.latencies = array("d")
        self.last = 0.0
        self.done_at: float | None = None
        self.all_done = asyncio.Event()
        self.lateness = array("d")
        await self.connect_all(self.local)
        return {"clients": len(self.local)}

    def presence(self, client: Client, sender: Any, state: dict[str, Any]) -> None:
        seq = state.get("s", -1)
        if seq < 0:
            return
        arrived = now()
        self.latencies.append(arrived - state["t"])
        self.last = arrived
        self.received[client] += 1
        if seq != self.updates - 1:
            return
        finals = self.finals[client] = self.finals[client] + 1
        if finals == self.count - 1:
            self.remaining -= 1
            if self.remaining == 0:
                self.done_at = arrived
                self.all_done.set()

    async def _send(self, client: Client, index: int, t0: float) -> None:
        period = 1.0 / self.hz if self.hz else 0.0
        offset = period * index / self.count
        for seq in range(self.updates):
            if period:
                scheduled = t0 + offset + seq * period
                await sleep_until(scheduled)
                self.lateness.append(now() - scheduled)
            await client.send(client.presence_frame({"t": now(), "s": seq, "c": [index, seq]}))

    async def run(self, t0: float) -> dict[str, Any]:
        await sleep_until(t0)
        senders = [asyncio.create_task(self._send(c, i, t0)) for c, i in zip(self.local, self.indices, strict=True)]
        duration = self.updates / self.hz if self.hz else 0.0
        deadline = t0 + duration + self.params["drain"]
        try:
            await asyncio.wait_for(self.all_done.wait(), max(0.0, deadline - now()))
        except TimeoutError:
            pass
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        return {
            "latencies": self.latencies.tobytes(),
            "delivered": sum(self.received.values()),
            "expected": self.expected * len(self.local),
            "done": self.done_at,
            "last": self.last,
            "lateness_max": max(self.lateness, default=0.0),
            "errors": self.errors(),
        }


_seed_docs: dict[int, pycrdt.Doc[Any]] = {}


def seed_doc(strings: int) -> pycrdt.Doc[Any]:
    """A document of ``strings`` strings of 100 bytes, built once per process.

    One transaction per append on purpose: pycrdt (0.14) builds a large array in a single
    transaction with memory quadratic in its length (50,000 items exhaust 24 GB).
    """
    if strings not in _seed_docs:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        items = doc.get("a", type=pycrdt.Array)
        for i in range(strings):
            items.append(f"s{i:07d}-" + "x" * 91)
        _seed_docs[strings] = doc
    return _seed_docs[strings]


class Join(Workload):
    """A new client receives a large document."""

    async def setup(self) -> dict[str, Any]:
        self.strings = self.params["strings"]
        self.room = self.params["room"]
        self.waiting: dict[Client, asyncio.Event] = {}
        if self.worker == 0:
            seeder = self.client(self.room, doc=seed_doc(self.strings))
            if isinstance(seeder, RelayClient):
                seeder.serves_doc = True
            await seeder.connect()
            return {"bytes": len(seeder.doc.get_update())}
        probe = await self._join()
        await probe.close()
        return {}

    async def _join(self) -> Client:
        client = self.client(self.room, sink=self)
        if isinstance(client, RelayClient):
            client.wants_doc = True
        self.waiting[client] = asyncio.Event()
        await client.connect()
        await asyncio.wait_for(self.waiting[client].wait(), self.params["timeout"])
        return client

    def storage(self, client: Client) -> None:
        if len(client.doc.get("a", type=pycrdt.Array)) >= self.strings:
            self.waiting[client].set()

    async def run(self, t0: float) -> dict[str, Any]:
        if self.worker == 0:
            return {}
        await sleep_until(t0)
        start = now()
        await self._join()
        return {"elapsed": now() - start, "errors": self.errors()}


class Idle(Workload):
    """Idle connections for the memory workload: joined, synced, then silent."""

    async def setup(self) -> dict[str, Any]:
        room, count = self.params["room"], self.params["connections"]
        one_room = self.params["one_room"]
        clients = [self.client(room if one_room else f"{room}-{i}") for i in self.mine(count)]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(client: Client) -> None:
            async with gate:
                await client.connect()
                client.quiet = True  # later joiners' announcements are read, not decoded

        await asyncio.gather(*(one(client) for client in clients))
        return {"connected": len(clients)}


class Storm(Workload):
    """A thousand clients enter one room at once (issue 15)."""

    async def setup(self) -> dict[str, Any]:
        self.count, addresses = self.params["clients"], self.params["addresses"]
        announce = self.params.get("announce", False)
        self.storm = [self.client(self.params["room"], sink=self, source=f"127.0.0.{2 + i % addresses}",
                                  announce={"name": f"Student {i}", "color": "#1e88e5"} if announce else None)
                      for i in self.mine(self.count)]
        self.entered: set[Client] = set()
        self.connected: list[float] = []
        self.done: dict[Client, float] = {}
        self.all_done = asyncio.Event()
        return {"clients": len(self.storm)}

    def members(self, client: Client) -> None:
        if client in self.entered:
            self._check(client)

    def _check(self, client: Client) -> None:
        if client in self.done or (client.others is not None and len(client.others) < self.count - 1):
            return
        self.done[client] = now()
        if len(self.done) == len(self.storm):
            self.all_done.set()

    async def _enter(self, client: Client, deadline: float) -> None:
        await client.connect(timeout=max(1.0, deadline - now()))
        self.connected.append(now())
        self.entered.add(client)
        self._check(client)

    async def run(self, t0: float) -> dict[str, Any]:
        await sleep_until(t0)
        deadline = t0 + self.params["timeout"]
        entering = await asyncio.gather(*(self._enter(c, deadline) for c in self.storm), return_exceptions=True)
        failed = [repr(e) for e in entering if isinstance(e, BaseException)]
        if not failed:
            try:
                await asyncio.wait_for(self.all_done.wait(), max(0.0, deadline - now()))
            except TimeoutError:
                pass
        views = [len(c.others) for c in self.storm if c.others is not None]
        return {
            "clients": len(self.storm),
            "connected": self.connected,
            "done": list(self.done.values()),
            "smallest_view": min(views, default=None),
            "errors": (failed[:3] + self.errors())[:10],
        }


WORKLOADS: dict[str, type[Workload]] = {
    "fanout": Fanout, "presence": Presence, "join": Join, "idle": Idle, "storm": Storm,
}


def worker_main(conn: Connection, worker: int, workers: int) -> None:
    """Entry point of a client worker process: serve the runner's commands until ``exit``."""
    asyncio.run(_serve(conn, worker, workers))


async def _serve(conn: Connection, worker: int, workers: int) -> None:
    workload: Workload | None = None
    while True:
        command: dict[str, Any] = await asyncio.to_thread(conn.recv)
        op = command["op"]
        reply: dict[str, Any] = {}
        try:
            if op == "setup":
                workload = WORKLOADS[command["workload"]](command, worker, workers)
                reply = await workload.setup()
            elif op == "go":
                assert workload is not None
                gc.collect()
                reply = await workload.run(command["t0"])
            elif op == "teardown":
                if workload is not None:
                    await workload.teardown()
                workload = None
            elif op == "exit":
                conn.send({})
                return
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            reply = {"error": f"worker {worker} {op}: {traceback.format_exc(limit=6)}"}
        conn.send(reply)

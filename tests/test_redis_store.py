"""The Redis adapters against a real redis-server: the store (order, exactly-once claims,
compaction that keeps other processes' updates, outages) and the bus (members in the first
snapshot, dead processes reaped). Separate adapter instances have separate connections: to
Redis they are separate processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pycrdt
import pytest
from helpers import DEADLINE_S
from redis_helpers import RedisServer

from pluv_widget.core.envelopes import (
    Envelope,
    EventSent,
    MemberJoined,
    MemberLeft,
    PresencePatched,
    StorageUpdated,
)
from pluv_widget.protocol import MemberInfo
from pluv_widget.server.bus.redis import RedisPubSub
from pluv_widget.server.storage.base import StorageUnavailableError
from pluv_widget.server.storage.redis import RedisPersistence

_rooms = itertools.count()


def room_name(label: str) -> str:
    """A room of this test alone: tests share the session's Redis."""
    return f"{label}-{time.monotonic_ns()}-{next(_rooms)}"


def array_update(doc: pycrdt.Doc[Any], *items: str) -> bytes:
    """Append ``items`` to ``doc``'s array and return that edit as an update."""
    before = doc.get_state()
    doc.get("items", type=pycrdt.Array).extend(list(items))
    update: bytes = doc.get_update(before)
    return update


def items_of(updates: list[bytes]) -> list[str]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return [str(item) for item in doc.get("items", type=pycrdt.Array)]


async def poll(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """For adapter states that have no event to await (they change on a background retry)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Callable[[], RedisPersistence]]:
    made: list[RedisPersistence] = []

    def make(url: str | None = None) -> RedisPersistence:
        store = RedisPersistence(url or redis_server.url)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def test_appends_from_many_rooms_keep_each_rooms_order(stores: Callable[[], RedisPersistence]) -> None:
    store = stores()
    rooms = [room_name("order") for _ in range(5)]
    docs: dict[str, pycrdt.Doc[Any]] = {room: pycrdt.Doc() for room in rooms}
    # All appends in flight at once: they are group-committed, and each room keeps its order.
    appends = [store.append(room, array_update(docs[room], f"{room}:{i}")) for i in range(40) for room in rooms]
    await asyncio.gather(*appends)
    for room in rooms:
        assert items_of(await store.load(room)) == [f"{room}:{i}" for i in range(40)]
    assert await store.load(room_name("empty")) == []
    assert store.status() == "ok"


async def test_initial_storage_is_claimed_exactly_once_across_processes(
    stores: Callable[[], RedisPersistence],
) -> None:
    room = room_name("claim")
    contenders = [stores() for _ in range(10)]
    offers = [array_update(pycrdt.Doc(), f"initial from {i}") for i in range(10)]
    results = await asyncio.gather(
        *(store.claim_initial(room, offer) for store, offer in zip(contenders, offers, strict=True))
    )
    assert sum(results) == 1
    winner = results.index(True)
    for store in contenders:
        assert items_of(await store.load(room)) == [f"initial from {winner}"]
    assert not await contenders[0].claim_initial(room, offers[0])


async def test_compaction_keeps_updates_another_process_appended(stores: Callable[[], RedisPersistence]) -> None:
    room = room_name("compact")
    mine, theirs = stores(), stores()
    my_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    their_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for i in range(3):
        await mine.append(room, array_update(my_doc, f"mine {i}"))
    # Another process appends in the middle of my history; I never saw its update.
    await theirs.append(room, array_update(their_doc, "theirs"))
    for i in range(3, 5):
        await mine.append(room, array_update(my_doc, f"mine {i}"))
    # "Replace my first 5 stored updates" would drop theirs (it is 4th): the store must not.
    await mine.compact(room, my_doc.get_update(), 5)
    stored = await mine.load(room)
    assert len(stored) == 1
    assert sorted(items_of(stored)) == sorted([f"mine {i}" for i in range(5)] + ["theirs"])
    # Updates appended after a compaction stay behind the snapshot.
    await theirs.append(room, array_update(their_doc, "after"))
    assert "after" in items_of(await theirs.load(room))


async def test_an_outage_keeps_updates_in_memory_and_writes_them_back(own_redis: RedisServer) -> None:
    store = RedisPersistence(own_redis.url)
    try:
        room = room_name("outage")
        await store.append(room, array_update(pycrdt.Doc(), "before"))
        own_redis.stop()
        # Independent edits (each its own client), so each can be read without "before".
        await store.append(room, array_update(pycrdt.Doc(), "during 1"))  # acknowledged from memory
        await store.append(room, array_update(pycrdt.Doc(), "during 2"))
        assert store.status() == "unavailable"
        assert store.unsaved_updates == 2
        with pytest.raises(StorageUnavailableError):
            await store.claim_initial(room_name("other"), array_update(pycrdt.Doc(), "x"))
        own_redis.start()  # back, and empty: "before" died with it
        await poll(lambda: store.status() == "ok")
        assert sorted(items_of(await store.load(room))) == ["during 1", "during 2"]
        # The room has storage again: no initial storage can be claimed for it.
        assert not await store.claim_initial(room, array_update(pycrdt.Doc(), "initial"))
    finally:
        await store.close()


async def test_loading_while_redis_is_down_raises(own_redis: RedisServer) -> None:
    store = RedisPersistence(own_redis.url)
    try:
        own_redis.stop()
        with pytest.raises(StorageUnavailableError):
            await store.load(room_name("down"))
        assert store.status() == "unavailable"
    finally:
        await store.close()


# -- the bus ---------------------------------------------------------------------------------


class Inbox:
    """A subscriber handler that records envelopes and lets a test await a condition on them."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self._changed = asyncio.Event()

    def __call__(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        self._changed.set()

    def kinds(self) -> list[str]:
        return [envelope.kind for envelope in self.envelopes]

    async def until(self, condition: Callable[[list[Envelope]], bool], timeout: float = DEADLINE_S) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self.envelopes):
                await self._changed.wait()
                self._changed.clear()


def members_seen(envelopes: list[Envelope]) -> dict[str, dict[str, Any]]:
    """Who is in the room, with their presence, after these envelopes."""
    members: dict[str, dict[str, Any]] = {}
    for envelope in envelopes:
        if isinstance(envelope, MemberJoined):
            members[envelope.member.connection_id] = dict(envelope.member.presence)
        elif isinstance(envelope, MemberLeft):
            members.pop(envelope.connection_id, None)
        elif isinstance(envelope, PresencePatched) and envelope.connection_id in members:
            members[envelope.connection_id].update(envelope.patch)
    return members


def member(connection_id: str, **presence: Any) -> MemberInfo:
    return MemberInfo(connection_id, {"id": connection_id}, presence)


async def test_a_subscriber_learns_every_member_first_then_hears_changes(redis_server: RedisServer) -> None:
    room = room_name("members")
    a, b = RedisPubSub(redis_server.url), RedisPubSub(redis_server.url)
    try:
        await a.subscribe(room, "node-a", Inbox())
        await a.publish(room, MemberJoined(member("c1", x=1), "node-a"))
        await a.publish(room, PresencePatched("c1", {"x": 2}, "node-a"))
        await a.publish(room, MemberJoined(member("c2"), "node-a"))
        await a.publish(room, MemberLeft("c2", "node-a"))
        inbox = Inbox()
        await b.subscribe(room, "node-b", inbox)
        # Before subscribe returned: c1 (a publisher waits for a join to be written). Presence
        # patches and leaves still on their way arrive after, so the view converges.
        first = inbox.envelopes[0]
        assert isinstance(first, MemberJoined) and first.member.connection_id == "c1" and first.node == "node-a"
        await inbox.until(lambda seen: members_seen(seen) == {"c1": {"x": 2}})
        await a.publish(room, EventSent("hi", 1, "c1", node="node-a"))
        await a.publish(room, StorageUpdated(b"\x01\x02", "node-a"))
        await inbox.until(lambda seen: seen[-1].kind == "update")
        assert inbox.kinds()[-2:] == ["event", "update"]
        assert inbox.envelopes[-1] == StorageUpdated(b"\x01\x02", "node-a")  # bytes survive the trip
        assert a.status() == b.status() == "ok"
    finally:
        await a.close()
        await b.close()


async def test_a_dead_processs_members_leave_within_the_heartbeat_timeout(redis_server: RedisServer) -> None:
    room = room_name("reap")
    dying = RedisPubSub(redis_server.url, heartbeat_s=0.2, node_ttl_s=1.0)
    watcher = RedisPubSub(redis_server.url, heartbeat_s=0.2, node_ttl_s=1.0)
    inbox = Inbox()
    try:
        await dying.subscribe(room, "dying", Inbox())
        await dying.publish(room, MemberJoined(member("ghost"), "dying"))
        await watcher.subscribe(room, "watcher", inbox)
        assert inbox.kinds() == ["join"]
        # Silence the dying process as kill -9 would: no goodbye, heartbeats just stop.
        assert dying._supervisor is not None
        dying._supervisor.cancel()
        started = time.monotonic()
        await inbox.until(lambda seen: "leave" in [e.kind for e in seen])
        assert time.monotonic() - started < 1.0 + 3 * 0.2 + 2.0  # ttl + a few heartbeats + slack
        assert inbox.envelopes[1] == MemberLeft("ghost", "dying")
        await inbox.until(lambda seen: seen[-1].kind == "resync")  # its rooms resync storage
    finally:
        await watcher.close()
        dying._closed = True  # its connections only; its keys are gone already
        await dying.close()


async def test_a_process_reaped_while_alive_announces_its_members_again(redis_server: RedisServer) -> None:
    room = room_name("comeback")
    stalled = RedisPubSub(redis_server.url, heartbeat_s=0.2, node_ttl_s=1.0)
    watcher = RedisPubSub(redis_server.url, heartbeat_s=0.2, node_ttl_s=1.0)
    inbox = Inbox()
    try:
        await stalled.subscribe(room, "stalled", Inbox())
        await stalled.publish(room, MemberJoined(member("c1", x=1), "stalled"))
        await watcher.subscribe(room, "watcher", inbox)
        # Its heartbeats stop (a blocked event loop, a network partition) past the timeout...
        assert stalled._supervisor is not None
        stalled._supervisor.cancel()
        await inbox.until(lambda seen: members_seen(seen) == {})
        # ...then resume: it finds Redis forgot it, and announces its members again.
        stalled._supervisor = None
        stalled._start()
        await inbox.until(lambda seen: members_seen(seen) == {"c1": {"x": 1}})
    finally:
        await watcher.close()
        await stalled.close()

"""Fan-out between server processes over Redis pub/sub, with every room's members kept in Redis.

*Channels.* Each room has a channel; a process publishes every input its rooms accepted (the
core's ``Mirror`` envelopes: join, leave, presence, event, update) and feeds what the others
publish into its own rooms. Publishes from all rooms are pipelined together while one pipeline
is in flight, and keep their order.

*Members.* Pub/sub alone forgets: a process opening a room would not know who is already in it
elsewhere. So each join, presence patch and leave also updates the room's member hash in the
same pipeline, before the envelope is published. :meth:`RedisPubSub.subscribe` subscribes to
the channel first, reads the hash, hands the members to the room as ``join`` envelopes, then
replays what arrived meanwhile: a client joining on any process sees everyone on every process
in its first snapshot, and misses nothing published after.

*Failover.* Each process renews a heartbeat every ``HEARTBEAT_S`` (2 s). A process whose
heartbeat is older than ``NODE_TTL_S`` (10 s) is dead — killed, or cut off from Redis: the first
live process to notice removes its members in one Lua script, publishing a ``leave`` for each
(so everyone's lists lose them within 10–12 s of the death) and a ``resync`` for its rooms.

*Outages.* When Redis cannot be reached, publishing stops (the rooms of this process keep
serving their own connections) and the bus retries every ``RETRY_S``. When it answers again,
the bus re-subscribes, re-announces this process's members with their current presence,
reconciles the members it knows with the hash (leaves and joins for what changed meanwhile) and
gives every room a ``resync`` envelope, so each re-seeds Redis from its document and merges
what it missed. A changed ``instance`` token means Redis lost its data (restarted empty): the
same recovery rebuilds it. See ``docs/scaling.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.asyncio.client import Pipeline
from redis.asyncio.client import PubSub as RedisListener

from ...core.envelopes import (
    Envelope,
    MemberJoined,
    MemberLeft,
    ResyncRequested,
    decode_envelope,
    encode_envelope,
    own_prefix,
)
from ...core.membership import Member, Membership
from .. import _redis
from .._redis import (
    HEARTBEAT_S,
    NODE_TTL_S,
    RETRY_S,
    SETTLE_S,
    UNREACHABLE,
    Keys,
    check_url,
    connect,
    member_entry,
    new_token,
    read_member_entry,
)
from .base import Handler

log = logging.getLogger("pluv_widget.server.redis")

Command = Callable[[Pipeline], object]
#: Seconds to wait for Redis to confirm a SUBSCRIBE.
CONFIRM_TIMEOUT_S = 10.0
#: Publishers wait for Redis when more envelopes than this are queued.
MAX_QUEUED = 1000


def _publish(channel: str, payload: bytes) -> Command:
    return lambda pipe: pipe.publish(channel, payload)


@dataclass(eq=False)
class _Subscription:
    """One node's subscription to one room."""

    room: str
    node: str
    handler: Handler
    own: bytes  # how this node's own envelopes start: skipped undecoded
    live: bool = False  # False while catching up: envelopes wait in ``backlog``
    backlog: list[Envelope] = field(default_factory=list)
    # The other nodes' members as this subscriber was told: what a recovery reconciles.
    remote: Membership = field(default_factory=Membership)


class RedisPubSub:
    """Rooms shared by every server process on the Redis at ``url``, keys under ``prefix``.

    The bus connects on first use (a room opening, or ``/health``) and keeps itself connected.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pluv",
        heartbeat_s: float = HEARTBEAT_S,
        node_ttl_s: float = NODE_TTL_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.url = check_url(url)
        self.keys = Keys(prefix)
        self.heartbeat_s = heartbeat_s
        self.node_ttl_s = node_ttl_s
        self.settle_s = settle_s
        self._client: redis.asyncio.Redis | None = None
        self._heartbeat: Any = None
        self._subs: dict[str, dict[str, _Subscription]] = {}
        # This process's members with their current presence: room -> node -> members.
        self._local: dict[str, dict[str, Membership]] = {}
        self._nodes: set[str] = set()
        self._registered: set[str] = set()  # nodes Redis has known: unknown again = lost
        self._instance: str | None = None
        self._listener: RedisListener | None = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._outbox: list[tuple[list[Command], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()  # the first connection attempt is over
        self._broken = asyncio.Event()
        self._lock = asyncio.Lock()  # one catch-up at a time: a reconnect, or a room subscribing
        self._state = "connecting"
        self._publishing = False
        self._was_up = False
        self._down_since: float | None = None
        self._last_heard = 0.0
        self._closed = False

    @property
    def client(self) -> redis.asyncio.Redis:
        # Built on first use, inside the event loop that will use it.
        if self._client is None:
            self._client = connect(self.url)
            self._heartbeat = self._client.register_script(_redis.HEARTBEAT)
        return self._client

    def status(self) -> str:
        """``connecting``, ``ok``, ``unavailable`` (Redis unreachable: this process serves its
        own connections only) or ``recovering`` (re-announcing members, re-seeding rooms)."""
        self._start()
        return self._state

    # -- the interface ----------------------------------------------------------------------

    async def publish(self, room: str, envelope: Envelope) -> None:
        """Queue the envelope (and the member change it implies) behind earlier ones.

        A ``join`` returns only once Redis has it, so a joiner's welcome can wait for it; other
        envelopes return at once unless ``MAX_QUEUED`` are waiting (then the publisher waits:
        backpressure, not an unbounded queue). During an outage the envelope is dropped: the
        recovery re-announces the members and re-seeds the storage, which is all a dropped
        envelope would have changed."""
        commands = self._track_local(room, envelope)
        self._start()
        if not self._publishing:
            return
        payload, channel = encode_envelope(envelope), self.keys.channel(room)
        commands.append(_publish(channel, payload))
        written = self._queue(commands)
        if isinstance(envelope, MemberJoined) or len(self._outbox) > MAX_QUEUED:
            await written

    async def subscribe(self, room: str, node: str, handler: Handler) -> None:
        self._start()
        await self._attempted.wait()
        async with self._lock:
            sub = _Subscription(room, node, handler, own_prefix(node))
            first = room not in self._subs
            self._subs.setdefault(room, {})[node] = sub
            new_node = node not in self._nodes
            self._nodes.add(node)
            if self._state != "ok":
                return  # the next (re)connection catches this room up
            try:
                if new_node:
                    await self._beat()
                if first:
                    await self._subscribe_channels([self.keys.channel(room)])
                await self._catch_up(sub)
            except UNREACHABLE as error:
                self._break(error)

    async def unsubscribe(self, room: str, node: str) -> None:
        subs = self._subs.get(room)
        if subs is None or subs.pop(node, None) is None or subs:
            return
        del self._subs[room]
        if self._listener is not None and self._state == "ok":
            try:
                await self._listener.unsubscribe(self.keys.channel(room))
            except UNREACHABLE as error:
                self._break(error)

    async def close(self) -> None:
        self._closed = True
        for task in (self._supervisor, self._reader):
            if task is not None:
                task.cancel()
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._client is not None and self._state == "ok":
            # A clean exit: nobody has to wait for the heartbeat to expire.
            pipe = self.client.pipeline(transaction=False)
            for node in self._nodes:
                pipe.zrem(self.keys.nodes, node)
                pipe.delete(self.keys.node_rooms(node))
            for room, nodes in self._local.items():
                for members in nodes.values():
                    for member in members:
                        pipe.hdel(self.keys.members(room), member.connection_id)
            try:
                await asyncio.wait_for(pipe.execute(), 2.0)
            except UNREACHABLE:  # asyncio's TimeoutError is an OSError too
                pass
        if self._listener is not None:
            await self._listener.aclose()
        if self._client is not None:
            await self._client.aclose()

    # -- this process's members -------------------------------------------------------------

    def _track_local(self, room: str, envelope: Envelope) -> list[Command]:
        """Keep this process's members current (what a recovery re-announces) and return the
        member-hash commands that must precede the envelope."""
        connection_id = envelope.connection_id
        if connection_id is None:
            return []
        nodes = self._local.setdefault(room, {})
        members = nodes.setdefault(envelope.node, Membership())
        known = connection_id in members
        envelope.track(members)
        member = members.get(connection_id)
        commands: list[Command] = []
        if member is not None:
            commands = self._register(room, envelope.node, member)
        elif known:
            key = self.keys.members(room)
            commands = [lambda pipe: pipe.hdel(key, connection_id)]
            if not members:
                rooms = self.keys.node_rooms(envelope.node)
                commands.append(lambda pipe: pipe.srem(rooms, room))
        if not members:
            del nodes[envelope.node]
        if not nodes:
            del self._local[room]
        return commands

    def _register(self, room: str, node: str, member: Member) -> list[Command]:
        """Write ``member`` to the room's hash, and the room to the node's set (for reaping)."""
        key, rooms = self.keys.members(room), self.keys.node_rooms(node)
        entry = member_entry(node, member.info())
        connection_id = member.connection_id
        return [lambda pipe: pipe.hset(key, connection_id, entry), lambda pipe: pipe.sadd(rooms, room)]

    # -- writing ----------------------------------------------------------------------------

    def _queue(self, commands: list[Command]) -> asyncio.Future[None]:
        """Queue commands for the writer; the future is done once Redis answered (or failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((commands, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return future

    async def _write(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                if self._publishing:
                    pipe = self.client.pipeline(transaction=False)
                    for commands, _ in batch:
                        for command in commands:
                            command(pipe)
                    try:
                        await pipe.execute(raise_on_error=False)
                    except UNREACHABLE as error:
                        self._break(error)
                    except Exception:  # never leave a publisher waiting
                        log.exception("publishing to Redis failed")
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._writer = None

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, listener: RedisListener) -> None:
        try:
            while True:
                message = await listener.get_message(timeout=1.0)
                if message is None:
                    continue
                self._last_heard = time.monotonic()
                kind = message["type"]
                if kind == "message":
                    await self._dispatch(message["channel"].decode(), message["data"])
                elif kind == "subscribe":
                    confirmation = self._confirmations.pop(message["channel"].decode(), None)
                    if confirmation is not None and not confirmation.done():
                        confirmation.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the connection failed (or was closed under us)
            for confirmation in self._confirmations.values():
                if not confirmation.done():
                    confirmation.set_exception(ConnectionError(f"the Redis subscriber failed: {error}"))
            self._confirmations.clear()
            self._break(error)

    async def _dispatch(self, channel: str, data: bytes) -> None:
        room = channel.removeprefix(self.keys.channel(""))
        subs = self._subs.get(room)
        if not subs or all(data.startswith(sub.own) for sub in subs.values()):
            return  # nobody here but its sender
        try:
            envelope = decode_envelope(data)
        except ValueError:
            log.warning("room %s: ignored an undecodable envelope", room)
            return
        for sub in list(subs.values()):
            if envelope.node == sub.node:
                continue  # our own, already applied here
            if sub.live:
                await self._deliver(sub, envelope)
            else:
                sub.backlog.append(envelope)

    async def _deliver(self, sub: _Subscription, envelope: Envelope) -> None:
        envelope.track(sub.remote)
        try:
            result = sub.handler(envelope)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("room %s: applying a %s envelope failed", sub.room, envelope.kind)

    async def _catch_up(self, sub: _Subscription, *, resync: bool = False) -> None:
        """Bring ``sub`` up to the member hash, replay what arrived meanwhile, go live."""
        entries: dict[bytes | str, bytes | str] = await self.client.hgetall(self.keys.members(sub.room))
        current: dict[str, MemberJoined] = {}
        for raw in entries.values():
            try:
                node, info = read_member_entry(raw)
            except ValueError:
                continue
            if node != sub.node:
                current[info.connection_id] = MemberJoined(info, node)
        for member in sub.remote:
            if member.connection_id not in current:
                await self._deliver(sub, MemberLeft(member.connection_id))
        for joined in current.values():
            known = sub.remote.get(joined.connection_id)
            if known is None or known.info() != joined.member:
                await self._deliver(sub, joined)
        while sub.backlog:
            await self._deliver(sub, sub.backlog.pop(0))
        sub.live = True
        if resync:
            await self._deliver(sub, ResyncRequested(reseed=True))

    async def _subscribe_channels(self, channels: list[str]) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        waiting = []
        for channel in channels:
            self._confirmations[channel] = confirmation = loop.create_future()
            waiting.append(confirmation)
        await self._listener.subscribe(*channels)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(self._listener))
        await asyncio.wait_for(asyncio.gather(*waiting), CONFIRM_TIMEOUT_S)

    # -- connection life cycle --------------------------------------------------------------

    def _start(self) -> None:
        if self._supervisor is None and not self._closed:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self._supervisor = asyncio.create_task(self._supervise(), name="pluv-redis-bus")

    async def _supervise(self) -> None:
        while not self._closed:
            try:
                await self._connect()
                self._attempted.set()
                await self._watch()
            except UNREACHABLE as error:
                self._attempted.set()
                self._break(error)
                await asyncio.sleep(RETRY_S)
            except Exception as error:
                log.exception("Redis bus failed; reconnecting")
                self._attempted.set()
                self._break(error)
                await asyncio.sleep(RETRY_S)

    async def _watch(self) -> None:
        """Heartbeat until the connection breaks or Redis forgets this process."""
        while True:
            try:
                await asyncio.wait_for(self._broken.wait(), self.heartbeat_s)
                return
            except TimeoutError:
                pass
            if await self._beat():
                self._state = "recovering"
                return
            if time.monotonic() - self._last_heard > 3 * self.heartbeat_s:
                self._break(ConnectionError("the Redis subscriber connection went silent"))
                return
            assert self._listener is not None
            await self._listener.ping()  # its pong proves the subscriber connection alive

    def _break(self, error: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "Redis bus unreachable (%s): this process keeps serving its own connections; "
                "other processes are out of reach until Redis is back",
                error or type(error).__name__,
            )
        self._publishing = False
        self._state = "unavailable"
        self._broken.set()

    async def _beat(self) -> bool:
        """Renew this process's heartbeats (and reap dead processes); True if Redis lost track
        of this process: restarted empty, or it reaped us after a long silence."""
        lost = False
        instance = self._instance
        self.client  # noqa: B018 - registers the script
        for node in sorted(self._nodes) or [""]:
            result = await self._heartbeat(
                args=[self.keys.prefix, node, int(self.node_ttl_s * 1000), new_token(), int(self.settle_s * 1000)]
            )
            instance = result[0].decode()
            if node and not result[1] and node in self._registered:
                lost = True
            if node:
                self._registered.add(node)
            if result[2]:
                log.warning(
                    "server processes %s stopped heartbeating: their members left their rooms",
                    ", ".join(dead.decode() for dead in result[2]),
                )
        if self._instance is not None and instance != self._instance:
            log.warning("Redis lost its data (restarted empty?): re-seeding it from the rooms this process holds")
            lost = True
        self._instance = instance
        return lost

    async def _connect(self) -> None:
        """(Re)connect: subscribe to every room, re-announce this process's members, catch
        every room up with the member hash and, after an outage, resync its storage."""
        async with self._lock:
            recovering = self._was_up
            if self._state != "connecting":
                self._state = "recovering"
            self._broken = asyncio.Event()
            self._publishing = False
            if self._reader is not None:
                self._reader.cancel()
                self._reader = None
            if self._listener is not None:
                listener, self._listener = self._listener, None
                await listener.aclose()
            await self._beat()
            for subs in self._subs.values():
                for sub in subs.values():
                    sub.live = False
                    sub.backlog.clear()
            self._listener = self.client.pubsub()
            self._last_heard = time.monotonic()
            await self._subscribe_channels([self.keys.control, *map(self.keys.channel, self._subs)])
            self._publishing = True
            announce: list[Command] = []
            for room, nodes in self._local.items():
                channel = self.keys.channel(room)
                for node, members in nodes.items():
                    for member in members:
                        payload = encode_envelope(MemberJoined(member.info(), node))
                        announce += self._register(room, node, member)
                        announce.append(_publish(channel, payload))
            if announce:
                await self._queue(announce)
            for sub in [sub for subs in list(self._subs.values()) for sub in list(subs.values())]:
                await self._catch_up(sub, resync=recovering)
            if self._broken.is_set():
                raise ConnectionError("Redis failed again while catching up")
            self._state = "ok"
            self._was_up = True
            if self._down_since is not None:
                log.warning(
                    "Redis bus is back after %.1f s: %d rooms caught up",
                    time.monotonic() - self._down_since,
                    len(self._subs),
                )
                self._down_since = None

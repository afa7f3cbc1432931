"""What the Redis store and the Redis bus share: key names, timings, the client, the envelope codec."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

#: A process renews its heartbeat this often (seconds).
HEARTBEAT_S = 2.0
#: A process whose heartbeat is this old (seconds) is dead: the first live process to notice
#: removes its members from every room. Its users leave everyone's lists within
#: ``NODE_TTL_S + HEARTBEAT_S``.
NODE_TTL_S = 10.0
#: While Redis is unreachable, it is tried again this often (seconds).
RETRY_S = 1.0
#: After Redis is found empty (first start, or restarted without its data), no initial storage
#: is claimed for this long (seconds): every live process notices within a heartbeat and
#: re-seeds the rooms it holds, so a room someone holds is never given initial storage.
SETTLE_S = 6.0

#: Errors that mean "Redis cannot be reached now" (BusyLoadingError, Redis still loading its
#: data after a restart, is a ConnectionError too); anything else is a real refusal.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)

#: Redis connection settings: fail fast (no hidden retries) so that the adapters, not the
#: driver, decide what an outage means; the large read timeout leaves room for 5 MB snapshots.
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 10.0,
    "socket_connect_timeout": 2.0,
    "retry": Retry(NoBackoff(), 0),
    "health_check_interval": 0,
}


def check_url(url: str) -> str:
    """Refuse a malformed URL now, not at the first connection attempt in the background."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"not a Redis URL: {url!r} (expected redis://host:port/db)")
    return url


def connect(url: str) -> redis.asyncio.Redis:
    """A client for ``url`` (``redis://host:port/db``); it connects on first use."""
    return redis.asyncio.Redis.from_url(url, **CLIENT_OPTIONS)


def new_token() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Keys:
    """Every key and channel, under one prefix (so several deployments can share a Redis).

    Room names cannot contain ``:`` (see ``protocol.ROOM_NAME_PATTERN``), so no two rooms'
    keys can collide.
    """

    prefix: str = "pluv"

    @property
    def instance(self) -> str:
        """A token written once into an empty Redis: when it changes, Redis lost its data."""
        return f"{self.prefix}:instance"

    @property
    def settle(self) -> str:
        """Exists for ``SETTLE_S`` after Redis was found empty: initial-storage claims wait."""
        return f"{self.prefix}:settle"

    @property
    def nodes(self) -> str:
        """Sorted set: node id -> heartbeat deadline (ms, Redis clock)."""
        return f"{self.prefix}:nodes"

    @property
    def control(self) -> str:
        """A channel every process listens on, so its subscriber connection always exists."""
        return f"{self.prefix}:control"

    def node_rooms(self, node: str) -> str:
        """Set: the rooms where ``node`` has members (what to clean up when it dies)."""
        return f"{self.prefix}:node:{node}:rooms"

    def updates(self, room: str) -> str:
        """List: the room's Yjs updates, snapshot first; their merge is the document."""
        return f"{self.prefix}:room:{room}:updates"

    def version(self, room: str) -> str:
        """Counter bumped by each compaction, so two compactions never interleave."""
        return f"{self.prefix}:room:{room}:version"

    def members(self, room: str) -> str:
        """Hash: connection id -> ``{"node": ..., "member": {...}}`` with current presence."""
        return f"{self.prefix}:room:{room}:members"

    def channel(self, room: str) -> str:
        return f"{self.prefix}:room:{room}"


def encode_envelope(envelope: dict[str, Any]) -> bytes:
    """JSON for the wire; an ``update`` envelope's bytes travel as base64. The sender's node
    comes first, so that a process can skip its own envelopes without decoding them
    (:func:`own_prefix`)."""
    ordered = {"node": envelope.get("node", ""), **envelope}
    if isinstance(ordered.get("update"), bytes | bytearray):
        ordered["update"] = base64.b64encode(ordered["update"]).decode("ascii")
    return json.dumps(ordered, separators=(",", ":")).encode()


def own_prefix(node: str) -> bytes:
    """How every envelope ``node`` publishes starts (see :func:`encode_envelope`)."""
    return b'{"node":' + json.dumps(node).encode() + b","


def decode_envelope(data: bytes) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(data)
    if envelope.get("kind") == "update" and isinstance(envelope.get("update"), str):
        envelope["update"] = base64.b64decode(envelope["update"])
    return envelope

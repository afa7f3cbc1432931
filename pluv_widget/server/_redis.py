"""What the Redis store and the Redis bus share: key names, timings, the client, the Lua scripts.

The scripts are each a step that must be atomic across processes. The heartbeat builds key names
from data (the rooms a dead node was in), so they need a standalone Redis (or Sentinel), not
Redis Cluster.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..protocol import MemberInfo, encode_json

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


def member_entry(node: str, member: MemberInfo) -> str:
    """A member as the room's member hash keeps it (the reaper script reads ``node``)."""
    return encode_json({"node": node, "member": member.to_wire()})


def read_member_entry(raw: bytes | str) -> tuple[str, MemberInfo]:
    """``(node, member)`` from a member hash entry; ``ValueError`` when it is not one."""
    entry = json.loads(raw)
    if not isinstance(entry, dict):
        raise ValueError("a member entry is an object")
    node = entry.get("node")
    return (node if isinstance(node, str) else ""), MemberInfo.from_wire(entry.get("member"))


# -- Lua scripts ------------------------------------------------------------------------------

#: Initial storage, exactly once: KEYS = updates, instance, settle; ARGV = update, a new
#: instance token, settle ms. Returns 1 (claimed), 0 (the room has storage) or -1 (Redis was
#: just found empty: wait for the processes holding rooms to re-seed them, then ask again).
CLAIM_INITIAL = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
  return -1
end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""

#: Compaction: KEYS = updates, version; ARGV = the version read with the first ``count``
#: updates, count, the merged snapshot. Replaces those updates by the snapshot and keeps every
#: update appended since (by any process); returns 0 without change if another compaction ran.
COMPACT = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
redis.call('LPUSH', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
return 1
"""

#: Heartbeat and reaper: ARGV = prefix, node ('' for none), ttl ms, a new instance token,
#: settle ms. Renews the node's deadline, then removes every node whose deadline passed: its
#: members leave their rooms (a ``leave`` envelope each, as if they had left) and each of its
#: rooms gets a ``resync`` envelope (it may have committed an update it never published); both
#: shaped as ``core.envelopes`` encodes them.
#: Returns {instance token, 1 if the node was registered before this call, reaped nodes}.
HEARTBEAT = """
local p = ARGV[1]
local node = ARGV[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local instance = redis.call('GET', p .. ':instance')
if not instance then
  instance = ARGV[4]
  redis.call('SET', p .. ':instance', instance)
  redis.call('SET', p .. ':settle', '1', 'PX', ARGV[5])
end
local known = 0
if node ~= '' then
  if redis.call('ZSCORE', p .. ':nodes', node) then known = 1 end
  redis.call('ZADD', p .. ':nodes', now + tonumber(ARGV[3]), node)
end
local reaped = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', p .. ':nodes', '-inf', '(' .. now)) do
  local rooms_key = p .. ':node:' .. dead .. ':rooms'
  for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
    local members_key = p .. ':room:' .. room .. ':members'
    local channel = p .. ':room:' .. room
    local entries = redis.call('HGETALL', members_key)
    for i = 1, #entries, 2 do
      local ok, entry = pcall(cjson.decode, entries[i + 1])
      if ok and entry['node'] == dead then
        redis.call('HDEL', members_key, entries[i])
        redis.call('PUBLISH', channel, cjson.encode({kind = 'leave', connection_id = entries[i], node = dead}))
      end
    end
    redis.call('PUBLISH', channel, cjson.encode({kind = 'resync', reseed = false, node = dead}))
  end
  redis.call('DEL', rooms_key)
  redis.call('ZREM', p .. ':nodes', dead)
  table.insert(reaped, dead)
end
return {instance, known, reaped}
"""

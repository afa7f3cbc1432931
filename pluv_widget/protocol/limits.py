"""The server's limits, with their documented defaults (README "Limits")."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Server limits. Pass overrides to ``create_io(limits=Limits(...))``.

    Sizes are in bytes, measured on the wire: a frame as received, presence and event data as
    compact UTF-8 JSON, storage as the stored updates (snapshot plus tail).
    """

    max_frame_bytes: int = 16 * MIB  # larger frames close the connection with 1009
    max_presence_bytes: int = 512  # a connection's merged presence
    max_event_bytes: int = 64 * 1024  # an event's data
    max_storage_bytes: int = 64 * MIB  # a room's stored updates
    max_messages_per_s: float = 1000.0  # per connection; above it reading pauses
    message_burst: int = 4000
    join_timeout_s: float = 10.0  # from the handshake to the ``join`` message
    ping_interval_s: float = 20.0  # heartbeats, on both sides
    ping_timeout_s: float = 40.0  # a pong later than this drops the connection

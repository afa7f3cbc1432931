"""The server's limits, with their documented defaults (README "Limits")."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Server limits. Pass overrides to ``create_io(limits=Limits(...))``.

    Sizes are in bytes, measured on the wire: a frame as received, presence and event data as
    compact UTF-8 JSON, storage as the stored updates (snapshot plus tail).

    Memory per connection is bounded on both sides. Inbound: at most ``max_queued_frames`` frames
    of ``max_frame_bytes`` wait to be read, and reading pauses (TCP backpressure) above
    ``max_messages_per_s`` or ``max_bytes_per_s``. Outbound: reading also pauses while the
    connection's unsent data passes ``send_buffer_pause_bytes`` (so a request cannot be answered
    faster than the client reads: a flood of sync step 1 costs one document, not one per
    request); a connection whose unsent data passes ``max_send_buffer_bytes``, or stays above
    ``send_buffer_pause_bytes`` for ``send_stall_timeout_s``, is closed with 4007.
    """

    max_frame_bytes: int = 16 * MIB  # larger frames close the connection with 1009
    max_presence_bytes: int = 512  # a connection's merged presence
    max_event_bytes: int = 64 * KIB  # an event's data
    max_storage_bytes: int = 64 * MIB  # a room's stored updates
    max_messages_per_s: float = 1000.0  # per connection; above it reading pauses
    message_burst: int = 4000
    max_bytes_per_s: float = 1 * MIB  # per connection, inbound; above it reading pauses
    byte_burst: int = 2 * MIB  # a larger frame still passes; reading then pauses until the rate catches up
    max_queued_frames: int = 4  # frames received but not yet read, per connection
    send_buffer_pause_bytes: int = 1 * MIB  # unsent data above which reading this connection pauses
    max_send_buffer_bytes: int = 8 * MIB  # unsent data above which the connection is closed (4007)
    send_stall_timeout_s: float = 10.0  # unsent data above the pause mark this long: closed (4007)
    close_grace_s: float = 2.0  # a close handshake a stalled client cannot finish: then aborted
    join_timeout_s: float = 10.0  # from the handshake to the ``join`` message
    handshake_timeout_s: float = 5.0  # from TCP accept (or TLS) to the WebSocket handshake's end
    ping_interval_s: float = 20.0  # heartbeats, on both sides
    ping_timeout_s: float = 40.0  # a pong later than this drops the connection
    # Sockets: ``pending`` ones are accepted but not yet in a room (handshaking, or waiting for
    # ``join``); refused at once above these (HTTP 503 before the handshake).
    max_pending_per_address: int = 64  # per source address (the X-Forwarded-For one behind a proxy)
    max_pending_connections: int = 1024  # in total, and never more than half the descriptors
    max_connections_per_address: int = 512  # every socket of one source address
    max_connections: int = 100_000  # every socket; capped by RLIMIT_NOFILE minus ``fd_headroom``
    fd_headroom: int = 128  # descriptors kept for storage, logs and the listening socket
    max_connections_per_user: int = 16  # one token user's connections in one room; above it 4008
    # The /token route: wrong join codes (or refusals by ``mint_user``) per source address.
    max_wrong_codes_per_min: float = 10.0  # above it the route answers 429 with Retry-After
    wrong_code_burst: int = 20
    log_lines_per_min: int = 20  # the same log message template at most this often, then one summary

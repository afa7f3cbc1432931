"""What the client hands to user code: users, changes, events, and the room's states."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class ConnectionState(StrEnum):
    UNTOUCHED = "untouched"  # created, never entered
    CONNECTING = "connecting"  # entering for the first time
    OPEN = "open"  # in the room
    UNAVAILABLE = "unavailable"  # connection lost; reconnecting
    CLOSED = "closed"  # left, or refused for good


class StorageState(StrEnum):
    LOADING = "loading"  # no sync with the server yet: reads would show an empty document
    SYNCED = "synced"  # in sync; edits travel as they happen
    OFFLINE = "offline"  # synced before, disconnected now; edits are kept and merged on reconnect


@dataclass(frozen=True)
class User:
    """A person in the room: one entry per user id, however many connections it has.

    Without auth the id is the connection id: every connection is its own person.
    ``presence`` is the user's most recently updated connection's presence (as in pluv).
    """

    id: str
    connection_id: str
    connection_ids: list[str]
    presence: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OthersChange:
    """Why ``others`` changed: a user entered, left, or updated presence or connections."""

    kind: Literal["enter", "leave", "update"]
    user: User


@dataclass(frozen=True)
class RoomEvent:
    """A broadcast event, stamped by the server. ``connection_id`` is None from the server itself."""

    event: str
    data: Any
    connection_id: str | None
    user: dict[str, Any] | None


@dataclass(frozen=True)
class ServerError:
    """An ``error`` message: the server refused one of this client's messages (see ErrorCode)."""

    code: str
    message: str

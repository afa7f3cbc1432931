"""Who is in a room: connections, their users and presence. Used by both room cores and the buses.

This is the one place a presence patch is merged and the one place membership is tracked: the
server core, the client core and the in-process bus all keep a :class:`Membership`.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol import MemberInfo


def merge_presence(presence: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A presence patch is a shallow merge: the patch's keys replace the presence's."""
    return {**presence, **patch}


@dataclass(slots=True)
class Member:
    """One connection (several may share a ``user["id"]``: one person in several tabs)."""

    connection_id: str
    user: dict[str, Any]
    presence: dict[str, Any] = field(default_factory=dict)
    local: bool = True  # server side: its socket is on this process
    touched: int = 0  # the membership's clock at its last join or presence change
    #: :meth:`encoded`'s text, until the presence changes (see :meth:`Membership.set_presence`).
    wire: str | None = field(default=None, compare=False, repr=False)

    @property
    def user_id(self) -> str:
        return str(self.user["id"])

    def info(self) -> MemberInfo:
        return MemberInfo(self.connection_id, self.user, self.presence)

    def encoded(self) -> str:
        """:meth:`info` as JSON text, encoded once per presence: a welcome lists every member."""
        if self.wire is None:
            self.wire = self.info().encode()
        return self.wire

    @classmethod
    def from_info(cls, info: MemberInfo, *, local: bool = True) -> Member:
        return cls(info.connection_id, info.user, dict(info.presence), local)


class Membership:
    """The connections of one room by connection id, with a clock that orders presence changes
    (a user's presence is that of their most recently changed connection, as in pluv)."""

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}
        self._users: dict[str, dict[str, Member]] = {}  # user id -> its connections, in join order
        self._clock = 0

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._members

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def __getitem__(self, connection_id: str) -> Member:
        return self._members[connection_id]

    def get(self, connection_id: str | None) -> Member | None:
        return self._members.get(connection_id) if connection_id is not None else None

    def add(self, member: Member) -> Member:
        self._clock += 1
        member.touched = self._clock
        old = self._members.get(member.connection_id)
        if old is not None:  # the same connection again (a client hears a member it knew): its tab moves
            self._forget_tab(old)
        self._members[member.connection_id] = member
        self._users.setdefault(member.user_id, {})[member.connection_id] = member
        return member

    def remove(self, connection_id: str) -> Member | None:
        member = self._members.pop(connection_id, None)
        if member is not None:
            self._forget_tab(member)
        return member

    def _forget_tab(self, member: Member) -> None:
        tabs = self._users[member.user_id]
        del tabs[member.connection_id]
        if not tabs:
            del self._users[member.user_id]

    def clear(self) -> None:
        self._members.clear()
        self._users.clear()

    def patched(self, connection_id: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """The presence ``connection_id`` would have after ``patch`` (None: no such member)."""
        member = self._members.get(connection_id)
        return None if member is None else merge_presence(member.presence, patch)

    def set_presence(self, connection_id: str, presence: dict[str, Any]) -> Member | None:
        member = self._members.get(connection_id)
        if member is not None:
            self._clock += 1
            member.presence = presence
            member.touched = self._clock
            member.wire = None
        return member

    def patch(self, connection_id: str, patch: dict[str, Any]) -> Member | None:
        presence = self.patched(connection_id, patch)
        return None if presence is None else self.set_presence(connection_id, presence)

    def of_user(self, user_id: str) -> list[Member]:
        return list(self._users.get(user_id, {}).values())

    def by_user(self) -> dict[str, list[Member]]:
        """Connections grouped by user, in order of each user's first connection."""
        groups: dict[str, list[Member]] = {}
        for member in self._members.values():
            groups.setdefault(member.user_id, []).append(member)
        return groups

    def infos(self, *, exclude: str | None = None) -> tuple[MemberInfo, ...]:
        return tuple(member.info() for member in self._members.values() if member.connection_id != exclude)

    def ids(self) -> Iterator[str]:
        return iter(list(self._members))

    def encoded(self, *, exclude: Container[str] = (), compact: bool = True) -> list[str]:
        """The members but ``exclude`` as JSON texts, each encoded once per presence (see
        :meth:`Member.encoded`); ``compact=False``: as objects (protocol 1 and 2), encoded now."""
        members = [member for member in self._members.values() if member.connection_id not in exclude]
        return [member.encoded() if compact else member.info().encode(compact=False) for member in members]

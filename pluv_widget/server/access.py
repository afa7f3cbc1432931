"""Access codes: which code gives which role, in which rooms.

A code is given per role (``--join-code`` for students, ``--teacher-code``, ``--observer-code``,
each repeatable; ``create_io(join_codes=[...], teacher_codes=[...], observer_codes=[...])``) and
may be scoped to the rooms whose names start with a prefix: ``STUDENTS-42@algebra-`` is valid
only for rooms ``algebra-...``. The role comes from the code that matched and from nothing else
in the request, so a student's code never yields a teacher's token.

Codes are compared as UTF-8 bytes in constant time, against every configured code (no early
exit), so neither the answer nor its timing says which code was close.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ServerConfigError
from ..protocol import OBSERVER, STUDENT, TEACHER, Role


@dataclass(frozen=True, slots=True)
class AccessCode:
    """One code: the role it gives and the room-name prefix it is valid for ("" = every room)."""

    code: str
    role: Role
    prefix: str = ""

    def admits(self, room: str) -> bool:
        return room.startswith(self.prefix)

    def __repr__(self) -> str:  # never print the code itself in logs
        return f"AccessCode(role={self.role!r}, prefix={self.prefix!r})"


def parse_code(spec: str, role: Role) -> AccessCode:
    """``CODE`` or ``CODE@prefix`` (the last ``@`` splits; a code may contain ``@`` before it)."""
    if not isinstance(spec, str) or not spec:
        raise ServerConfigError(f"an empty {role} code")
    code, at, prefix = spec.rpartition("@")
    if not at:
        code, prefix = spec, ""
    if not code:
        raise ServerConfigError(f"the {role} code {spec!r} has nothing before '@'")
    return AccessCode(code, role, prefix)


def build_codes(*, join_codes: Iterable[str] = (), teacher_codes: Iterable[str] = (),
                observer_codes: Iterable[str] = ()) -> tuple[AccessCode, ...]:
    """Every configured code; one code string may not give two roles (which would win?)."""
    codes = [
        *(parse_code(spec, TEACHER) for spec in teacher_codes),
        *(parse_code(spec, STUDENT) for spec in join_codes),
        *(parse_code(spec, OBSERVER) for spec in observer_codes),
    ]
    roles: dict[str, Role] = {}
    for entry in codes:
        if roles.setdefault(entry.code, entry.role) != entry.role:
            raise ServerConfigError(f"one code is given as both a {roles[entry.code]} and a {entry.role} code")
    return tuple(codes)


def match_code(given: str, codes: Iterable[AccessCode], room: str) -> AccessCode | None:
    """The code ``given`` is, if it admits ``room`` (the longest matching prefix wins)."""
    raw = given.encode("utf-8", "surrogatepass")
    found: AccessCode | None = None
    for entry in codes:
        same = hmac.compare_digest(raw, entry.code.encode("utf-8", "surrogatepass"))
        if same and entry.admits(room) and (found is None or len(entry.prefix) > len(found.prefix)):
            found = entry
    return found

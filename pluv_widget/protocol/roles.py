"""Who a person is in a room: the roles a token's ``user.role`` may hold.

* ``teacher`` — everything, including moderation and releasing names.
* ``student`` — the default: a token minted without a role is a student's.
* ``observer`` — read-only: a projector, a TA's screen.

The role travels in the token and in every member's ``user`` on the wire (``joined``, ``welcome``),
so each client sees everyone's role; only the server decides what a role may do.
"""

from __future__ import annotations

from typing import Any, Final, Literal, cast

Role = Literal["teacher", "student", "observer"]

TEACHER: Final = "teacher"
STUDENT: Final = "student"
OBSERVER: Final = "observer"
#: Every role, most powerful first.
ROLES: tuple[Role, ...] = (TEACHER, STUDENT, OBSERVER)
#: The role of a token whose minter did not say.
DEFAULT_ROLE: Role = STUDENT


def is_role(value: Any) -> bool:
    return isinstance(value, str) and value in ROLES


def check_role(value: Any) -> Role:
    """Return ``value`` as a role, or raise ``ValueError`` naming the roles there are."""
    if not is_role(value):
        raise ValueError(f"invalid role {value!r}: one of {', '.join(ROLES)}")
    return cast(Role, value)


def role_of(user: Any) -> Role:
    """The role of a member's ``user`` dict: its ``role``, else :data:`DEFAULT_ROLE`."""
    role = user.get("role") if isinstance(user, dict) else None
    return cast(Role, role) if is_role(role) else DEFAULT_ROLE

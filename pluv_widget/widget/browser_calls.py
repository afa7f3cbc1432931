"""Which server procedures the view may ask the kernel to call: ``{type: "call", procedure, input}``.

The view is a page anyone with the notebook open can script, and the kernel holds the user's
token, so the kernel forwards only the procedures its buttons need — the classroom's and the
trust issue's moderation — never an arbitrary name (an app's own procedures, ``room.reset``,
``users.readmit``). The server still decides each call by the token's role; this list only keeps
the view's reach to what it shows.
"""

from __future__ import annotations

from typing import Any

#: Procedure → the roles whose view shows its control (a mirror of the server's rules, for an
#: immediate "not allowed" instead of a round trip).
BROWSER_PROCEDURES: dict[str, tuple[str, ...]] = {
    "messages.delete": ("teacher", "student"),
    "users.mute": ("teacher",),
    "users.unmute": ("teacher",),
    "users.remove": ("teacher",),
    "room.lock": ("teacher",),
    "room.unlock": ("teacher",),
    "polls.create": ("teacher",),
    "polls.vote": ("teacher", "student"),
    "polls.reveal": ("teacher",),
    "polls.close": ("teacher",),
    "hands.raise": ("teacher", "student"),
    "hands.lower": ("teacher", "student"),
    "hands.resolve": ("teacher",),
    "hands.next": ("teacher",),
    "pulse.checkpoint": ("teacher", "student"),
}


def browser_call(content: dict[str, Any]) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """``(procedure, input, roles)`` of a view's call message; ``ValueError`` when not allowed."""
    procedure = content.get("procedure")
    if not isinstance(procedure, str) or procedure not in BROWSER_PROCEDURES:
        raise ValueError(f"the view may not call {procedure!r}")
    data = content.get("input")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{procedure}: input must be an object")
    return procedure, data, BROWSER_PROCEDURES[procedure]

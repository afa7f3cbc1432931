"""Follow the teacher: where the teacher is in the notebook, shared through their presence.

The teacher's view reports its active cell — the text of the nearest heading above it, its
index and the notebook's cell count — and the kernel puts ``{"cell": {...}}`` into the teacher's
presence (coalesced). Students' views find the teacher among the others by the role the server
stamped (``user.role``: a student cannot pose as the teacher) and scroll their own copy of the
notebook there: heading text first (the same lesson notebook has the same headings), the index
as a fraction of the count when the heading is not rendered (JupyterLab detaches off-screen cells).
Nothing here is private: presence is seen by everyone in the room, by design.
"""

from __future__ import annotations

from typing import Any

from ..protocol.roles import TEACHER, role_of

#: The presence field.
CELL = "cell"
MAX_HEADING_CHARS = 200
#: At most a few presence updates a second while the teacher moves around.
CELL_INTERVAL_S = 0.25


def cell_position(heading: Any, index: Any, count: Any) -> dict[str, Any]:
    """A position as shared: ``{"heading": str, "index": int >= 0, "count": int >= index + 1}``.

    Raises ``ValueError`` for what is not one (a view's message is untrusted input too)."""
    if not isinstance(heading, str):
        raise ValueError("heading must be a string")
    if isinstance(index, bool) or not isinstance(index, (int, float)) or isinstance(count, bool) \
            or not isinstance(count, (int, float)):
        raise ValueError("index and count must be numbers")
    index, count = int(index), int(count)
    if index < 0:
        raise ValueError("index must be >= 0")
    return {"heading": " ".join(heading.split())[:MAX_HEADING_CHARS], "index": index, "count": max(count, index + 1)}


def teacher_cell(others: list[Any]) -> dict[str, Any] | None:
    """The first teacher's shared position among ``others`` (client users), or None."""
    for user in others:
        if role_of(user.info) == TEACHER:
            cell = user.presence.get(CELL) if isinstance(user.presence, dict) else None
            if isinstance(cell, dict):
                return dict(cell)
    return None

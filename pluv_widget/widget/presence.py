"""The presence a widget shows, and people as the browser sees them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..protocol.roles import role_of
from .identity import color_for


class WidgetPresence(BaseModel):
    """The presence a widget needs; subclass it to add fields (``hand_raised: bool = False``)."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    color: str = ""
    selection_id: str | None = None


def me_view(room: Any) -> dict[str, Any]:
    """The ``me`` traitlet: my connection, user id, role (``""`` until the server said), name,
    colour and whole presence."""
    presence = dict(room.my_presence)
    myself = room.myself
    return {
        "connection_id": myself.connection_id if myself else "",
        "id": myself.id if myself else "",
        "role": role_of(myself.info) if myself else "",
        "name": presence.get("name", ""),
        "color": presence.get("color", ""),
        "presence": presence,
    }


def person_view(user: Any) -> dict[str, Any]:
    """One entry of the ``others`` traitlet: a user with all their connections (tabs), their
    role as the server stamped it (so a view can find the teacher) and the notebook position
    they share (``cell``: the teacher's, for "follow the teacher"; None when not shared)."""
    presence = dict(user.presence)
    cell = presence.get("cell")
    return {
        "connection_id": user.connection_id,
        "connection_ids": list(user.connection_ids),
        "id": user.id,
        "role": role_of(user.info),
        "name": presence.get("name") or user.info.get("name") or user.id,
        "color": presence.get("color") or color_for(user.id),
        "presence": presence,
        "cell": cell if isinstance(cell, dict) else None,
    }

"""Who a person is on screen: a display name and a stable colour."""

from __future__ import annotations

import getpass
import hashlib
import os
import uuid

#: Readable on JupyterLab's light and dark themes, with white text on top.
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#0f9d9d",
    "#c2185b", "#7cb342", "#5c6bc0", "#b8860b", "#8d6e63", "#00897b",
)  # fmt: skip

#: Each kernel is its own person when there is no auth, even for one OS user: this is its key.
KERNEL_PERSON = uuid.uuid4().hex
_session_people: dict[int, str] = {}


def session_person(session: int) -> str:
    """The key of a session's person (:mod:`.registry`'s session: 0 for the whole process, else
    one per loop — each viewer of ``marimo run`` is their own person, with their own colour)."""
    if session == 0:
        return KERNEL_PERSON
    return _session_people.setdefault(session, uuid.uuid4().hex)


def display_name() -> str:
    """``$JUPYTERHUB_USER``, else the OS user."""
    name = os.environ.get("JUPYTERHUB_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "anonymous"


def color_for(key: str) -> str:
    """A stable colour for a person's key (user id with auth; the kernel without)."""
    return PALETTE[int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % len(PALETTE)]

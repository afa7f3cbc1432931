"""The teacher dashboard: a static page (``/dashboard``) and its live feed (``/dashboard/live``).

The page (``pluv_widget/static/dashboard/``: plain ESM and CSS, shipped in the wheel, no build
step) signs in with a teacher code — the ``/token`` route gives a server-scoped teacher token —
and opens one websocket, ``/dashboard/live?token=...``. On it the server pushes ``{"type":
"rooms", "rooms": [...]}``: every room of the directory (:mod:`.directory`, across processes),
and for the rooms open on this process also who is there, hands raised, open polls and the last
messages. The summary is rebuilt every :data:`TICK_S` while a dashboard is connected and sent
only when it changed, so a new message reaches the page within a tick, and an idle class costs
one cheap rebuild per tick (no page ever polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pycrdt
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..core.permissions import Role, role_of
from ..crdt import to_json
from . import outbound
from .tokens import SERVER_SCOPE, TokenError, verify_token

if TYPE_CHECKING:
    from .live_room import LiveRoom
    from .room_server import RoomServer

log = logging.getLogger("pluv_widget.server")

STATIC = Path(__file__).resolve().parents[1] / "static" / "dashboard"
TICK_S = 0.25
#: The directory (a store read) is merged in at most this often.
DIRECTORY_EVERY_S = 2.0
RECENT_MESSAGES = 5


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of the page (``""``: the page itself), with its content type; None if unknown."""
    path = STATIC / (name or "index.html")
    if path.parent != STATIC or not path.is_file():  # no way out of the folder
        return None
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".js":
        kind = "text/javascript"
    return path.read_bytes(), f"{kind}; charset=utf-8"


class DashboardFeed:
    """The dashboards connected to this process, and the summary they are sent."""

    def __init__(self, server: RoomServer) -> None:
        self.server = server
        self.sockets: set[ServerConnection] = set()
        self._task: asyncio.Task[None] | None = None
        self._last = ""
        self._listing: list[dict[str, Any]] = []
        self._listed_at = -DIRECTORY_EVERY_S

    async def __call__(self, socket: ServerConnection, token: str | None) -> None:
        secret = self.server.config.secret
        if secret is not None:
            try:
                user = verify_token(secret, token, room=SERVER_SCOPE)
            except TokenError as error:
                await socket.close(error.code, error.reason[:120])
                return
            if role_of(user) != Role.TEACHER:
                await socket.close(4002, "the dashboard needs a teacher's token")
                return
        self.sockets.add(socket)
        try:
            await socket.send(json.dumps(await self.summary()))
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run())
            async for _ in socket:  # the page sends nothing we need; reading keeps the socket healthy
                pass
        except ConnectionClosed:
            pass
        finally:
            self.sockets.discard(socket)

    async def _run(self) -> None:
        while self.sockets:
            await asyncio.sleep(TICK_S)
            try:
                summary = json.dumps(await self.summary())
            except Exception as error:  # the store is away: the page keeps its last view
                log.warning("dashboard: could not build the summary (%s)", error)
                continue
            if summary != self._last:
                self._last = summary
                outbound.send(self.sockets, summary)  # a page that does not read is cut

    async def summary(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if loop.time() - self._listed_at >= DIRECTORY_EVERY_S:
            self._listing = await self.server.directory.rooms()
            self._listed_at = loop.time()
        rows = {row["name"]: {**row, "occupant_count": row["occupants"], "occupants": None}
                for row in self._listing}
        for name, room in sorted(self.server.registry.rooms.items()):
            rows[name] = {**rows.get(name, {"name": name, "last_activity": 0.0}), **_room_summary(room)}
        return {"type": "rooms", "rooms": [rows[name] for name in sorted(rows)]}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _room_summary(room: LiveRoom) -> dict[str, Any]:
    """What the dashboard shows of a room open here: people (one line per user), hands, open
    polls, the last messages. Teachers' eyes only: the feed needs a teacher's token."""
    people: dict[str, dict[str, Any]] = {}
    for member in room.core.members:
        user = member.user
        people.setdefault(str(user.get("id")), {"id": user.get("id"), "name": user.get("name") or
                                                member.presence.get("name") or "anonymous",
                                                "role": str(role_of(user, room.core.default_role))})
    fold = room.classroom.fold
    messages = room.core.protected.get("messages", type=pycrdt.Array)
    recent = [to_json(item) for item in list(messages)[-RECENT_MESSAGES:]]
    return {
        "occupants": sorted(people.values(), key=lambda person: (person["role"] != "teacher", str(person["name"]))),
        "occupant_count": len(people),
        "storage_bytes": room.core.storage_bytes,
        "hands": [{"name": hand.name, "since": hand.raised_at} for hand in fold.queue_in_order()],
        "polls": [{"id": poll.id, "question": poll.question, "voters": len(poll.votes)}
                  for poll in fold.polls_in_order() if not poll.closed],
        "messages": [{"author": str(message.get("author", "")), "text": str(message.get("text", ""))[:200]}
                     for message in recent if isinstance(message, dict)],
    }

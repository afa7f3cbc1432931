"""pluv-widget's protocol: JSON control and presence frames, y-websocket binary sync frames.

Join: ``{"type": "join", "protocol": 3, "presence": {...}}`` followed at once by a sync step 1
(as pluv-widget's own client does: a fresh document needs no ``welcome`` first) → ``welcome``,
then the server's step 2 (and its own step 1, answered with ours). Presence is
``{"type": "presence", "patch": {...}}``; others receive it stamped with the sender's
``connection_id``, or several senders' latest patches in one ``presence`` frame with
``updates`` (which may hold the receiver's own: skipped). Members: ``welcome``'s ``others``,
then ``joined`` (one member, or ``members``: several, maybe the receiver itself) and ``left``
(one, or ``connection_ids``).
Lists are compact from protocol 3 (``[connection_id, user, presence]``, ``[connection_id,
patch]``); a checkout of an older protocol (``--pluv-root``) is spoken to in its own, read from
its ``/health``. See ``pluv_widget/protocol/``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import urllib.request
from typing import Any

import pycrdt
from pydantic_core import from_json

from . import SYNC, Client, Frame

PROTOCOL_VERSION = 3  # pluv_widget.protocol.PROTOCOL_VERSION (kept literal: the bench may serve another checkout)


@functools.cache
def server_protocol(base_url: str) -> int:
    """The protocol the server at ``base_url`` speaks (its ``/health``), at most ours."""
    with urllib.request.urlopen(base_url.replace("ws", "http", 1) + "/health", timeout=10) as answer:
        return min(PROTOCOL_VERSION, int(json.load(answer)["protocol"]))


def member_ids(entries: list[Any]) -> list[str]:
    """A member list's connection ids: entries ``[connection_id, user, presence]`` or objects."""
    if entries and isinstance(entries[0], list):
        return [entry[0] for entry in entries]
    return [entry["connection_id"] for entry in entries]


class PluvClient(Client):
    name = "pluv"

    connection_id: str | None = None

    def __init__(self, base_url: str, room: str, **options: Any) -> None:
        super().__init__(base_url, room, **options)
        self.protocol = server_protocol(base_url)  # before the clock starts: cached per server

    async def handshake(self) -> None:
        self._welcome = asyncio.Event()
        await self.send(json.dumps({"type": "join", "protocol": self.protocol, "presence": self.announce or {}}))
        await self.send(pycrdt.create_sync_message(self.doc))
        await self._welcome.wait()
        await self._synced.wait()

    def on_frame(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            if frame and frame[0] == SYNC:
                self.on_sync(frame)
            return
        message = from_json(frame)
        kind = message.get("type")
        if kind == "presence":
            if "updates" in message:
                for update in message["updates"]:
                    sender, patch = update if isinstance(update, list) else (update["connection_id"], update["patch"])
                    if sender != self.connection_id:
                        self.sink.presence(self, sender, patch)
            else:
                self.sink.presence(self, message["connection_id"], message["patch"])
        elif kind == "joined":
            assert self.others is not None
            self.others.update(member_ids(message.get("members") or [message]))
            self.others.discard(self.connection_id)
            self.sink.members(self)
        elif kind == "left":
            assert self.others is not None
            self.others.difference_update(message.get("connection_ids") or [message["connection_id"]])
            self.sink.members(self)
        elif kind == "welcome":
            self.connection_id = message["connection_id"]
            self.others = set(member_ids(message["others"]))
            self.sink.members(self)
            self._welcome.set()
        elif kind == "error":
            if len(self.errors) < 20:
                self.errors.append(f"{message.get('code')}: {message.get('message')}")

    def presence_frame(self, state: dict[str, Any]) -> Frame:
        return json.dumps({"type": "presence", "patch": state}, separators=(",", ":"))

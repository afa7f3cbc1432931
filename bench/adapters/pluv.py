"""pluv-widget's protocol: JSON control and presence frames, y-websocket binary sync frames.

Join: ``{"type": "join", "protocol": 2, "presence": {...}}`` → ``welcome``; then a sync step 1
that the server answers with its step 2 (and its own step 1, answered with ours). Presence is
``{"type": "presence", "patch": {...}}``; others receive it stamped with the sender's
``connection_id``, or several senders' latest patches in one ``presence`` frame with
``updates`` (which may hold the receiver's own: skipped). Members: ``welcome``'s ``others``,
then ``joined`` (one member, or ``members``: several, maybe the receiver itself) and ``left``.
See ``pluv_widget/protocol/``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pycrdt

from . import SYNC, Client, Frame

PROTOCOL_VERSION = 2  # pluv_widget.protocol.PROTOCOL_VERSION (kept literal: the bench may serve another checkout)


class PluvClient(Client):
    name = "pluv"

    connection_id: str | None = None

    async def handshake(self) -> None:
        self._welcome = asyncio.Event()
        await self.send(json.dumps({"type": "join", "protocol": PROTOCOL_VERSION, "presence": {}}))
        await self._welcome.wait()
        await self.send(pycrdt.create_sync_message(self.doc))
        await self._synced.wait()

    def on_frame(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            if frame and frame[0] == SYNC:
                self.on_sync(frame)
            return
        message = json.loads(frame)
        kind = message.get("type")
        if kind == "presence":
            if "updates" in message:
                for update in message["updates"]:
                    if update["connection_id"] != self.connection_id:
                        self.sink.presence(self, update["connection_id"], update["patch"])
            else:
                self.sink.presence(self, message["connection_id"], message["patch"])
        elif kind == "joined":
            assert self.others is not None
            for member in message.get("members") or [message]:
                if member["connection_id"] != self.connection_id:
                    self.others.add(member["connection_id"])
            self.sink.members(self)
        elif kind == "left":
            assert self.others is not None
            self.others.discard(message["connection_id"])
            self.sink.members(self)
        elif kind == "welcome":
            self.connection_id = message["connection_id"]
            self.others = {other["connection_id"] for other in message["others"]}
            self.sink.members(self)
            self._welcome.set()
        elif kind == "error":
            if len(self.errors) < 20:
                self.errors.append(f"{message.get('code')}: {message.get('message')}")

    def presence_frame(self, state: dict[str, Any]) -> Frame:
        return json.dumps({"type": "presence", "patch": state}, separators=(",", ":"))

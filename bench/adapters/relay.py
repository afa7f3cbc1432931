"""Frames for the raw relay, which re-broadcasts each frame to the rest of its room.

The relay holds no state, so storage is peer to peer through it: edits travel as the same
y-websocket sync update frames the other systems get, and a newcomer that wants the document
sends a sync step 1 that a peer holding the document (``serves_doc``) answers with a step 2.
Presence is a JSON text frame ``{"from": <id>, "state": {...}}``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pycrdt
from pydantic_core import from_json

from . import STEP1, SYNC, Client, Frame


class RelayClient(Client):
    name = "relay"

    #: answer peers' sync step 1 with our document (the join workload's seeder)
    serves_doc = False
    #: wait in ``connect()`` until a peer has sent us the document (the join workload's joiner)
    wants_doc = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.id = uuid.uuid4().hex[:12]

    async def handshake(self) -> None:
        if self.wants_doc:
            await self.send(pycrdt.create_sync_message(self.doc))
            await self._synced.wait()

    def on_frame(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            if frame and frame[0] == SYNC and (frame[1] != STEP1 or self.serves_doc):
                self.on_sync(frame)
            return
        message = from_json(frame)
        self.sink.presence(self, message["from"], message["state"])

    def presence_frame(self, state: dict[str, Any]) -> Frame:
        return json.dumps({"from": self.id, "state": state}, separators=(",", ":"))

"""The y-websocket protocol, as @y/websocket-server and pycrdt-websocket speak it.

A y-websocket client's exchange, built with pycrdt: on open it sends a sync step 1 and answers
the server's step 1 with a step 2; it is synced when the server's step 2 arrives. Presence is
the awareness protocol: ``pycrdt.Awareness`` encodes this client's state (clock + JSON) into an
awareness message; received awareness updates are decoded entry by entry (client id, clock,
JSON state), as ``Awareness.apply_awareness_update`` reads them. Both servers echo awareness
back to its sender: that echo is skipped. A client given ``announce`` sends that state on open
and keeps ``others``: the client ids whose state it holds (the storm's "complete view").
"""

from __future__ import annotations

from typing import Any

import pycrdt
from pydantic_core import from_json

from . import AWARENESS, SYNC, Client, Frame


class YjsClient(Client):
    name = "yjs"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awareness = pycrdt.Awareness(self.doc)
        if self.announce is not None:
            self.others = set()  # from the first frame: the server sends the states it holds at once

    async def handshake(self) -> None:
        await self.send(pycrdt.create_sync_message(self.doc))
        if self.announce is not None:  # as a y-websocket provider does on open
            await self.send(self.presence_frame(self.announce))
        await self._synced.wait()

    def on_frame(self, frame: Frame) -> None:
        if not isinstance(frame, bytes) or not frame:
            return
        if frame[0] == SYNC:
            self.on_sync(frame)
        elif frame[0] == AWARENESS:
            decoder = pycrdt.Decoder(pycrdt.read_message(frame[1:]))
            own = self.awareness.client_id
            others = self.others
            for _ in range(decoder.read_var_uint()):
                client_id = decoder.read_var_uint()
                decoder.read_var_uint()  # clock
                text = decoder.read_var_string()
                if client_id == own:
                    continue
                if text and text != "null":
                    if others is not None:
                        others.add(client_id)
                    self.sink.presence(self, client_id, from_json(text))
                elif others is not None:
                    others.discard(client_id)
            if others is not None:
                self.sink.members(self)

    def presence_frame(self, state: dict[str, Any]) -> Frame:
        self.awareness.set_local_state(state)
        update = self.awareness.encode_awareness_update([self.awareness.client_id])
        return pycrdt.create_awareness_message(update)

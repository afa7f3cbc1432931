"""The classroom's room server app, loaded by ``pluv-widget serve --app``:

    pluv-widget serve --app notebooks/classroom_app.py:io --host 0.0.0.0 --port 2001 \\
        --secret "$PLUV_WIDGET_SECRET" --join-code maple-42

It adds two typed events to the stock server: ``poll`` (the teacher asks; the server checks the
question, gives the poll an id and sends it to everyone) and ``vote`` (a student answers; the
server counts — one vote per person — and broadcasts the tally as ``poll_results``). Students
import :class:`ClassPresence` so every kernel agrees on the "hand raised" field.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import BaseModel, Field

from pluv_widget import create_io
from pluv_widget.server import Context
from pluv_widget.widget import WidgetPresence

log = logging.getLogger("classroom")


class ClassPresence(WidgetPresence):
    """What everyone in the class shows: name, colour, selection — and a raised hand."""

    hand_raised: bool = False


class Poll(BaseModel):
    question: str = Field(min_length=1, max_length=200)
    options: list[str] = Field(min_length=2, max_length=6)


class Vote(BaseModel):
    poll_id: str
    option: int = Field(ge=0)


# poll id -> {"question", "options", "votes": {voter: option}}; in memory, like a whiteboard.
polls: dict[str, dict[str, Any]] = {}


def on_user_connected(ctx: Context) -> None:
    log.info("%s joined %s", (ctx.user or {}).get("name"), ctx.room)


io = create_io(on_user_connected=on_user_connected)


@io.procedure("poll", input=Poll)
def poll(data: Poll, ctx: Context) -> dict[str, Any]:
    poll_id = uuid.uuid4().hex[:8]
    polls[poll_id] = {"question": data.question, "options": data.options, "votes": {}}
    asker = (ctx.user or {}).get("name")
    return {"poll": {"id": poll_id, "question": data.question, "options": data.options, "by": asker}}


@io.procedure("vote", input=Vote)
def vote(data: Vote, ctx: Context) -> dict[str, Any] | None:
    current = polls.get(data.poll_id)
    if current is None or data.option >= len(current["options"]):
        return None  # an unknown poll or option: nothing to tell the room
    voter = str((ctx.user or {}).get("id") or ctx.connection_id)
    current["votes"][voter] = data.option
    counts = [0] * len(current["options"])
    for option in current["votes"].values():
        counts[option] += 1
    tally = dict(zip(current["options"], counts, strict=True))
    return {"poll_results": {"id": data.poll_id, "question": current["question"], "counts": tally}}

"""The built-in procedures: the widget's messages, and moderation (teacher-only).

The room core checked the caller's role against :data:`~pluv_widget.core.permissions.BUILTIN_PROCEDURES`
before any of these runs; what needs the room's content (a student deletes only their own
message) is checked here, with :mod:`~pluv_widget.core.permissions`, before anything is applied.

* ``messages.post {id, text}`` — appends ``{id, author, author_id, color, text, time}`` to the
  protected ``messages`` root; the server stamps author, author id, colour and time from the token.
* ``messages.delete {id}`` — students their own, teachers any. ``messages.clear {}`` — teachers.
* ``users.remove {user_id}`` / ``users.readmit`` — connections closed with 4009, tokens refused.
* ``users.mute {user_id}`` / ``users.unmute`` — read-only. ``room.lock {}`` / ``room.unlock``.
* ``room.reset {}`` — back to the room's initial storage, with a new generation.

Every moderation action is logged durably (``Persistence.append_log``) with who and when.

:data:`BUILTINS` is the one registry of built-in procedures: the classroom's (polls, hands,
pulse, export: :mod:`.classroom`) are registered here too.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pycrdt
from pydantic import BaseModel, Field, ValidationError

from ..core.permissions import Refusal, RoomRules, may_delete_message
from ..crdt import to_json
from ..protocol import ErrorCode
from .classroom import CLASSROOM

if TYPE_CHECKING:
    from .live_room import LiveRoom

MESSAGES = "messages"
MAX_MESSAGE_CHARS = 2000
MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#0f9d9d",
    "#c2185b", "#7cb342", "#5c6bc0", "#b8860b", "#8d6e63", "#00897b",
)  # fmt: skip
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class Post(BaseModel):
    id: str = Field(pattern=MESSAGE_ID.pattern)
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class MessageId(BaseModel):
    id: str = Field(max_length=64)


class UserId(BaseModel):
    user_id: str = Field(min_length=1, max_length=200)


class Nothing(BaseModel):
    pass


Caller = dict[str, Any]  # {"user": ..., "presence": ..., "role": ...}
Handler = Callable[["LiveRoom", Any, Caller], Awaitable[Any]]


def _color(user: dict[str, Any], presence: dict[str, Any]) -> str:
    chosen = presence.get("color")
    if isinstance(chosen, str) and _COLOR.match(chosen):
        return chosen
    key = str(user.get("id", ""))
    return PALETTE[int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % len(PALETTE)]


async def post(room: LiveRoom, data: Post, caller: Caller) -> Any:
    user, presence = caller["user"], caller["presence"]
    text = data.text.strip()
    if not text:
        return Refusal(ErrorCode.INVALID_INPUT, "a message needs some text")
    name = user.get("name") or presence.get("name") or "anonymous"
    message = {"id": data.id, "author": str(name)[:80], "author_id": str(user.get("id", "")),
               "color": _color(user, presence), "text": text, "time": int(time.time() * 1000)}

    def edit(doc: pycrdt.Doc[Any]) -> Refusal | None:
        messages = doc.get(MESSAGES, type=pycrdt.Array)
        if any(isinstance(item, pycrdt.Map) and item.get("id") == data.id for item in messages):
            return Refusal(ErrorCode.INVALID_INPUT, f"a message with id {data.id!r} exists already")
        messages.append(pycrdt.Map(message))
        return None

    refusal = await room.update_protected(edit)
    return refusal if refusal is not None else message


async def delete(room: LiveRoom, data: MessageId, caller: Caller) -> Any:
    def edit(doc: pycrdt.Doc[Any]) -> Any:
        messages = doc.get(MESSAGES, type=pycrdt.Array)
        for index, item in enumerate(messages):
            if isinstance(item, pycrdt.Map) and item.get("id") == data.id:
                refusal = may_delete_message(caller["role"], str(caller["user"].get("id", "")), to_json(item))
                if refusal is not None:
                    return refusal
                del messages[index]
                return {"deleted": True}
        return {"deleted": False}

    return await room.update_protected(edit)


async def clear(room: LiveRoom, _data: Nothing, caller: Caller) -> Any:
    def edit(doc: pycrdt.Doc[Any]) -> Any:
        messages = doc.get(MESSAGES, type=pycrdt.Array)
        count = len(messages)
        if count:
            del messages[0:count]
        return {"cleared": count}

    answer = await room.update_protected(edit)
    await room.log(caller, "messages.clear", None)
    await room.new_generation(caller, "the messages were cleared")
    return answer


def _rules_change(change: Callable[[RoomRules, Any], None], action: str) -> Handler:
    async def handler(room: LiveRoom, data: Any, caller: Caller) -> Any:
        target = getattr(data, "user_id", None)
        await room.change_rules(lambda rules: change(rules, target))
        await room.log(caller, action, target)
        return {"rules": room.core.rules.to_json()}

    return handler


async def reset(room: LiveRoom, _data: Nothing, caller: Caller) -> Any:
    await room.log(caller, "room.reset", None)
    await room.reset_storage(caller, "a teacher reset the room")
    return {"generation": room.core.rules.generation}


def _remove(rules: RoomRules, user_id: str) -> None:
    rules.removed.add(user_id)


BUILTINS: dict[str, tuple[type[BaseModel], Handler]] = {
    "messages.post": (Post, post),
    "messages.delete": (MessageId, delete),
    "messages.clear": (Nothing, clear),
    "users.remove": (UserId, _rules_change(_remove, "users.remove")),
    "users.readmit": (UserId, _rules_change(lambda r, u: r.removed.discard(u), "users.readmit")),
    "users.mute": (UserId, _rules_change(lambda r, u: r.muted.add(u), "users.mute")),
    "users.unmute": (UserId, _rules_change(lambda r, u: r.muted.discard(u), "users.unmute")),
    "room.lock": (Nothing, _rules_change(lambda r, _u: setattr(r, "locked", True), "room.lock")),
    "room.unlock": (Nothing, _rules_change(lambda r, _u: setattr(r, "locked", False), "room.unlock")),
    "room.reset": (Nothing, reset),
    **CLASSROOM,
}


async def run_builtin(room: LiveRoom, procedure: str, data: Any, caller: Caller) -> Any:
    """Validate the input and run the built-in ``procedure``: its answer, or a :class:`Refusal`."""
    model, handler = BUILTINS[procedure]
    try:
        value = model.model_validate(data if data is not None else {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) or 'input'}: {problem['msg']}" for problem in error.errors()
        )
        return Refusal(ErrorCode.INVALID_INPUT, f"invalid input for {procedure!r}: {problems}")
    return await handler(room, value, caller)

"""User hooks and the :class:`Context` they (and procedures) are called with."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("pluv_widget.server")

Hook = Callable[..., Any]


@dataclass(frozen=True)
class Context:
    """Who triggered a hook or procedure."""

    room: str
    connection_id: str | None
    user: dict[str, Any] | None
    metadata: Any = None


async def call_hook(hook: Hook | None, *args: Any) -> Any:
    """Run a sync or async user hook; its exceptions are logged, never fatal to the server."""
    if hook is None:
        return None
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except Exception:
        log.exception("hook %s failed", getattr(hook, "__name__", hook))
        return None

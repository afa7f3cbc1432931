"""At most one push per interval, always of the latest state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Throttle:
    """Coalesces requests into calls of ``push`` at most every ``interval`` seconds.

    :meth:`request` is thread-safe (it hands off to ``call_soon``, the client's); ``push`` runs on
    ``loop`` and reads the state *then*, so a burst of changes costs one push with the newest state.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        call_soon: Callable[..., None],
        push: Callable[[], Any],
        interval: float,
    ) -> None:
        self._loop = loop
        self._call_soon = call_soon
        self._push = push
        self._interval = interval
        self._handle: asyncio.Handle | None = None
        self._last = float("-inf")
        self._stopped = False

    def request(self) -> None:
        self._call_soon(self._arm)

    def stop(self) -> None:
        """No more pushes (on the loop)."""
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        if self._stopped or self._handle is not None:
            return
        delay = max(0.0, self._last + self._interval - self._loop.time())
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._last = self._loop.time()
        if not self._stopped:
            self._push()

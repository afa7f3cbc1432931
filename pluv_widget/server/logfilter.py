"""Log lines a flood cannot multiply: each message template at most N times a minute.

A thousand refused sockets would otherwise write a thousand lines. :class:`RepeatFilter` lets
the first ``per_minute`` records of one template (``record.msg`` before its arguments, and its
logger) through in each minute; the first one let through after that minute says how many
were suppressed.
"""

from __future__ import annotations

import logging
import time

#: Templates remembered at once (the oldest are forgotten beyond it).
MAX_TEMPLATES = 1024


class RepeatFilter(logging.Filter):
    def __init__(self, per_minute: int = 20, window_s: float = 60.0) -> None:
        super().__init__()
        self.per_minute = per_minute
        self.window_s = window_s
        self._seen: dict[tuple[str, str], list[float]] = {}  # template -> [window start, count, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        state = self._seen.get(key)
        if state is None or now - state[0] >= self.window_s:
            suppressed = int(state[2]) if state is not None else 0
            if len(self._seen) >= MAX_TEMPLATES and key not in self._seen:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = [now, 1, 0]
            if suppressed:
                record.msg = f"{record.msg} (suppressed {suppressed} similar lines in the last minute)"
            return True
        if state[1] < self.per_minute:
            state[1] += 1
            return True
        state[2] += 1
        return False


#: The loggers the server's modules and websockets' server write to.
SERVER_LOGGERS = ("pluv_widget.server", "pluv_widget.server.redis", "websockets.server")


def install(per_minute: int, loggers: tuple[str, ...] = SERVER_LOGGERS) -> None:
    """Put one :class:`RepeatFilter` on each of ``loggers`` (the loggers the server's own modules
    and websockets' server write to; a filter on a logger sees the records logged on it)."""
    for name in loggers:
        logger = logging.getLogger(name)
        existing = [f for f in logger.filters if isinstance(f, RepeatFilter)]
        if existing:
            existing[0].per_minute = per_minute  # one filter per process: the last server's setting
        else:
            logger.addFilter(RepeatFilter(per_minute))

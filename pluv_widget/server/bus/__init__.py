"""How server processes sharing rooms reach each other: the :class:`PubSub` seam and its backends.

* :mod:`.base` — the interface (pluv's ``AbstractPubSub`` shape).
* :mod:`.local` — between the servers of one process (the default).
* :mod:`.redis` — between processes over Redis pub/sub (imported on first use).
"""

from typing import TYPE_CHECKING, Any

from .base import Handler as Handler
from .base import PubSub as PubSub
from .local import LocalPubSub as LocalPubSub

if TYPE_CHECKING:
    from .redis import RedisPubSub as RedisPubSub


def __getattr__(name: str) -> Any:
    if name == "RedisPubSub":  # the Redis client is imported only by those who use it
        from .redis import RedisPubSub

        return RedisPubSub
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

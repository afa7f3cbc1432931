"""Where room storage lives: the :class:`Persistence` seam and its backends, one per module.

* :mod:`.base` — the interface (pluv's ``AbstractPersistence`` shape) and :class:`StorageUnavailableError`.
* :mod:`.memory` — this process only; :mod:`.sqlite` — the embedded default (one file);
  :mod:`.redis` — shared by every server process on one Redis (imported on first use).
"""

from typing import TYPE_CHECKING, Any

from .base import Persistence as Persistence
from .base import Quarantined as Quarantined
from .base import StorageUnavailableError as StorageUnavailableError
from .memory import MemoryPersistence as MemoryPersistence
from .sqlite import SqlitePersistence as SqlitePersistence

if TYPE_CHECKING:
    from .redis import RedisPersistence as RedisPersistence


def __getattr__(name: str) -> Any:
    if name == "RedisPersistence":  # the Redis client is imported only by those who use it
        from .redis import RedisPersistence

        return RedisPersistence
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

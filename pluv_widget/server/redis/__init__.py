"""Rooms shared by several server processes through Redis (``pluv-widget serve --redis URL``).

:class:`RedisPersistence` keeps room storage in Redis (group commits, an atomic initial-storage
claim, compaction that keeps other processes' updates); :class:`RedisPubSub` fans room inputs
out between processes and keeps every room's members, with their presence, in Redis, with
heartbeats so a dead process's users leave. Deployment notes, timeouts and guarantees during a
Redis outage: ``docs/scaling.md``.

>>> from pluv_widget import create_io
>>> io = create_io(redis="redis://127.0.0.1:6379/0")   # or RedisPersistence(url) + RedisPubSub(url)
"""

from ._common import HEARTBEAT_S as HEARTBEAT_S
from ._common import NODE_TTL_S as NODE_TTL_S
from ._common import RETRY_S as RETRY_S
from ._common import SETTLE_S as SETTLE_S
from .persistence import RedisPersistence as RedisPersistence
from .pubsub import RedisPubSub as RedisPubSub

"""What the client hands to user code (users, changes, events, states) and what it takes.

The value types are defined with the client core that produces them and re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.client_room import ConnectionState as ConnectionState
from ..core.client_room import OthersChange as OthersChange
from ..core.client_room import ReconnectTimeout as ReconnectTimeout
from ..core.client_room import RoomEvent as RoomEvent
from ..core.client_room import ServerError as ServerError
from ..core.client_room import StorageState as StorageState
from ..core.client_room import User as User

#: A base URL (``ws://host:port``), several tried in turn (failover), or ``callable(room) -> URL``.
WsEndpoint = str | list[str] | Callable[[str], str]

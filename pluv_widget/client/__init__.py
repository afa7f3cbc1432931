"""The room client that runs in a kernel (or any Python program).

* :mod:`.client` — ``create_client`` and :class:`Client`: rooms and their shared settings.
* :mod:`.room` — :class:`Room`, the public face of one room (thin over the client core).
* :mod:`.connection` — the socket, heartbeat and retry loop driving ``core.ClientRoom``.
* :mod:`.loop` — every hand-off between threads and the client's loop; the thread contract.
* :mod:`.auth` — tokens; :mod:`.subscriptions` — ``room.subscribe.*``; :mod:`.types` — values.
"""

from .client import Client as Client
from .client import PluvClient as PluvClient
from .client import create_client as create_client
from .room import PluvRoom as PluvRoom
from .room import Room as Room
from .types import ConnectionState as ConnectionState
from .types import OthersChange as OthersChange
from .types import RoomEvent as RoomEvent
from .types import ServerError as ServerError
from .types import StorageState as StorageState
from .types import User as User

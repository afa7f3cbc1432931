"""The room server: ``create_io`` builds it, ``pluv-widget serve`` runs it.

* :mod:`.io` — ``create_io`` / :class:`PluvIO`: what you build and its public powers.
* :mod:`.config` — :class:`ServerConfig`, frozen when the server starts.
* :mod:`.room_server` — the running server; :mod:`.routes` its HTTP routes;
  :mod:`.connection` one connection start to end; :mod:`.registry` the open rooms;
  :mod:`.live_room` one room's I/O around the sans-I/O ``core.ServerRoom``.
* :mod:`.tokens`, :mod:`.procedures`, :mod:`.hooks`; :mod:`.cli` (``pluv-widget``).
* The two seams: :mod:`.storage` (memory, SQLite, Redis) and :mod:`.bus` (local, Redis).
"""

from .bus import LocalPubSub as LocalPubSub
from .bus import PubSub as PubSub
from .config import ServerConfig as ServerConfig
from .hooks import Context as Context
from .io import PluvIO as PluvIO
from .io import create_io as create_io
from .storage import MemoryPersistence as MemoryPersistence
from .storage import Persistence as Persistence
from .storage import SqlitePersistence as SqlitePersistence
from .storage import StorageUnavailableError as StorageUnavailableError
from .tokens import TokenRequest as TokenRequest

"""The room server: ``create_io`` builds it, ``pluv-widget serve`` runs it."""

from .io import Context as Context
from .io import PluvIO as PluvIO
from .io import TokenRequest as TokenRequest
from .io import create_io as create_io
from .persistence import MemoryPersistence as MemoryPersistence
from .persistence import Persistence as Persistence
from .pubsub import LocalPubSub as LocalPubSub
from .pubsub import PubSub as PubSub
from .sqlite import SqlitePersistence as SqlitePersistence

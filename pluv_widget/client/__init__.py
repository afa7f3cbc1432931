"""The room client that runs in a kernel (or any Python program)."""

from .client import PluvClient as PluvClient
from .client import create_client as create_client
from .room import PluvRoom as PluvRoom
from .types import ConnectionState as ConnectionState
from .types import OthersChange as OthersChange
from .types import RoomEvent as RoomEvent
from .types import ServerError as ServerError
from .types import StorageState as StorageState
from .types import User as User

"""pluv-widget: real-time rooms for Jupyter notebooks — presence, events and shared CRDT storage.

The client follows pluv.io's API (``create_client``, ``create_room``, ``enter``, ``leave``), the
server is built with ``create_io`` and run with ``pluv-widget serve``, and ``RoomWidget("room")``
puts a room in a notebook.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from . import crdt as crdt
from .client import ConnectionState as ConnectionState
from .client import OthersChange as OthersChange
from .client import PluvClient as PluvClient
from .client import PluvRoom as PluvRoom
from .client import RoomEvent as RoomEvent
from .client import ServerError as ServerError
from .client import StorageState as StorageState
from .client import User as User
from .client import create_client as create_client
from .errors import AuthorizationError as AuthorizationError
from .errors import MutedError as MutedError
from .errors import PermissionDenied as PermissionDenied
from .errors import ProcedureError as ProcedureError
from .errors import RoomClosedError as RoomClosedError
from .errors import RoomLockedError as RoomLockedError
from .errors import StorageLoadingError as StorageLoadingError
from .protocol import CloseCode as CloseCode
from .protocol import ErrorCode as ErrorCode
from .protocol import Limits as Limits

if TYPE_CHECKING:
    from .server import create_io as create_io
    from .widget import RoomWidget as RoomWidget


def __getattr__(name: str) -> Any:
    # Imported on first use: the server never pays for anywidget, a kernel with a widget never
    # pays for the server (SQLite, PyJWT).
    if name == "RoomWidget":
        from .widget import RoomWidget

        return RoomWidget
    if name == "create_io":
        from .server import create_io

        return create_io
    raise AttributeError(f"module 'pluv_widget' has no attribute {name!r}")

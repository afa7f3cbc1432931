"""pluv-widget: real-time rooms for Jupyter notebooks — presence, events and shared CRDT storage.

The client follows pluv.io's API (``create_client``, ``create_room``, ``enter``, ``leave``), the
server is built with ``create_io`` and run with ``pluv-widget serve``, and ``RoomWidget("room")``
puts a room in a notebook.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any  # noqa: E402

from . import crdt as crdt  # noqa: E402
from .protocol import CloseCode as CloseCode  # noqa: E402
from .protocol import ErrorCode as ErrorCode  # noqa: E402
from .protocol import Limits as Limits  # noqa: E402
from .server import create_io as create_io  # noqa: E402
from .client import ConnectionState as ConnectionState  # noqa: E402
from .client import OthersChange as OthersChange  # noqa: E402
from .client import PluvClient as PluvClient  # noqa: E402
from .client import PluvRoom as PluvRoom  # noqa: E402
from .client import RoomEvent as RoomEvent  # noqa: E402
from .client import ServerError as ServerError  # noqa: E402
from .client import StorageState as StorageState  # noqa: E402
from .client import User as User  # noqa: E402
from .client import create_client as create_client  # noqa: E402
from .errors import AuthorizationError as AuthorizationError  # noqa: E402
from .errors import RoomClosedError as RoomClosedError  # noqa: E402
from .errors import StorageLoadingError as StorageLoadingError  # noqa: E402

if TYPE_CHECKING:
    from .widget import RoomWidget as RoomWidget


def __getattr__(name: str) -> Any:
    if name == "RoomWidget":  # imported on first use: the server never pays for anywidget
        from .widget import RoomWidget

        return RoomWidget
    raise AttributeError(f"module 'pluv_widget' has no attribute {name!r}")

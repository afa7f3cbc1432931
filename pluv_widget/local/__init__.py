"""The local server that "nothing configured" falls back on: its launcher and its discovery.

``RoomWidget("my-room")`` with no URL calls :func:`ensure_local_server`: when nothing answers on
``127.0.0.1:1999`` it starts ``python -m pluv_widget serve`` as a detached process (its own session,
so it outlives the kernel that started it) shared by every kernel on the machine. Each kernel is
still its own person there; the server only gives them a room to meet in.

Locations (``$PLUV_WIDGET_HOME``, default ``~/.pluv-widget``):

* ``server.log`` — the server's log (appended to);
* ``server.json`` — pid, port, URL, log and data locations of the server this package started;
* ``data/`` — the server's SQLite store, so rooms survive a server restart;
* ``server.lock`` — held while starting, so two kernels starting at once start one server.

``$PLUV_WIDGET_PORT`` (default 1999) moves the local server to another port.

The server is recognised by its ``/health`` answer (``{"server": "pluv-widget", "protocol": 1}``);
anything else on the port is an error, never silently shared. An older pluv-widget's server that
this machine started is replaced when idle (see :func:`ensure_local_server`), so upgrading the
package never strands a kernel. These functions print nothing: ``pluv-widget status`` /
``pluv-widget stop`` print what they return.

This package imports neither :mod:`pluv_widget.server` nor SQLite nor PyJWT: a kernel that shows a
widget pays for none of them.
"""

from .errors import IncompatibleServerError as IncompatibleServerError
from .errors import LocalServerError as LocalServerError
from .errors import PortTakenError as PortTakenError
from .files import local_home as local_home
from .files import local_port as local_port
from .launcher import ensure_local_server as ensure_local_server
from .launcher import local_status as local_status
from .launcher import stop_local_server as stop_local_server

__all__ = [
    "IncompatibleServerError",
    "LocalServerError",
    "PortTakenError",
    "ensure_local_server",
    "local_home",
    "local_port",
    "local_status",
    "stop_local_server",
]

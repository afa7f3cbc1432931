"""``RoomWidget``: a room in a notebook cell.

>>> from pluv_widget import RoomWidget
>>> w = RoomWidget("my-room")  # doctest: +SKIP

* :mod:`.room_widget` — ``RoomWidget``: a client room ⇄ traitlets and the ESM view;
* :mod:`.feed` — the messages as a snapshot, then deltas, for the browser;
* :mod:`.messages` — a message's shape; :mod:`.presence` — the presence a widget shows;
* :mod:`.identity` — display name and colour; :mod:`.settings` — URL, join code, retries;
* :mod:`.throttle` — coalesced pushes; :mod:`.registry` — one widget per room per session (kernel);
* :mod:`.classroom` — the server's classroom view and :class:`Poll`; :mod:`.pulse` — a student's
  progress from IPython's ``post_run_cell``; :mod:`.follow` — the teacher's position;
  :mod:`.export` — a lesson's record as JSON or CSV; :mod:`.browser_calls` — what the view may call;
  :mod:`.checkup` — ``RoomWidget.doctor()``: the kernel's loop, the comm round trip, versions.

Importing this package imports neither :mod:`pluv_widget.server` nor SQLite nor PyJWT.
"""

from .classroom import Poll as Poll
from .identity import PALETTE as PALETTE
from .identity import color_for as color_for
from .identity import display_name as display_name
from .messages import MAX_MESSAGE_CHARS as MAX_MESSAGE_CHARS
from .messages import MESSAGES as MESSAGES
from .presence import WidgetPresence as WidgetPresence
from .room_widget import PUSH_INTERVAL_S as PUSH_INTERVAL_S
from .room_widget import STATIC as STATIC
from .room_widget import RoomWidget as RoomWidget
from .settings import reconnect_backoff_ms as reconnect_backoff_ms
from .settings import token_endpoint as token_endpoint

__all__ = ["Poll", "RoomWidget", "WidgetPresence", "color_for", "display_name"]

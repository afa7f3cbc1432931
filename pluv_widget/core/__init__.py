"""The sans-I/O room cores: they decide, never do I/O (no sockets, no asyncio, no clocks).

* :class:`ServerRoom` (:mod:`.server_room`) — one room on the server; returns
  :mod:`.actions` for the adapter to carry out.
* :class:`ClientRoom` (:mod:`.client_room`) — one room as a client sees it: presence, the sync
  exchange, pending edits, undo scope and the reconnect decision.
* :mod:`.envelopes` — what server processes tell each other about a shared room.
* :mod:`.membership` — who is in a room, and the one presence merge.
"""

from .actions import Action as Action
from .actions import Commit as Commit
from .actions import Invoke as Invoke
from .actions import Mirror as Mirror
from .actions import Resync as Resync
from .actions import Send as Send
from .client_room import ClientRoom as ClientRoom
from .envelopes import Envelope as Envelope
from .membership import Member as Member
from .membership import Membership as Membership
from .membership import merge_presence as merge_presence
from .server_room import ServerRoom as ServerRoom

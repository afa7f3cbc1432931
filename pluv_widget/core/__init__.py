"""The sans-I/O room core: decides, never does I/O."""

from ..protocol import read_sync_frame as read_sync_frame
from ..protocol import sync_frame as sync_frame
from .room import Action as Action
from .room import Commit as Commit
from .room import Invoke as Invoke
from .room import Member as Member
from .room import Mirror as Mirror
from .room import RoomCore as RoomCore
from .room import Send as Send

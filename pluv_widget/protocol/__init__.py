"""The wire, whole: every message both sides exchange, its encoder and its decoder.

Nothing outside this package parses a frame or spells a field name of the wire. Untrusted bytes
become typed values here, or are refused here with a documented code.

* :mod:`.messages` — the text (JSON) messages: ``join``, ``welcome``, ``joined``, ``left``,
  ``presence``, ``event``, ``error``.
* :mod:`.sync` — binary frames: Yjs sync messages as y-websocket frames them.
* :mod:`.codes` — close codes and error codes. :mod:`.limits` — the server's limits.
* :mod:`.names` — room and event names. :mod:`.routes` — URLs and the HTTP routes' answers.
"""

from . import sync as sync
from ._compat import Member as Member
from ._compat import decode as decode
from ._compat import encode as encode
from ._compat import error_message as error_message
from ._compat import parse_join as parse_join
from ._compat import read_sync_frame as read_sync_frame
from ._compat import sync_frame as sync_frame
from .codec import ProtocolError as ProtocolError
from .codec import decode_object as decode_object
from .codec import encode_json as encode_json
from .codec import json_size as json_size
from .codes import AUTH_CLOSE_CODES as AUTH_CLOSE_CODES
from .codes import FINAL_CLOSE_CODES as FINAL_CLOSE_CODES
from .codes import CloseCode as CloseCode
from .codes import ErrorCode as ErrorCode
from .constants import DEFAULT_HOST as DEFAULT_HOST
from .constants import DEFAULT_PORT as DEFAULT_PORT
from .constants import PROTOCOL_VERSION as PROTOCOL_VERSION
from .constants import SERVER_NAME as SERVER_NAME
from .limits import Limits as Limits
from .messages import ClientMessage as ClientMessage
from .messages import ErrorMessage as ErrorMessage
from .messages import Event as Event
from .messages import Join as Join
from .messages import Joined as Joined
from .messages import Left as Left
from .messages import MemberInfo as MemberInfo
from .messages import PresenceUpdate as PresenceUpdate
from .messages import ServerMessage as ServerMessage
from .messages import Welcome as Welcome
from .messages import decode_client_message as decode_client_message
from .messages import decode_server_message as decode_server_message
from .names import EVENT_NAME_PATTERN as EVENT_NAME_PATTERN
from .names import ROOM_NAME_PATTERN as ROOM_NAME_PATTERN
from .names import check_event_name as check_event_name
from .names import check_room_name as check_room_name
from .names import is_valid_event_name as is_valid_event_name
from .names import is_valid_room_name as is_valid_room_name
from .routes import RESERVED_ROOM_NAMES as RESERVED_ROOM_NAMES
from .sync import EMPTY_UPDATE as EMPTY_UPDATE
from .sync import SyncMessage as SyncMessage
from .sync import SyncStep as SyncStep
from .sync import decode_sync as decode_sync

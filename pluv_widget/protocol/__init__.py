"""The wire, whole: every message both sides exchange, its encoder and its decoder.

Nothing outside this package parses a frame or spells a field name of the wire. Untrusted bytes
become typed values here, or are refused here with a documented code.

* :mod:`.messages` — the text (JSON) messages: ``join``, ``welcome``, ``joined``, ``left``,
  ``presence``, ``event``, ``call``, ``result``, ``error``, ``class``.
* :mod:`.sync` — binary frames: Yjs sync messages as y-websocket frames them.
* :mod:`.codes` — close codes and error codes. :mod:`.limits` — the server's limits.
* :mod:`.names` — room and event names. :mod:`.roles` — ``teacher``, ``student``, ``observer``.
  :mod:`.routes` — URLs and the HTTP routes' answers.
"""

from . import sync as sync
from .codec import ProtocolError as ProtocolError
from .codec import decode_object as decode_object
from .codec import encode_json as encode_json
from .codec import json_size as json_size
from .codes import AUTH_CLOSE_CODES as AUTH_CLOSE_CODES
from .codes import FINAL_CLOSE_CODES as FINAL_CLOSE_CODES
from .codes import PERMANENT_STORAGE_REFUSALS as PERMANENT_STORAGE_REFUSALS
from .codes import PERMISSION_REFUSALS as PERMISSION_REFUSALS
from .codes import TRANSIENT_STORAGE_REFUSALS as TRANSIENT_STORAGE_REFUSALS
from .codes import CloseCode as CloseCode
from .codes import ErrorCode as ErrorCode
from .constants import COMPACT_LISTS as COMPACT_LISTS
from .constants import DEFAULT_HOST as DEFAULT_HOST
from .constants import DEFAULT_PORT as DEFAULT_PORT
from .constants import PROTOCOL_VERSION as PROTOCOL_VERSION
from .constants import SERVER_NAME as SERVER_NAME
from .constants import SUPPORTED_PROTOCOLS as SUPPORTED_PROTOCOLS
from .limits import Limits as Limits
from .messages import Call as Call
from .messages import ClassView as ClassView
from .messages import ClientMessage as ClientMessage
from .messages import ErrorMessage as ErrorMessage
from .messages import Event as Event
from .messages import Join as Join
from .messages import Joined as Joined
from .messages import Left as Left
from .messages import MemberInfo as MemberInfo
from .messages import MembersJoined as MembersJoined
from .messages import MembersLeft as MembersLeft
from .messages import PresenceBatch as PresenceBatch
from .messages import PresenceUpdate as PresenceUpdate
from .messages import Result as Result
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
from .roles import DEFAULT_ROLE as DEFAULT_ROLE
from .roles import OBSERVER as OBSERVER
from .roles import ROLES as ROLES
from .roles import STUDENT as STUDENT
from .roles import TEACHER as TEACHER
from .roles import Role as Role
from .roles import check_role as check_role
from .roles import is_role as is_role
from .roles import role_of as role_of
from .routes import RESERVED_ROOM_NAMES as RESERVED_ROOM_NAMES
from .sync import EMPTY_UPDATE as EMPTY_UPDATE
from .sync import SyncMessage as SyncMessage
from .sync import SyncStep as SyncStep
from .sync import decode_sync as decode_sync

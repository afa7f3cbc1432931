"""Numbers both sides must agree on. Each is named here once."""

#: Bumped whenever a message changes shape; ``join`` carries it and the server refuses others
#: with ``CloseCode.PROTOCOL_ERROR``. Version 1: the protocol of pluv-widget 0.1. Version 2: the
#: protected document (binary message type ``PROTECTED_MESSAGE``, read-only for clients), ``call`` /
#: ``result`` / ``error`` with an ``id`` (typed procedures with replies), the room's
#: ``generation`` and its protected roots in ``welcome`` (and the client's generation in ``join``),
#: the error codes ``forbidden``, ``muted``, ``room_locked``, ``unknown_procedure`` and the close
#: codes 4009 (removed) and 4010 (room reset). Version 3: compact lists — ``welcome``'s ``others``
#: and ``joined``'s ``members`` as ``[connection_id, user, presence]``, presence ``updates`` as
#: ``[connection_id, patch]``; the leaves of a tick in one ``left`` with ``connection_ids``.
PROTOCOL_VERSION = 3
#: The versions a server accepts in ``join``. A version-1 or -2 client (a kernel still running an
#: older pluv-widget) works unchanged: it is sent lists as objects, it never asks for the protected
#: document (1), never sends ``call`` (1), and ignores the fields ``welcome`` gained.
SUPPORTED_PROTOCOLS = frozenset({1, 2, 3})
#: The first version that reads compact lists.
COMPACT_LISTS = 3
#: What ``/health`` says in ``server``, so a port held by another program is never mistaken for ours.
SERVER_NAME = "pluv-widget"
#: The port of ``pluv-widget serve`` and of the embedded local server.
DEFAULT_PORT = 1999
DEFAULT_HOST = "127.0.0.1"

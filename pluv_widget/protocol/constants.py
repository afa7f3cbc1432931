"""Numbers both sides must agree on. Each is named here once."""

#: Bumped whenever a message changes shape; ``join`` carries it and the server refuses others
#: with ``CloseCode.PROTOCOL_ERROR``. Version 1: the protocol of pluv-widget 0.1.
PROTOCOL_VERSION = 1
#: What ``/health`` says in ``server``, so a port held by another program is never mistaken for ours.
SERVER_NAME = "pluv-widget"
#: The port of ``pluv-widget serve`` and of the embedded local server.
DEFAULT_PORT = 1999
DEFAULT_HOST = "127.0.0.1"

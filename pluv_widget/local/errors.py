"""What can go wrong finding or starting the local server."""

from __future__ import annotations

from ..errors import PluvError


class LocalServerError(PluvError, RuntimeError):
    """The local server could not be found, started or stopped."""


class PortTakenError(LocalServerError):
    """Something that is not a pluv-widget server answers on the port."""


class IncompatibleServerError(LocalServerError):
    """A pluv-widget server speaking another protocol version answers on the port, and it cannot
    be replaced (someone else started it, or it still has connections)."""

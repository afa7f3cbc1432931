"""Exceptions a user of pluv-widget may catch."""

from __future__ import annotations


class PluvError(Exception):
    """Base class of pluv-widget's own errors."""


class AuthorizationError(PluvError):
    """The server (or the auth endpoint) refused this client's token.

    ``code`` is the WebSocket close code (see ``CloseCode``) or the HTTP status of the auth
    endpoint; ``reason`` says why in words.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"authorization failed ({code}): {reason}")
        self.code = code
        self.reason = reason


class RoomClosedError(PluvError):
    """The room was left, or the server refused it for good (protocol error, invalid room)."""


class StorageLoadingError(PluvError):
    """Storage was read or written before its first sync with the server."""

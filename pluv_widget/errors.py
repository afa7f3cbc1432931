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


class StorageUnavailableError(PluvError, RuntimeError):
    """Server: a shared store cannot be reached now, so a room cannot be loaded or claimed here yet.

    The server closes such a connection with ``CloseCode.TRY_AGAIN_LATER`` and the client
    retries; rooms already open keep serving (see ``docs/scaling.md``). A custom persistence
    raises it for the same effect.
    """


class TokenError(PluvError):
    """Server: a refused room token; ``code`` is the close code the connection gets."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ServerConfigError(PluvError, ValueError):
    """Server: ``create_io`` options that cannot work together (a join code without a secret,
    tokens without a secret)."""


class ServerNotRunningError(PluvError, RuntimeError):
    """Server: a call that needs the running server (``io.broadcast``, ``io.storage_json``...)
    before ``await io.start()``."""


class InvalidNameError(PluvError, ValueError):
    """A room or event name that is not valid (also a ``ValueError``)."""


class UsageError(PluvError, ValueError):
    """A call the client cannot honour as made: a required argument missing, another client's room,
    an unknown subscription (also a ``ValueError``)."""


class UnknownStorageRootError(PluvError, KeyError):
    """``room.storage(key)`` for a root the room's storage declaration does not have (also a ``KeyError``)."""


class ProcedureError(PluvError):
    """The server refused a ``call`` (``room.call``, the widget's moderation methods): ``code`` is
    its error code (see ``ErrorCode``), ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PermissionDenied(ProcedureError):
    """``forbidden``: the user's role may not do this (or, raised at once, the local role already
    forbids it). Its subclasses :class:`MutedError` and :class:`RoomLockedError` are the other
    refusals of a user's right to write."""

    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(code, message)


class MutedError(PermissionDenied):
    """``muted``: a teacher muted this user; read-only until unmuted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "muted")


class RoomLockedError(PermissionDenied):
    """``room_locked``: a teacher locked the room; read-only for students."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "room_locked")


def procedure_error(code: str, message: str) -> ProcedureError:
    """The exception of a refused call's ``code``."""
    if code == "forbidden":
        return PermissionDenied(message)
    if code == "muted":
        return MutedError(message)
    if code == "room_locked":
        return RoomLockedError(message)
    return ProcedureError(code, message)

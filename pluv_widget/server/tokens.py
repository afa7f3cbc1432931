"""Signed room tokens (JWT, HS256): who a connection is and which room it may enter."""

from __future__ import annotations

import time
from typing import Any

import jwt

from ..protocol import CloseCode

ALGORITHM = "HS256"


class TokenError(Exception):
    """A refused token; ``code`` is the close code the connection gets."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def create_token(secret: str, *, room: str, user: dict[str, Any], max_age: float) -> str:
    """Mint a token for ``user`` (a dict with a string ``id``) to enter ``room``.

    ``max_age`` is in **seconds** (pluv v5 takes it in the wrong unit; ours is tested).
    """
    if not isinstance(user.get("id"), str) or not user["id"]:
        raise ValueError("a token's user needs a non-empty string 'id'")
    now = int(time.time())
    claims = {"room": room, "user": user, "sub": user["id"], "iat": now, "exp": now + int(max_age)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None, *, room: str) -> dict[str, Any]:
    """Return the token's user, or raise :class:`TokenError` saying why it is refused."""
    if not token:
        raise TokenError(CloseCode.TOKEN_MISSING, "this server requires a token (?token=...)")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "room", "user"]})
    except jwt.ExpiredSignatureError:
        raise TokenError(CloseCode.TOKEN_EXPIRED, "token expired") from None
    except jwt.InvalidTokenError as error:
        raise TokenError(CloseCode.TOKEN_INVALID, f"invalid token: {error}") from None
    if claims["room"] != room:
        raise TokenError(CloseCode.TOKEN_WRONG_ROOM, f"token is for room {claims['room']!r}, not {room!r}")
    user = claims["user"]
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        raise TokenError(CloseCode.TOKEN_INVALID, "invalid token: no user id")
    return user

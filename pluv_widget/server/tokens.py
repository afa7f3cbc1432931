"""Signed room tokens (JWT, HS256): who a connection is and which room it may enter."""

from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel

from ..errors import ServerConfigError
from ..errors import TokenError as TokenError
from ..protocol import DEFAULT_ROLE, CloseCode, check_role, check_room_name, is_role

ALGORITHM = "HS256"
#: The ``room`` claim of a server-scoped token (``/token`` with a teacher code and no room): the
#: HTTP API takes it for every room; no room's socket accepts it.
SERVER_SCOPE = "*"
#: A token's lifetime when ``create_io(token_max_age_s=...)`` does not say (seconds).
DEFAULT_TOKEN_MAX_AGE_S = 3600.0
#: The shortest secret a server accepts (bytes, UTF-8): HS256 with less is guessed offline.
MIN_SECRET_BYTES = 32
#: The file in the data directory that keeps a generated secret (mode 0600).
SECRET_FILE = "secret"
#: Time claims that must be numbers when present.
_TIME_CLAIMS = ("exp", "nbf", "iat")


def check_secret(secret: str) -> None:
    """Refuse a secret shorter than :data:`MIN_SECRET_BYTES` with a clear error."""
    size = len(secret.encode("utf-8", "surrogatepass"))
    if size < MIN_SECRET_BYTES:
        raise ServerConfigError(
            f"the secret is {size} bytes; at least {MIN_SECRET_BYTES} are needed (a short secret is guessed "
            "from one token offline). Generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def stored_secret(data_dir: Path) -> str:
    """The secret kept in ``data_dir/secret``, generated (mode 0600) on first use, so that a
    restarted server still accepts the tokens it handed out."""
    path = data_dir / SECRET_FILE
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process generated it meanwhile: use theirs
            return stored_secret(data_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secret + "\n")
        return secret
    check_secret(secret)
    return secret


@dataclass(frozen=True)
class TokenRequest:
    """A request to the ``/token`` route, for a deployment's own ``mint_user`` hook."""

    room: str
    name: str
    join_code: str | None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def issue_token(
    secret: str | None,
    *,
    room: str,
    user: dict[str, Any] | BaseModel,
    max_age: float,
    user_model: type[BaseModel] | None = None,
) -> str:
    """``io.create_token``: check the room and the user (against ``user_model``), then sign.

    The user's ``role`` must be ``teacher``, ``student`` or ``observer``; without one it is a
    student (the least a code-less minter can mean)."""
    if secret is None:
        raise ServerConfigError("create_io(secret=...) is needed to create tokens")
    if room != SERVER_SCOPE:
        check_room_name(room)
    data = user.model_dump(mode="json") if isinstance(user, BaseModel) else dict(user)
    role = check_role(DEFAULT_ROLE if data.get("role") is None else data["role"])  # teacher, student or observer
    if user_model is not None:
        data = user_model.model_validate(data).model_dump(mode="json")
    data["role"] = role
    return create_token(secret, room=room, user=data, max_age=max_age)


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
        # The time claims are checked below, once they are known to be numbers: PyJWT takes
        # int("9999999999") and would accept a string ``exp``.
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={
            "require": ["exp", "room", "user"], "verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidTokenError as error:
        raise TokenError(CloseCode.TOKEN_INVALID, f"invalid token: {error}") from None
    for claim in _TIME_CLAIMS:
        value = claims.get(claim)
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if claim in claims and not number:
            raise TokenError(CloseCode.TOKEN_INVALID, f"invalid token: {claim} is not a number")
    now = time.time()
    if claims["exp"] <= now:
        raise TokenError(CloseCode.TOKEN_EXPIRED, "token expired")
    if "nbf" in claims and claims["nbf"] > now:
        raise TokenError(CloseCode.TOKEN_INVALID, "invalid token: not valid yet (nbf)")
    if claims["room"] != room:
        raise TokenError(CloseCode.TOKEN_WRONG_ROOM, f"token is for room {claims['room']!r}, not {room!r}")
    user = claims["user"]
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        raise TokenError(CloseCode.TOKEN_INVALID, "invalid token: no user id")
    if "role" not in user:  # signed by code that predates roles: a student
        user["role"] = DEFAULT_ROLE
    elif not is_role(user["role"]):
        raise TokenError(CloseCode.TOKEN_INVALID, f"invalid token: unknown role {str(user['role'])[:32]!r}")
    return user

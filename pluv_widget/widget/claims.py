"""The widget's name claims, kept on this machine so a student rejoins as themself.

Under join codes the first ``/token`` for a name returns a per-person secret (``claim``); anyone
asking for that name later without it is refused (409). The widget keeps each claim in
``$PLUV_WIDGET_HOME/claims.json`` (mode 0600), keyed by the server's URL and the name (NFKC,
case-folded), and sends it back with every token request: the same student on the same machine
is the same person (same id) after a kernel restart, on any day, as long as the server keeps
its storage.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import unicodedata
from pathlib import Path
from ssl import SSLContext

from ..client.auth import fetch_answer
from ..local.files import local_home
from ..protocol.routes import CLAIM_PARAM, claim_from_answer, with_query

CLAIMS_FILE = "claims.json"
_lock = threading.Lock()  # kernels on one machine may race; this keeps one process's writes whole


def claims_path() -> Path:
    return local_home() / CLAIMS_FILE


def claim_key(server: str, name: str) -> str:
    """``<server URL> <name>``, the name as the server compares it (NFKC, case-folded, one space)."""
    folded = " ".join(unicodedata.normalize("NFKC", name).casefold().split())
    return f"{server.rstrip('/')} {folded}"


def read_claims() -> dict[str, str]:
    try:
        stored = json.loads(claims_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {key: value for key, value in stored.items() if isinstance(key, str) and isinstance(value, str)}


def load_claim(server: str, name: str) -> str | None:
    return read_claims().get(claim_key(server, name))


def save_claim(server: str, name: str, claim: str) -> None:
    """Keep ``claim`` (mode 0600, replaced atomically)."""
    with _lock:
        claims = read_claims()
        key = claim_key(server, name)
        if claims.get(key) == claim:
            return
        claims[key] = claim
        path = claims_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{CLAIMS_FILE}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(claims, file, indent=1, sort_keys=True)
        os.replace(temporary, path)


class ClaimingEndpoint:
    """An ``auth_endpoint`` callable: the token route's URL plus this machine's claim on the name,
    which it saves from each answer. Refusals raise as ``fetch_token`` says (409 included)."""

    def __init__(self, url: str, *, server: str, name: str, ssl: SSLContext | None = None) -> None:
        self.url = url
        self.server = server
        self.name = name
        self.ssl = ssl  # verifies an https:// token route (a private CA)
        self._fetching = threading.Lock()  # one request at a time: the second sends the first's claim

    def __repr__(self) -> str:
        return f"ClaimingEndpoint({self.url!r})"

    async def __call__(self, room: str) -> str:
        return await asyncio.to_thread(self.fetch, room)

    def fetch(self, room: str) -> str:
        """A token for ``room`` (blocking), keeping the claim the answer carries."""
        with self._fetching:
            url = with_query(self.url, room=room)
            claim = load_claim(self.server, self.name)
            if claim:
                url = with_query(url, **{CLAIM_PARAM: claim})
            answer = fetch_answer(url, self.ssl)
            fresh = claim_from_answer(answer)
            if fresh and fresh != claim:
                save_claim(self.server, self.name, fresh)
            return str(answer["token"])

"""The server's token: created on first start, shown once, stored only as a hash, rotatable.

A request is let in when it carries the token as ``Authorization: Bearer <token>`` (scripts, the API) or in
the ``corral_token`` cookie that ``POST /login`` sets (the browser: HttpOnly, SameSite=Strict, so another
site can neither read it nor make the browser send it).

>>> import tempfile, pathlib
>>> store = TokenStore(pathlib.Path(tempfile.mkdtemp()) / "server-token")
>>> token = store.ensure()
>>> store.ensure() is None, store.check(token), store.check("guess")
(True, True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

COOKIE = "corral_token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """The SHA-256 of the server's token in a file only its owner can read (``0600``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest: str | None = None

    def ensure(self) -> str | None:
        """Create a token if there is none and return it (the only time it is shown); ``None`` if one
        exists."""
        if self._load() is not None:
            return None
        return self.rotate()

    def rotate(self) -> str:
        """Replace the token by a new one (the old one stops working at once) and return it."""
        token = secrets.token_urlsafe(32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(_digest(token) + "\n")
        os.replace(tmp, self.path)
        self._digest = _digest(token)
        return token

    def _load(self) -> str | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        self._digest = text if len(text) == 64 else None
        return self._digest

    def check(self, token: str | None) -> bool:
        """Whether ``token`` is the current one (compared in constant time)."""
        if not token or len(token) > 200:
            return False
        digest = self._load()
        return digest is not None and hmac.compare_digest(digest, _digest(token))

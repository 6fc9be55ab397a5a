"""The page's sessions: a random id in an HttpOnly cookie, and on the server only its SHA-256.

The id is 256 random bits (OWASP Session Management Cheat Sheet asks for at least 64 of entropy), so
a plain SHA-256 is enough to keep a copy of the file from being replayed. Sessions are kept in
state_dir so that a restart of the service (a new image, say) does not log the page out; sessions made
under another password are dropped when the file is read. Each session carries its own CSRF token
(OWASP's synchronizer token pattern), which the page sends back on every change it makes.

Only the event loop touches a store, so it needs no lock.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from service.config._base import write_private

logger = logging.getLogger(__name__)

FILE_NAME = "http-sessions.json"
# Browsers and devices that log in; past this the session closest to its end goes first.
MAX_SESSIONS = 64


@dataclass
class Session:
    key: str
    csrf_token: str
    expires_at: float


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    password: str
    sessions: dict[str, tuple[str, float]]


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, state_dir: Path, ttl_s: float, password_fingerprint: str) -> None:
        self.path = state_dir / FILE_NAME
        self.ttl_s = ttl_s
        self.fingerprint = password_fingerprint
        self._sessions: dict[str, Session] = self._load()

    def _load(self) -> dict[str, Session]:
        try:
            stored = _Stored.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValidationError):
            # Failing closed costs a login, nothing more.
            logger.warning("ignoring the unreadable session file %s: the page asks for the password again", self.path)
            return {}
        if stored.password != self.fingerprint:
            return {}
        now = time.time()
        return {k: Session(k, csrf, exp) for k, (csrf, exp) in stored.sessions.items() if exp > now}

    def _save(self) -> None:
        stored = _Stored(
            password=self.fingerprint, sessions={k: (s.csrf_token, s.expires_at) for k, s in self._sessions.items()}
        )
        try:
            write_private(self.path, stored.model_dump_json() + "\n")
        except OSError as exc:
            # The sessions still work until the next restart; only their survival of it is lost.
            logger.warning("cannot keep the page's sessions in %s: %s", self.path, exc.strerror or exc)

    def create(self) -> tuple[str, Session]:
        """A new session and the id that goes into the cookie (and nowhere else)."""
        self._drop_expired()
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[min(self._sessions.values(), key=lambda s: s.expires_at).key]
        session_id = secrets.token_urlsafe(32)
        session = Session(_key(session_id), secrets.token_urlsafe(32), time.time() + self.ttl_s)
        self._sessions[session.key] = session
        self._save()
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(_key(session_id))
        if session is None:
            return None
        if session.expires_at <= time.time():
            self.end(session)
            return None
        return session

    def is_live(self, session: Session) -> bool:
        """Not ended, not expired: for what outlasts the request that checked it (an event stream)."""
        return self._sessions.get(session.key) is session and session.expires_at > time.time()

    def renew_if_due(self, session: Session) -> bool:
        """Pushes the end out again once half the lifetime has passed: a page in use stays logged in,
        and the file is written at most twice a lifetime per session."""
        now = time.time()
        if session.expires_at - now > self.ttl_s / 2:
            return False
        session.expires_at = now + self.ttl_s
        self._save()
        return True

    def end(self, session: Session) -> None:
        if self._sessions.pop(session.key, None) is not None:
            self._save()

    def _drop_expired(self) -> None:
        now = time.time()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]

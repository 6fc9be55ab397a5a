"""The page's password: scrypt hashes, and the file in state_dir that keeps the active one.

scrypt is in the standard library (hashlib), so the service needs no new dependency for it. The cost
is one of OWASP's equivalent scrypt settings (Password Storage Cheat Sheet): N=2^14, r=8, p=5, which
holds 16 MiB per verification rather than the 128 MiB of N=2^17, p=1, a lot on a small gateway.
Hashes are written in the PHC string format (`$scrypt$ln=14,r=8,p=5$<salt>$<hash>`).

The file holds only the hash of the active password and where the password came from: `generated`
(written to a 0600 file at the first start) or `configured` (api.password). A configured password replaces
the file's hash; once it is unset again, a new password is generated, rather than the old configured
one working on unseen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from service.config._base import write_private

LOG_N, BLOCK, PARALLEL = 14, 8, 5
_KEY_BYTES = 32
_SALT_BYTES = 16
# What scrypt needs is 128 * r * N * p bytes at most; OpenSSL refuses to exceed maxmem.
_MAXMEM = 64 * 1024 * 1024
FILE_NAME = "http-password.json"
# A generated password, for whoever started the service: a file, never stdout, so that no log keeps it.
GENERATED_FILE_NAME = "http-password.txt"


class PasswordFileError(OSError):
    """The password file cannot be read or written: a start-up error, told in one line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=1 << LOG_N, r=BLOCK, p=PARALLEL, maxmem=_MAXMEM, dklen=_KEY_BYTES
    )
    return f"$scrypt$ln={LOG_N},r={BLOCK},p={PARALLEL}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, phc: str) -> bool:
    """True when ``password`` matches the PHC string; the cost comes from the string, so hashes made
    with other parameters keep working."""
    try:
        _, scheme, params, salt, key = phc.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        log_n, r, p = int(values["ln"]), int(values["r"]), int(values["p"])
        want = _unb64(key)
        if scheme != "scrypt" or not (1 <= log_n <= 20 and 1 <= r <= 16 and 1 <= p <= 16):
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=1 << log_n, r=r, p=p, maxmem=_MAXMEM,
                             dklen=len(want))  # fmt: skip
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(got, want)


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    source: Literal["generated", "configured"]
    hash: str


@dataclass(frozen=True)
class ActivePassword:
    hash: str
    source: Literal["generated", "configured"]
    # Set only at the start that generated it: the 0600 file the new password was written to.
    generated_file: Path | None = None

    @property
    def fingerprint(self) -> str:
        """Names this hash without revealing it: sessions made under another password are dropped."""
        return hashlib.sha256(self.hash.encode()).hexdigest()[:16]


def _read(path: Path) -> _Stored | None:
    try:
        return _Stored.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        # Failing open would let anyone in; guessing a new password would lock the owner out unseen.
        raise PasswordFileError(f"cannot read the page's password hash in {path}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "not a password file written by fer-edge (delete it to generate a new password)"
    return str(exc)


def _write(path: Path, stored: _Stored) -> None:
    try:
        write_private(path, stored.model_dump_json() + "\n")
    except OSError as exc:
        raise PasswordFileError(f"cannot write the page's password hash to {path}: {exc.strerror or exc}") from None


def active_password(state_dir: Path, configured: str | None, *, generate: bool) -> ActivePassword | None:
    """The password the login checks: the configured one, else the stored hash of a generated one,
    else (``generate``) a new one whose hash is stored; None when there is none and none may be made."""
    path = state_dir / FILE_NAME
    stored = _read(path)
    if configured is not None:
        # A generated password stops working once one is configured: its file would only mislead.
        (state_dir / GENERATED_FILE_NAME).unlink(missing_ok=True)
        if stored is not None and stored.source == "configured" and verify_password(configured, stored.hash):
            return ActivePassword(stored.hash, "configured")
        kept = _Stored(source="configured", hash=hash_password(configured))
        _write(path, kept)
        return ActivePassword(kept.hash, "configured")
    if stored is not None and stored.source == "generated":
        return ActivePassword(stored.hash, "generated")
    if not generate:
        return None
    # 144 bits, URL-safe: nothing a shell or a YAML file would mangle when it is copied.
    password = secrets.token_urlsafe(18)
    fresh = _Stored(source="generated", hash=hash_password(password))
    # The password before its hash: a crash between the two never leaves a hash nobody can log in with.
    plain = state_dir / GENERATED_FILE_NAME
    try:
        write_private(plain, password + "\n")
    except OSError as exc:
        raise PasswordFileError(f"cannot write the generated password to {plain}: {exc.strerror or exc}") from None
    _write(path, fresh)
    return ActivePassword(fresh.hash, "generated", generated_file=plain)

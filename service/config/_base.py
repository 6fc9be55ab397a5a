import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Every config section refuses unknown keys, so a typo fails at start-up instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretFileError(OSError):
    """A secret's file (mqtt.password_file, api.token_file) cannot be read, or holds no secret.

    An OSError, so that start-up reports it in one line; the message names the key, never the secret."""


def read_secret_file(path: Path, key: str, *, strip: bool = False) -> str:
    """The first line of ``path``: read when the service starts, not when the config is loaded, since
    the file may exist only where the service runs (a container's volume), not where the config is
    checked."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SecretFileError(f"{key} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        # Its own message: the decoder's would quote a byte of the file.
        raise SecretFileError(f"{key} {path}: not UTF-8 text") from None
    secret = (lines[0].strip() if strip else lines[0]) if lines else ""
    if not secret:
        raise SecretFileError(f"{key} {path}: the first line is empty")
    return secret


def write_private(path: Path, text: str) -> None:
    """Atomically, readable by the owner only (0600) from its first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

"""Where a shared store's models are found: the HTTP paths ``serve`` answers and the MQTT topic it
announces an alias on (docs/fleet.md, "Model distribution").

Both ends import the model store, so both take these from here: the server and the announcer
(``model_store.distribution``) on one side, the gateways that follow them (``service.fleet`` for the
paths, ``service.comms.topics`` for the topic) on the other.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

MODELS_PATH = "/v1/models"
# A model or file name as the store accepts one: nothing that could climb out of a directory.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_MODEL_RE = re.compile(rf"^{MODELS_PATH}/({_SEGMENT})$")
_FILE_RE = re.compile(rf"^{MODELS_PATH}/({_SEGMENT})/(\d+)/({_SEGMENT})$")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only. 0.0.0.0 and names are not."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ModelIndex:
    """``GET /v1/models/<name>``: the model's versions and aliases."""

    name: str


@dataclass(frozen=True, slots=True)
class VersionFile:
    """``GET /v1/models/<name>/<version>/<file>``: ``manifest.json`` or a file the manifest lists."""

    name: str
    version: int
    file: str


def model_path(name: str) -> str:
    return f"{MODELS_PATH}/{name}"


def file_path(name: str, version: int, file: str) -> str:
    return f"{MODELS_PATH}/{name}/{version}/{file}"


def parse_path(path: str) -> ModelIndex | VersionFile | None:
    """What a request path names below ``/v1/models/``; None for anything else, the listing included."""
    if m := _MODEL_RE.match(path):
        return ModelIndex(m.group(1))
    if m := _FILE_RE.match(path):
        return VersionFile(m.group(1), int(m.group(2)), m.group(3))
    return None


def announcement_topic(prefix: str, name: str, alias: str) -> str:
    """Retained: the version an alias names, as an ``Announcement``."""
    return f"{prefix}/models/{name}/{alias}"


class AliasEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer store may say more

    version: int
    gateways: list[str] | None = None


class IndexBody(BaseModel):
    """What ``GET /v1/models/<name>`` answers: written by the server, read by the gateways."""

    model_config = ConfigDict(extra="ignore")

    name: str
    versions: list[int]
    aliases: dict[str, AliasEntry]

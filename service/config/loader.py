"""YAML plus FER_ environment overrides, validated once, with errors that name the key.

Overrides: ``FER_<KEY>__<KEY>...=<yaml value>``, for example ``FER_MQTT__PORT=1884``,
``FER_API__TOKEN=s3cret`` or ``FER_CAMERAS__0__SOURCE=rtsp://cam/stream``. A double underscore
descends one level; a number picks a list item; the value is parsed as YAML, so ``true``, ``5``
and ``[a, b]`` keep their types.
"""

from __future__ import annotations

import copy
import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from service.config.settings import Settings

ENV_PREFIX = "FER_"
# Not settings: the entry point reads FER_CONFIG, and `python -m model_store` FER_MODEL_STORE.
_NOT_SETTINGS = {"FER_CONFIG", "FER_MODEL_STORE"}


class ConfigError(Exception):
    """A configuration problem; the message is one line that names the offending key."""


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_path(data: dict[str, Any], parts: list[str], value: Any, var: str) -> None:
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{var}: no list item {part!r} to override (the list has {len(node)})")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{var}: {'.'.join(parts[:i])} is not a section")
        if last:
            node[part] = value
        elif parts[i + 1].isdigit() and not isinstance(node.get(part), list):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{var}: no list item {parts[i + 1]!r} to override ({where} is not a list)")
        else:
            node = node.setdefault(part, {})


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the data with overrides applied, and which dotted key each variable set."""
    data = copy.deepcopy(data)
    origins: dict[str, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in _NOT_SETTINGS:
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"{var}: empty key segment")
        try:
            value = yaml.safe_load(environ[var]) if environ[var] != "" else ""
        except yaml.YAMLError:
            value = environ[var]
        _set_path(data, parts, value, var)
        origins[".".join(parts)] = var
    return data, origins


def _merge_camera_rules(data: dict[str, Any]) -> dict[str, Any]:
    """Each camera's `rules` overrides the top-level ones key by key, and each zone's the camera's."""
    defaults = data.get("rules") or {}
    cameras = data.get("cameras")
    if not isinstance(defaults, dict) or not isinstance(cameras, list):
        return data
    for cam in cameras:
        if isinstance(cam, dict):
            own = cam.get("rules") or {}
            if isinstance(own, dict):
                cam["rules"] = _deep_merge(defaults, own)
            zones = cam.get("zones")
            if isinstance(zones, dict) and isinstance(cam.get("rules", {}), dict):
                for zone in zones.values():
                    if isinstance(zone, dict) and isinstance(zone.get("rules"), dict):
                        zone["rules"] = _deep_merge(cam.get("rules") or {}, zone["rules"])
    return data


def _step(annotation: Any, part: int | str) -> Any:
    """The annotation one step down ``loc``: a section's field, or the item of a list or mapping."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _step(typing.get_args(annotation)[0], part)
    if origin in (typing.Union, types.UnionType):
        steps = [_step(arg, part) for arg in typing.get_args(annotation) if arg is not type(None)]
        return next((s for s in steps if s is not None), None)
    if origin in (list, tuple):
        return typing.get_args(annotation)[0] if isinstance(part, int) else None
    if origin is dict:
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return field.annotation if field is not None else None
    return None


def _known_keys(annotation: Any) -> list[str]:
    """The keys of the section an annotation holds (looking through ``X | None``)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [k for arg in typing.get_args(annotation) for k in _known_keys(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """The closest known key, as git names the command a typo was probably meant to be; "" when none is close."""
    annotation: Any = Settings
    for part in loc[:-1]:
        annotation = _step(annotation, part)
    close = difflib.get_close_matches(str(loc[-1]).lower(), _known_keys(annotation), n=1) if loc else []
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(exc: ValidationError, origins: Mapping[str, str]) -> str:
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    dotted = ".".join(loc) or "<root>"
    where = dotted
    env_key = ".".join(p.lower() for p in loc)
    for key, var in origins.items():
        if env_key == key or env_key.startswith(key + "."):
            where = f"{dotted} (from {var})"
            break
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key" + _suggestion(tuple(first["loc"]))
    more = len(exc.errors()) - 1
    return f"config error at {where}: {msg}" + (f" (and {more} more)" if more else "")


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (None: defaults only), apply FER_ overrides from ``environ`` and validate."""
    environ = os.environ if environ is None else environ
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top")
    data, origins = apply_env(raw, environ)
    data = _merge_camera_rules(data)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None

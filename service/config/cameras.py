"""Camera sections: where frames come from and how hard to look at them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from service.config._base import Strict
from service.config.rules import RulesConfig
from service.config.zones import ZONE_NAME_PATTERN, Polygon, ZoneConfig

CAMERA_ID_PATTERN = r"^[a-zA-Z0-9_-]+$"
DEMO_SOURCE = "demo"
_STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


def is_stream(source: int | str) -> bool:
    """A network stream (read by FFmpeg through PyAV), not a file or a device."""
    return isinstance(source, str) and source.lower().startswith(_STREAM_SCHEMES)


def redact(source: int | str) -> str:
    """A source fit for a log line or any output: rtsp://user:pass@host/x becomes rtsp://***@host/x."""
    text = str(source)
    if "://" not in text:
        return text
    scheme, rest = text.split("://", 1)
    authority, sep, path = rest.partition("/")
    if "@" not in authority:
        return text
    # rpartition: a password may itself contain '@'.
    return f"{scheme}://***@{authority.rpartition('@')[2]}{sep}{path}"


class DetectSize(Strict):
    """Frames are scaled to fit width×height for detection. The defaults (YuNet at 640×480 on every
    3rd frame) cost about as much as every frame at 320×240 and find far more small faces
    (docs/performance.md, "Face detection"); the frames between reuse the boxes, which keeps the events."""

    width: int = Field(640, ge=64, le=4096, title="Detection width", description="frames are resized to fit this")
    height: int = Field(480, ge=48, le=4096, title="Detection height")
    interval: int = Field(
        3,
        ge=1,
        le=30,
        description="run the detector on every Nth analysed frame; the frames between reuse its boxes",
    )


class DecodeConfig(Strict):
    """How a camera's frames are decoded. Network streams are decoded by FFmpeg (through PyAV), files
    and devices by OpenCV; docs/capture.md has the measurements behind the defaults."""

    threads: int = Field(
        1,
        ge=1,
        le=16,
        description="decoder threads for this camera (and for its colour conversion): one is enough for 640×480 "
        "at 15 fps; more for 1080p and up, where frame threads add a frame of latency each",
    )
    hwaccel: Literal["vaapi", "nvdec"] | None = Field(
        None,
        description="network streams: decode on a VAAPI (Intel, AMD) or NVDEC (NVIDIA) device; where it is "
        "unavailable the camera logs why and decodes in software",
    )
    hwaccel_device: str | None = Field(
        None, max_length=256, description="a VAAPI render node such as /dev/dri/renderD128, or an NVIDIA GPU index"
    )

    @model_validator(mode="after")
    def _device_fits(self) -> DecodeConfig:
        if self.hwaccel == "nvdec" and self.hwaccel_device is not None and not self.hwaccel_device.isdigit():
            raise ValueError("hwaccel_device: NVDEC takes a GPU index, such as 0")
        return self


class CameraConfig(Strict):
    id: str = Field(
        pattern=CAMERA_ID_PATTERN,
        max_length=64,
        title="Camera id",
        description="used in MQTT topics and metric labels, so only [a-zA-Z0-9_-]",
    )
    name: str | None = Field(None, max_length=128, description="friendly name for Home Assistant")
    source: int | str = Field(
        title="Source",
        description="device index, file path, rtsp:// or http(s):// URL, or 'demo' for the generated clip",
    )
    enabled: bool = True
    fps: float = Field(15.0, gt=0, le=120, title="Target fps", description="at most this many frames analysed a second")
    detect: DetectSize = Field(default_factory=DetectSize)
    loop: bool = Field(False, description="restart a file source at its end instead of treating the end as a loss")
    reconnect_min_s: float = Field(0.5, gt=0, description="first reconnect delay; doubles up to reconnect_max_s")
    reconnect_max_s: float = Field(30.0, gt=0)
    transport: Literal["tcp", "udp"] = Field(
        "tcp",
        description="RTSP transport; tcp by default, because cameras behind NAT or on Wi-Fi lose UDP packets",
    )
    timeout_s: float = Field(
        5.0, gt=0, le=120, description="a live source that answers no open or read for this long is lost"
    )
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig, description="merged over the top-level rules")
    masks: list[Polygon] = Field(
        default_factory=list,
        description="faces whose box centre falls inside a mask are dropped before classification",
    )
    zones: dict[str, ZoneConfig] = Field(
        default_factory=dict, description="named regions; when set, only faces inside at least one are analysed"
    )

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("a device index is >= 0")
            return value
        if not value.strip():
            raise ValueError("source must not be empty")
        return value

    @field_serializer("source", when_used="json")
    def _source_without_credentials(self, value: int | str) -> int | str:
        # JSON is what leaves the process (`check` prints it); the runtime reads the field itself.
        return value if isinstance(value, int) else redact(value)

    @model_validator(mode="after")
    def _hwaccel_on_a_stream(self) -> CameraConfig:
        if self.decode.hwaccel is not None and not is_stream(self.source):
            raise ValueError("decode.hwaccel: hardware decode is for network streams (rtsp://, http(s)://, …); "
                             "files and devices are decoded by OpenCV")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _zones_known(self) -> CameraConfig:
        for name in self.zones:
            if not re.match(ZONE_NAME_PATTERN, name):
                raise ValueError(f"zones.{name}: a zone name is [a-zA-Z0-9_-] (it appears in MQTT payloads)")
        scopes = [("rules", self.rules)] + [(f"zones.{n}.rules", z.rules) for n, z in self.zones.items() if z.rules]
        for where, rules in scopes:
            for key, names in rules.zone_references().items():
                unknown = sorted(set(names) - set(self.zones))
                if unknown:
                    known = ", ".join(self.zones) or "none"
                    raise ValueError(f"{where}.{key}: unknown zone(s) {unknown} (this camera's zones: {known})")
        return self

    @property
    def is_demo(self) -> bool:
        return self.source == DEMO_SOURCE

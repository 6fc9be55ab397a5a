"""The whole configuration: one small model per section, put together here."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from service.config._base import Strict
from service.config.api import ApiConfig
from service.config.cameras import CAMERA_ID_PATTERN, CameraConfig
from service.config.distribution import DistributionConfig
from service.config.model import DetectorConfig, ModelConfig, TrackingConfig
from service.config.mqtt import MqttConfig
from service.config.rules import RulesConfig


class Settings(Strict):
    gateway_id: str | None = Field(
        None,
        pattern=CAMERA_ID_PATTERN,
        max_length=64,
        description="names this gateway in a fleet sharing one broker: its availability topic, its Last Will, "
        "its Home Assistant device and every payload; unset for a single gateway",
    )
    state_dir: Path = Field(Path("var"), description="outbox and generated demo clip live here")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    api: ApiConfig = Field(default_factory=ApiConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    rules: RulesConfig = Field(
        default_factory=RulesConfig, description="defaults that each camera's `rules` overrides key by key"
    )
    cameras: list[CameraConfig] = Field(default_factory=list)
    distribution: DistributionConfig = Field(default_factory=DistributionConfig)

    @model_validator(mode="after")
    def _unique_cameras(self) -> Settings:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera id {cam.id!r} is used twice")
            seen.add(cam.id)
        return self

    @model_validator(mode="after")
    def _distribution_needs_mqtt(self) -> Settings:
        if self.distribution.enabled and not self.mqtt.enabled:
            raise ValueError("distribution needs mqtt: new versions are announced there")
        return self

    @property
    def outbox_path(self) -> Path:
        return self.mqtt.outbox.path or self.state_dir / "outbox.sqlite3"

"""Configuration: one YAML file plus FER_ environment overrides (see loader.py)."""

from service.config.api import ApiConfig
from service.config.cameras import CAMERA_ID_PATTERN, DEMO_SOURCE, CameraConfig, DetectSize
from service.config.distribution import DistributionConfig
from service.config.loader import ConfigError, apply_env, load_settings
from service.config.model import DetectorConfig, ModelConfig, TrackingConfig
from service.config.mqtt import DiscoveryConfig, MqttConfig, OutboxConfig, TlsConfig
from service.config.rules import AbruptChangeRule, CameraFaultRule, RulesConfig, SustainedNegativeRule
from service.config.settings import Settings

__all__ = [
    "CAMERA_ID_PATTERN",
    "DEMO_SOURCE",
    "AbruptChangeRule",
    "ApiConfig",
    "CameraConfig",
    "CameraFaultRule",
    "ConfigError",
    "DetectSize",
    "DetectorConfig",
    "DiscoveryConfig",
    "DistributionConfig",
    "ModelConfig",
    "MqttConfig",
    "OutboxConfig",
    "RulesConfig",
    "Settings",
    "SustainedNegativeRule",
    "TlsConfig",
    "TrackingConfig",
    "apply_env",
    "load_settings",
]

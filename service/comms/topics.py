"""The one module that knows topic strings (DESIGN §3); nothing else builds them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str = "fer"
    discovery_prefix: str = "homeassistant"

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    def events(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/events"

    def expression(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/expression"

    def status(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/status"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def ha_device_config(self, node_id: str) -> str:
        return f"{self.discovery_prefix}/device/{node_id}/config"

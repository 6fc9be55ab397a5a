"""The one module that knows topic strings (docs/mqtt.md, "Topics"); nothing else builds them.

In a fleet (``gateway`` set) every gateway shares the prefix, so that a dashboard on
``<prefix>/+/events`` sees every camera; what belongs to one gateway lives under
``<prefix>/gateways/<gateway>/``, whose four levels never match a camera's three.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str = "fer"
    discovery_prefix: str = "homeassistant"
    gateway: str | None = None

    @property
    def available(self) -> str:
        if self.gateway is None:
            return f"{self.prefix}/available"
        return f"{self.prefix}/gateways/{self.gateway}/available"

    def events(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/events"

    def expression(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/expression"

    def status(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/status"

    def analysis_state(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/analysis/state"

    def analysis_set(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/analysis/set"

    @property
    def analysis_set_any(self) -> str:
        """The subscription that receives every camera's switch command."""
        return self.analysis_set("+")

    def camera_of_analysis_set(self, topic: str) -> str | None:
        """The camera a command topic names, or None when the topic is not one."""
        start, end = f"{self.prefix}/", "/analysis/set"
        if not topic.startswith(start) or not topic.endswith(end):
            return None
        camera = topic[len(start) : -len(end)]
        return camera if camera and "/" not in camera else None

    def gateway_cameras(self, gateway: str) -> str:
        """Retained: the camera ids a gateway claims, so that a clash between two is seen."""
        return f"{self.prefix}/gateways/{gateway}/cameras"

    @property
    def all_gateway_cameras(self) -> str:
        return f"{self.prefix}/gateways/+/cameras"

    def gateway_of_cameras_topic(self, topic: str) -> str | None:
        head, tail = f"{self.prefix}/gateways/", "/cameras"
        if topic.startswith(head) and topic.endswith(tail):
            gateway = topic[len(head) : -len(tail)]
            return gateway if gateway and "/" not in gateway else None
        return None

    def gateway_model(self, gateway: str) -> str:
        """Retained: the model version a gateway serves, and why not the announced one."""
        return f"{self.prefix}/gateways/{gateway}/model"

    def model_alias(self, name: str, alias: str) -> str:
        """Retained: the central store's announcement of the version an alias names."""
        return f"{self.prefix}/models/{name}/{alias}"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def ha_device_config(self, node_id: str) -> str:
        return f"{self.discovery_prefix}/device/{node_id}/config"

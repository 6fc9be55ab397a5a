"""The one module of the service that builds and parses topic strings (docs/mqtt.md, "Topics").

In a fleet (``gateway`` set) every gateway shares the prefix, so that a dashboard on
``<prefix>/+/events`` sees every camera; what belongs to one gateway lives under
``<prefix>/gateways/<gateway>/``, whose four levels never match a camera's three.

The central store's announcements are the model store's own topic (``model_store.addresses``): the
store announces on it and does not import the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from model_store.addresses import announcement_topic

# What follows ``<prefix>/<camera>/`` in each of a camera's topics.
CameraTopic = Literal["events", "expression", "status", "analysis/state", "analysis/set"]
_CAMERA_TOPICS: tuple[CameraTopic, ...] = get_args(CameraTopic)


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

    # -- a camera's topics, the same for every gateway -------------------------------------------

    def _camera(self, camera: str, what: CameraTopic) -> str:
        return f"{self.prefix}/{camera}/{what}"

    def events(self, camera: str) -> str:
        return self._camera(camera, "events")

    def expression(self, camera: str) -> str:
        return self._camera(camera, "expression")

    def status(self, camera: str) -> str:
        return self._camera(camera, "status")

    def analysis_state(self, camera: str) -> str:
        return self._camera(camera, "analysis/state")

    def analysis_set(self, camera: str) -> str:
        return self._camera(camera, "analysis/set")

    @property
    def analysis_set_any(self) -> str:
        """The subscription that receives every camera's switch command."""
        return self.analysis_set("+")

    @property
    def every_camera(self) -> tuple[str, ...]:
        """What every gateway publishes per camera: the events and the retained state, not the commands."""
        return (self.events("+"), self.status("+"), self.expression("+"), self.analysis_state("+"))

    def camera_topic(self, topic: str) -> tuple[str, CameraTopic] | None:
        """The camera a topic belongs to and which of its topics it is; None for any other topic."""
        head = f"{self.prefix}/"
        if not topic.startswith(head):
            return None
        camera, _, what = topic[len(head) :].partition("/")
        if camera:
            for known in _CAMERA_TOPICS:
                if what == known:
                    return camera, known
        return None

    # -- a gateway's own topics (fleet) ----------------------------------------------------------

    def gateway_cameras(self, gateway: str) -> str:
        """Retained: the camera ids a gateway claims, so that a clash between two is seen."""
        return f"{self.prefix}/gateways/{gateway}/cameras"

    @property
    def all_gateway_cameras(self) -> str:
        return self.gateway_cameras("+")

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
        return announcement_topic(self.prefix, name, alias)

    # -- Home Assistant --------------------------------------------------------------------------

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def ha_device_config(self, node_id: str) -> str:
        return f"{self.discovery_prefix}/device/{node_id}/config"

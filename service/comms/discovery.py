"""Home Assistant device-based discovery: one retained config message for the whole device.

The expression is an enum sensor, anomalies (and expression changes) an event entity that reads
``event_type`` straight from our payloads, each camera's status a connectivity sensor and its
analysis a switch. In a fleet each gateway is its own device, available while that gateway is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.comms.topics import Topics
from service.event_types import EVENT_TYPES

NO_FACE = "none"


def device_config(
    topics: Topics,
    node_id: str,
    cameras: Sequence[tuple[str, str]],
    labels: Sequence[str],
    sw_version: str,
    gateway: str | None = None,
) -> dict[str, Any]:
    """``cameras`` is (id, friendly name) pairs; ``labels`` the served model's label names."""
    components: dict[str, dict[str, Any]] = {}
    for cam_id, cam_name in cameras:
        uid = f"{node_id}_{cam_id}"
        components[f"{cam_id}_expression"] = {
            "p": "sensor",
            "name": f"{cam_name} expression",
            "device_class": "enum",
            "options": [*labels, NO_FACE],
            "state_topic": topics.expression(cam_id),
            "value_template": "{{ value_json.label if value_json.label is not none else '" + NO_FACE + "' }}",
            "json_attributes_topic": topics.expression(cam_id),
            "unique_id": f"{uid}_expression",
        }
        components[f"{cam_id}_events"] = {
            "p": "event",
            "name": f"{cam_name} events",
            "event_types": list(EVENT_TYPES),
            "state_topic": topics.events(cam_id),
            "unique_id": f"{uid}_events",
        }
        components[f"{cam_id}_status"] = {
            "p": "binary_sensor",
            "name": f"{cam_name} camera",
            "device_class": "connectivity",
            "state_topic": topics.status(cam_id),
            "value_template": "{{ value_json.state }}",
            "payload_on": "online",
            "payload_off": "offline",
            "unique_id": f"{uid}_status",
        }
        # The privacy switch (Frigate's `enabled` switch): OFF stops every analysis of the camera.
        components[f"{cam_id}_analysis"] = {
            "p": "switch",
            "name": f"{cam_name} analysis",
            "icon": "mdi:eye-off-outline",
            "command_topic": topics.analysis_set(cam_id),
            "state_topic": topics.analysis_state(cam_id),
            "value_template": "{{ value_json.state }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "state_on": "ON",
            "state_off": "OFF",
            "unique_id": f"{uid}_analysis",
        }
    return {
        "dev": {
            "ids": [node_id],
            "name": device_name(gateway),
            "mf": "fer-edge",
            "mdl": "EAN expression",
            "sw": sw_version,
        },
        "o": {"name": "fer-edge", "sw": sw_version},
        "availability": [
            {
                "topic": topics.available,
                # `stopped` is reported to Home Assistant as offline.
                "value_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
            }
        ],
        "qos": 1,
        "cmps": components,
    }


def device_name(gateway: str | None) -> str:
    return "fer-edge" if gateway is None else f"fer-edge {gateway}"


def default_node_id(gateway: str | None) -> str:
    return "fer_edge" if gateway is None else f"fer_edge_{gateway}"

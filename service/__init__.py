"""fer-edge: the on-device service (camera streams -> EAN -> MQTT, POST /infer, Prometheus)."""

__version__ = "0.1.0"

"""The MQTT section. Secrets are best given as FER_MQTT__PASSWORD, or a password_file, rather than in the file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from service.config._base import Strict, read_secret_file

TOPIC_SEGMENT = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


class TlsConfig(Strict):
    enabled: bool = False
    ca_certs: Path | None = Field(None, description="CA bundle; the system one when unset")
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = Field(False, description="skip hostname verification (test brokers only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together")
        return self


class DiscoveryConfig(Strict):
    enabled: bool = True
    prefix: str = Field("homeassistant", pattern=TOPIC_SEGMENT)
    node_id: str | None = Field(
        None,
        pattern=r"^[a-zA-Z0-9_-]+$",
        description="the Home Assistant device id; fer_edge, or fer_edge_<gateway_id> when unset",
    )


class OutboxConfig(Strict):
    path: Path | None = Field(None, description="SQLite file; <state_dir>/outbox.sqlite3 when unset")
    max_messages: int = Field(10_000, ge=1, description="past this the oldest events are dropped and counted")
    flush_timeout_s: float = Field(5.0, ge=0, description="how long shutdown waits for the outbox to drain")
    ack_timeout_s: float = Field(10.0, gt=0, description="re-send an event not acknowledged within this")
    batch: int = Field(32, ge=1, le=1000, description="events in flight at once")


class MqttConfig(Strict):
    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("fer", pattern=TOPIC_SEGMENT, description="topic prefix; no wildcards")
    client_id: str | None = Field(
        None, min_length=1, max_length=128, description="fer-edge, or fer-edge-<gateway_id> when unset"
    )
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(
        None,
        description="a file whose first line is the password, read at each start (compose's mqtt-auth "
        "writes one); `password`, when set, wins",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    events_qos: Literal[1, 2] = Field(
        1, description="QoS of fer/<camera>/events; 2 removes the broker's own re-sends, not the outbox's"
    )
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)

    @model_validator(mode="after")
    def _checks(self) -> MqttConfig:
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a password is set but username is not")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is larger than reconnect_max_s")
        return self

    def login_password(self) -> str | None:
        """The password to log in with: ``password``, else the first line of ``password_file``, read when
        a client is made."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        return read_secret_file(self.password_file, "mqtt.password_file")

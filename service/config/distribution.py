"""Model distribution for a fleet: where the central store is served, how to trust it, and how hard to retry it."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, model_validator

from model_store.addresses import is_loopback_host
from service.config._base import Strict


class DistributionConfig(Strict):
    enabled: bool = Field(
        False,
        description="follow the central store's MQTT announcements; model.store is then this gateway's local cache",
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="base URL of `python -m model_store serve`: https:// off this machine, http:// for a "
        "trial on one machine",
    )
    token: SecretStr | None = Field(
        None, description="bearer token the store server asks for (its MODEL_STORE_TOKEN); best FER_DISTRIBUTION__TOKEN"
    )
    ca_file: FilePath | None = Field(
        None, description="PEM CA certificate(s) an https:// store's certificate must chain to; the system's when unset"
    )
    allow_http: bool = Field(
        False,
        description="accept a plain http:// url on another host, whose token and models cross the network "
        "unencrypted from a store nobody authenticates: a trial on a network you trust",
    )
    max_file_bytes: int = Field(
        256 * 1024 * 1024, ge=1024,
        description="a file of a version larger than this is refused before it is downloaded, and a server that "
        "sends more than its manifest says is cut off",
    )
    timeout_s: float = Field(30.0, gt=0, description="per HTTP request")
    retry_min_s: float = Field(2.0, gt=0, description="first retry after a failed or refused download; doubles")
    retry_max_s: float = Field(300.0, gt=0)
    bootstrap_timeout_s: float = Field(
        120.0, ge=0, description="with an empty cache, how long start-up keeps trying to fetch a first model"
    )

    @model_validator(mode="after")
    def _checks(self) -> DistributionConfig:
        if self.enabled and not self.url:
            raise ValueError("distribution.url is required when distribution is enabled")
        split = urlsplit(self.url or "")
        if self.ca_file is not None and split.scheme != "https":
            raise ValueError("distribution.ca_file verifies an https:// store server, but distribution.url is not one")
        if split.scheme == "http" and not is_loopback_host(split.hostname or "") and not self.allow_http:
            raise ValueError(
                "distribution.url is plain http:// to another host: the token and the models would cross the network "
                "unencrypted from a store nobody authenticates; use https:// (python -m model_store serve --tls-cert), "
                "or set distribution.allow_http: true for a trial on a network you trust"
            )
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s is larger than retry_max_s")
        return self

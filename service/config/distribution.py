"""Model distribution for a fleet: where the central store is served, how to trust it, and how hard to retry it."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, model_validator

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
        if self.ca_file is not None and urlsplit(self.url or "").scheme != "https":
            raise ValueError("distribution.ca_file verifies an https:// store server, but distribution.url is not one")
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s is larger than retry_max_s")
        return self

"""The HTTP section. Secrets (the token, the page's password) are best given as FER_API__TOKEN (or a
token_file) and FER_API__PASSWORD. What is protected when is docs/security.md's "HTTP: page and API"."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from model_store.addresses import is_loopback_host
from service.config._base import Strict, read_secret_file

# The names of this machine that a browser on it uses; a rebound name (DNS rebinding) is none of them.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class ApiConfig(Strict):
    host: str = Field(
        "127.0.0.1", description="listen address; on anything but loopback every route but /healthz needs credentials"
    )
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = Field(
        None,
        description="bearer token for machines: every route, the admin ones included; "
        "unset (and no token_file), admin routes refuse every machine and, off loopback, only the page's login gets in",
    )
    token_file: Path | None = Field(
        None,
        description="a file whose first line is the bearer token, read at each start (compose's mqtt-auth writes "
        "one, which Prometheus reads too); `token`, when set, wins",
    )
    password: SecretStr | None = Field(
        None,
        description="the page's login password; unset, one is generated at the first start off loopback, written to "
        "<state_dir>/http-password.txt (0600), and only its scrypt hash is kept, in <state_dir>/http-password.json",
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="names the Host header may carry (`*.example.com` for sub-domains, `*` for any); unset: "
        "localhost, 127.0.0.1 and ::1 on loopback, where nothing needs credentials, and any host elsewhere, where "
        "every route but /healthz does",
    )
    metrics_open: bool = Field(False, description="serve /metrics without credentials off loopback (for Prometheus)")
    docs: bool = Field(
        False,
        description="serve Swagger UI at /docs: the browser loads its script from a CDN, which an offline gateway "
        "cannot reach and nothing vouches for, so it is off by default (/openapi.json is always served)",
    )
    session_ttl_s: float = Field(
        86_400.0, ge=60, le=30 * 86_400, description="a page login lasts this long after it was last renewed"
    )
    login_max_failures: int = Field(
        5, ge=1, le=1000,
        description="failed logins or bearer tokens per client network (IPv4 /24, IPv6 /64, loopback) within "
        "login_window_s",
    )
    login_max_failures_total: int = Field(
        50, ge=1, le=100_000,
        description="failed page logins from all networks together within login_window_s; past it the login "
        "answers 429 to everyone (the bearer token still works) until the window moves on",
    )
    login_window_s: float = Field(300.0, gt=0, le=86_400, description="past login_max_failures, a 429 until then")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="checked before anything is decoded")
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height read from the header")
    max_image_side: int = Field(16_384, ge=16)
    detect_max_side: int = Field(640, ge=64, description="images are scaled down to this for face detection")
    max_concurrency: int = Field(4, ge=1, le=64, description="images analysed at once; more requests wait")
    max_body_bytes_in_flight: int = Field(
        64 * 1024 * 1024, ge=1024, description="request bodies held by all requests together; more requests wait"
    )
    max_decode_pixels: int = Field(
        16_000_000, ge=1, description="decoded pixels held by all requests together; more requests wait"
    )
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must send complete headers within this")
    body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive within this (408 after)")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(512, ge=1, description="open connections; past this a new one gets a 503")

    @field_validator("password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # NIST SP 800-63B's minimum; an empty FER_API__PASSWORD= would otherwise be a password.
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("the page's password needs at least 8 characters")
        return value

    @property
    def credentials_required(self) -> bool:
        return not is_loopback_host(self.host)

    def host_allow_list(self) -> list[str]:
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        # Off loopback a rebound name reaches nothing without credentials, and the LAN's names for
        # the gateway (its address, its mDNS name, a proxy's) are not known here.
        return list(LOOPBACK_NAMES) if not self.credentials_required else ["*"]

    def bearer_token(self) -> SecretStr | None:
        """The token machines send: ``token``, else the first line of ``token_file``."""
        if self.token is not None:
            return self.token
        if self.token_file is None:
            return None
        # A header's value is compared without its surrounding blanks, so a token never has them.
        return SecretStr(read_secret_file(self.token_file, "api.token_file", strip=True))

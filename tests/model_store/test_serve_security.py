"""`python -m model_store serve` refuses, in one line naming the option, to start insecurely or half-configured:
before it binds anything."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from model_store.__main__ import main
from model_store.addresses import is_loopback_host
from model_store.distribution import ServerConfigError, ServerSecurity, check_exposure

TOKEN = "a-long-enough-store-token"
Serve = Callable[..., tuple[int, str]]


@pytest.fixture
def serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """Run `serve` with these arguments (and MODEL_STORE_TOKEN when given); returns its exit status and stderr."""
    root = tmp_path / "store"
    (root / "ean").mkdir(parents=True)
    # `serve` installs a SIGTERM handler for its process; not for pytest's.
    monkeypatch.setattr("model_store.__main__.signal.signal", lambda *args: None)

    def run(*args: str, token: str | None = None) -> tuple[int, str]:
        if token is None:
            monkeypatch.delenv("MODEL_STORE_TOKEN", raising=False)
        else:
            monkeypatch.setenv("MODEL_STORE_TOKEN", token)
        code = main(["--root", str(root), "serve", "--port", "0", *args])
        return code, capsys.readouterr().err

    return run


def test_tls_options_go_together_and_must_load(serve: Serve, tmp_path: Path) -> None:
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    key.write_text("not a key\n")
    cert.write_text("not a certificate\n")
    assert serve("--tls-key", str(key)) == (2, "error: a TLS key without a certificate: give --tls-cert too\n")
    assert serve("--tls-cert", str(cert)) == (2, "error: a TLS certificate without its key: give --tls-key too\n")
    code, err = serve("--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(key))
    assert (code, err) == (2, f"error: --tls-cert {tmp_path / 'missing.crt'}: no such file\n")
    code, err = serve("--tls-cert", str(cert), "--tls-key", str(key))
    assert code == 2 and err.startswith(f"error: --tls-cert {cert} / --tls-key {key}: cannot load them")
    assert "\n" not in err.rstrip("\n")


def test_the_token_comes_once_from_the_environment_or_a_file(serve: Serve, tmp_path: Path) -> None:
    assert serve(token="short")[1].startswith("error: the token is shorter than 16 characters")
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    code, err = serve("--token-file", str(token_file), token=TOKEN)
    assert (code, err) == (2, "error: the token is given twice: MODEL_STORE_TOKEN and --token-file; keep one\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert serve("--token-file", str(empty)) == (2, f"error: --token-file {empty}: the first line is empty\n")
    missing = tmp_path / "missing"
    assert serve("--token-file", str(missing)) == (2, f"error: --token-file {missing}: No such file or directory\n")
    # The token file's content is the token, and what reaches the model is a SecretStr.
    security = ServerSecurity.from_options(token=None, token_file=token_file, tls_cert=None, tls_key=None)
    assert security.token is not None and security.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(security)


def test_off_loopback_it_wants_a_token_and_tls_or_an_explicit_insecure(serve: Serve) -> None:
    code, err = serve("--host", "0.0.0.0")
    assert code == 2
    assert err.startswith(
        "error: serving on 0.0.0.0 needs a token (MODEL_STORE_TOKEN or --token-file) and TLS (--tls-cert and --tls-key)"
    )
    code, err = serve("--host", "0.0.0.0", token=TOKEN)
    assert code == 2 and err.startswith("error: serving on 0.0.0.0 needs TLS (--tls-cert and --tls-key)")
    check_exposure("0.0.0.0", ServerSecurity(), insecure=True)
    check_exposure("127.0.0.1", ServerSecurity(), insecure=False)
    with pytest.raises(ServerConfigError):
        check_exposure("192.168.1.5", ServerSecurity(token=TOKEN), insecure=False)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("store.site.lan", False),
    ],
)
def test_loopback_is_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback

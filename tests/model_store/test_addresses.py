"""The store's HTTP paths and announcement topic: what the gateways build is what the server parses."""

from __future__ import annotations

from model_store.addresses import ModelIndex, VersionFile, announcement_topic, file_path, model_path, parse_path


def test_the_server_parses_what_a_gateway_builds() -> None:
    assert model_path("ean") == "/v1/models/ean"
    assert parse_path(model_path("ean")) == ModelIndex("ean")
    assert file_path("ean", 2, "model.onnx") == "/v1/models/ean/2/model.onnx"
    assert parse_path(file_path("ean", 2, "manifest.json")) == VersionFile("ean", 2, "manifest.json")


def test_nothing_outside_a_version_directory_is_named() -> None:
    for path in ("/v1/models", "/v1/models/", "/v1/models/ean/1/.lock", "/v1/models/ean/1/../aliases.json",
                 "/v1/models/ean/aliases.json", "/v1/models/.ean", "/v1/models/ean/x/model.onnx",
                 "/v1/models/ean/1/sub/model.onnx", "/v2/models/ean"):  # fmt: skip
        assert parse_path(path) is None, path


def test_the_announcement_topic() -> None:
    assert announcement_topic("fer", "ean", "candidate") == "fer/models/ean/candidate"

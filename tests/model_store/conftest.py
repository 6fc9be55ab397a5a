from __future__ import annotations

from pathlib import Path

import pytest

from model_store import InputSpec, Lineage, Manifest, Metrics, ModelStore


def make_manifest(name: str = "ean", acc: float = 0.5) -> Manifest:
    return Manifest(
        name=name,
        labels=["angry", "happy", "neutral"],
        input=InputSpec(shape=[None, 1, 48, 48], mean=0.5, std=0.25, normalization_in_graph=True),
        crop_margin=0.2,
        lineage=Lineage(dataset="synthetic", round=1, seed=0, code_version="test"),
        metrics=Metrics(val_accuracy=acc, tta=False, per_class_recall={"angry": 0.5}, params=10, macs=100),
    )


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store", create=True)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, but bytes to hash" * 100)
    return path

"""Honesty check: the shipped stable model scores on PublicTest what its manifest claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from model_store import ModelStore

REPO = Path(__file__).resolve().parents[2]
VAL = REPO.parent / "shared" / "data" / "fer2013" / "val.npz"


def test_seed_store_serves_a_verified_stable_model() -> None:
    store = ModelStore(REPO / "model_store" / "seed")
    version = store.resolve("ean", "stable")
    assert store.verify("ean", version) == []
    metrics = store.manifest("ean", version).metrics
    assert metrics.params <= 200_000 and metrics.macs <= 15_000_000


@pytest.mark.skipif(not VAL.exists(), reason="needs ../shared/data/fer2013 (CI has it)")
def test_shipped_stable_model_matches_its_manifest_on_val() -> None:
    store = ModelStore(REPO / "model_store" / "seed")
    version = store.resolve("ean", "stable")
    manifest = store.manifest("ean", version)
    sess = ort.InferenceSession(str(store.version_dir("ean", version) / manifest.model_file),
                                providers=["CPUExecutionProvider"])
    data = np.load(VAL)
    x, y = data["x"][:, None], data["y"]
    name = sess.get_inputs()[0].name
    probs = np.concatenate([sess.run(None, {name: x[i:i + 512]})[0] for i in range(0, len(x), 512)])
    if manifest.metrics.tta:
        flipped = np.ascontiguousarray(x[..., ::-1])
        probs += np.concatenate([sess.run(None, {name: flipped[i:i + 512]})[0] for i in range(0, len(x), 512)])
    # FER2013 val labels are in FER2013 order; map through the manifest's label names.
    fer_order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    truth = np.array([manifest.labels.index(fer_order[i]) for i in y])
    acc = float((probs.argmax(1) == truth).mean())
    assert abs(acc - manifest.metrics.val_accuracy) <= 0.003
    assert acc > 0.60

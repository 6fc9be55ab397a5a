"""Honesty check: every shipped version scores on PublicTest what its manifest claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from model_store import ModelStore

REPO = Path(__file__).resolve().parents[2]
VAL = REPO.parent / "shared" / "data" / "fer2013" / "val.npz"
STORE = ModelStore(REPO / "model_store" / "seed")
VERSIONS = STORE.versions("ean")


def test_seed_store_serves_a_verified_stable_model() -> None:
    version = STORE.resolve("ean", "stable")
    for v in VERSIONS:
        assert STORE.verify("ean", v) == []
        metrics = STORE.manifest("ean", v).metrics
        assert metrics.params <= 200_000 and metrics.macs <= 15_000_000
    assert version in VERSIONS


@pytest.mark.skipif(not VAL.exists(), reason="needs FER2013's val split (CI has it)")
@pytest.mark.parametrize("version", VERSIONS)
def test_shipped_model_matches_its_manifest_on_val(version: int) -> None:
    """Through the tensors the manifest names, uint8 faces, one ``session.run`` a batch: as the service
    runs it. Only a manifest that says so (v1's ``tta``) is scored with the mirror averaged in."""
    manifest = STORE.manifest("ean", version)
    sess = ort.InferenceSession(str(STORE.version_dir("ean", version) / manifest.model_file),
                                providers=["CPUExecutionProvider"])
    data = np.load(VAL)
    x, y = data["x"][:, None], data["y"]

    def run(faces: np.ndarray) -> np.ndarray:
        return np.concatenate([sess.run([manifest.output.name], {manifest.input.name: faces[i:i + 512]})[0]
                               for i in range(0, len(faces), 512)])

    probs = run(x)
    if manifest.metrics.tta:
        probs += run(np.ascontiguousarray(x[..., ::-1]))
    # FER2013 val labels are in FER2013 order; map through the manifest's label names.
    fer_order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    truth = np.array([manifest.labels.index(fer_order[i]) for i in y])
    acc = float((probs.argmax(1) == truth).mean())
    assert abs(acc - manifest.metrics.val_accuracy) <= (0.003 if manifest.metrics.tta else 0.0005)
    assert acc > 0.55

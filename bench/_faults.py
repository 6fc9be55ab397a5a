"""Versions that must never be served, each published into a real store the way a broken trainer or
a bad disk would leave it. Shared by the chaos bench and the promotion tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model_store import MANIFEST_FILE, ModelStore


def publish_copy(store: ModelStore, labels: list[str] | None = None, model_bytes: bytes | None = None,
                 name: str = "ean") -> int:  # fmt: skip
    """A new version of the stable model, optionally with other labels or other graph bytes (hashed
    by the store as it publishes them, so the files match their manifest)."""
    base = store.resolve(name, "stable")
    manifest = store.manifest(name, base)
    vdir = store.version_dir(name, base)
    files: dict[str, str | Path] = {manifest.model_file: vdir / manifest.model_file}
    for variant in manifest.variants.values():
        files[variant.file] = vdir / variant.file
    if model_bytes is not None:
        replacement = vdir.parent / f".fault-{time.monotonic_ns()}.onnx"
        replacement.write_bytes(model_bytes)
        files[manifest.model_file] = replacement
    update: dict = {"version": None, "files": {}}
    if labels is not None:
        update["labels"] = labels
    try:
        return store.publish(manifest.model_copy(update=update), files)
    finally:
        if model_bytes is not None:
            replacement.unlink()


def float32_graph() -> bytes:
    """A small, valid float32 graph of another model: N×1×48×48 float in, 7 probabilities out."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((48 * 48, 7)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 48 * 48], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "other",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 7])],
        initializer=[weights, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _flipped_byte(store: ModelStore) -> int:
    v = publish_copy(store)
    path = store.version_dir("ean", v) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return v


def _truncated(store: ModelStore) -> int:
    v = publish_copy(store)
    path = store.version_dir("ean", v) / "model.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    return v


def _missing_file(store: ModelStore) -> int:
    v = publish_copy(store)
    (store.version_dir("ean", v) / "model.onnx").unlink()
    return v


def _corrupt_manifest(store: ModelStore) -> int:
    v = publish_copy(store)
    path = store.version_dir("ean", v) / MANIFEST_FILE
    doc = json.loads(path.read_text())
    doc["input"]["shape"] = "not a shape"
    path.write_text(json.dumps(doc))
    return v


def _garbage_with_matching_hash(store: ModelStore) -> int:
    return publish_copy(store, model_bytes=b"this is not an onnx graph" * 100)


def _five_labels_for_seven_outputs(store: ModelStore) -> int:
    return publish_copy(store, labels=["angry", "fear", "happy", "sad", "neutral"])


def _float32_graph_of_another_model(store: ModelStore) -> int:
    return publish_copy(store, model_bytes=float32_graph())


# Verification catches the first four; only loading the graph catches the last three.
FAULTS: dict[str, Callable[[ModelStore], int]] = {
    "flipped_byte": _flipped_byte,
    "truncated": _truncated,
    "missing_file": _missing_file,
    "corrupt_manifest": _corrupt_manifest,
    "garbage_with_matching_hash": _garbage_with_matching_hash,
    "five_labels_for_seven_outputs": _five_labels_for_seven_outputs,
    "float32_graph_of_another_model": _float32_graph_of_another_model,
}
UNSERVABLE_BUT_VERIFIED = ("garbage_with_matching_hash", "five_labels_for_seven_outputs",
                           "float32_graph_of_another_model")  # fmt: skip

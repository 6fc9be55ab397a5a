"""One loaded model version: an onnxruntime session plus the manifest that says how to feed it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_store import Manifest, ModelStore
from model_store.servable import CHANNELS, graph_problems


class ModelLoadError(Exception):
    """The version cannot be served; the message says why in one line."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    manifest: Manifest
    model_file: str
    variant: str | None
    sha256: str
    session: ort.InferenceSession = field(repr=False)
    input_name: str
    output_name: str
    max_batch: int
    loaded_at: float

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of one face as the graph expects it."""
        return self.manifest.input.width, self.manifest.input.height

    @property
    def channels(self) -> int:
        return CHANNELS[self.manifest.input.colour]

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """N×C×H×W uint8 faces (already cropped and resized) -> N×classes probabilities."""
        if faces.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        spec = self.manifest.input
        x = faces
        if not spec.normalization_in_graph:
            x = ((faces.astype(np.float32) / 255.0) - spec.mean) / spec.std
        x = x.astype(np.uint8 if spec.dtype == "uint8" else np.float32, copy=False)
        outs = [
            self.session.run([self.output_name], {self.input_name: x[i : i + self.max_batch]})[0]
            for i in range(0, x.shape[0], self.max_batch)
        ]
        probs = np.concatenate(outs).astype(np.float32, copy=False)
        return _as_probabilities(probs)


def _as_probabilities(out: np.ndarray) -> np.ndarray:
    # The contract says the graph ends in softmax; a graph that emits logits is normalised here
    # rather than reporting scores that do not sum to 1.
    sums = out.sum(axis=1)
    if out.min(initial=0.0) >= 0 and np.allclose(sums, 1.0, atol=1e-3):
        return out
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    # Spinning worker threads steal the cores that capture and detection need on a small device.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def load_version(
    store: ModelStore, name: str, version: int, *, variant: str | None, threads: int, max_batch: int
) -> LoadedModel:
    """Verify, load and warm up one version; raises ModelLoadError and leaves nothing behind."""
    problems = store.verify(name, version)
    if problems:
        raise ModelLoadError(f"{name} v{version} failed verification: {'; '.join(problems[:3])}")
    manifest = store.manifest(name, version)
    model_file = manifest.model_file
    if variant:
        if variant not in manifest.variants:
            raise ModelLoadError(f"{name} v{version} has no variant {variant!r} (has {sorted(manifest.variants)})")
        model_file = manifest.variants[variant].file
    entry = manifest.files.get(model_file)
    if entry is None:
        raise ModelLoadError(f"{name} v{version}: {model_file} is not listed in the manifest")
    path: Path = store.version_dir(name, version) / model_file
    try:
        session = ort.InferenceSession(str(path), _session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
        raise ModelLoadError(f"{name} v{version}: onnxruntime cannot load {model_file}: {exc}") from None
    problems = graph_problems(session, manifest)
    if problems:
        raise ModelLoadError(f"{name} v{version}: {problems[0]}")
    model = LoadedModel(
        name=name,
        version=version,
        manifest=manifest,
        model_file=model_file,
        variant=variant,
        sha256=entry.sha256,
        session=session,
        input_name=manifest.input.name,
        output_name=manifest.output.name,
        max_batch=max_batch,
        loaded_at=time.time(),
    )
    _warm_up(model)
    return model


def _warm_up(model: LoadedModel) -> None:
    """Run the batch sizes the service will use, so the first real request is not the slow one."""
    width, height = model.input_size
    for n in sorted({1, min(4, model.max_batch), model.max_batch}):
        faces = np.full((n, model.channels, height, width), 128, dtype=np.uint8)
        try:
            probs = model.predict(faces)
        except Exception as exc:  # a graph that loads but cannot run this input is not servable
            raise ModelLoadError(f"{model.name} v{model.version}: warm-up failed: {exc}") from None
        if probs.shape != (n, len(model.labels)):
            raise ModelLoadError(
                f"{model.name} v{model.version}: output shape {probs.shape[1:]} does not match "
                f"{len(model.labels)} labels"
            )
        if not np.isfinite(probs).all():
            raise ModelLoadError(f"{model.name} v{model.version}: warm-up produced non-finite scores")

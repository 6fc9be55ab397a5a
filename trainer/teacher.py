"""Published models as round 0's teacher: the store's own lineage, versions teaching the next.

Each member runs under onnxruntime on the student's very augmented batch, so its soft labels
describe the image the student sees; an ONNX forward of a small EAN costs a few seconds an epoch on
a CPU, against minutes for training a wider teacher first. Several members make an ensemble, whose
averaged predictions carry more "dark knowledge" than any one of them.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from model_store import ModelStore, StoreError
from trainer.config import StoreRef, StoreTeacherConfig
from trainer.data import LABELS


def resolve(ref: StoreRef) -> tuple[ModelStore, int]:
    """The store and the concrete version ``ref`` names, verified against its manifest."""
    store = ModelStore(ref.store)
    version = store.resolve(ref.name, ref.version)
    problems = store.verify(ref.name, version)
    if problems:
        raise StoreError(f"{ref.name} v{version} failed verification: {'; '.join(problems[:3])}")
    return store, version


class StoreTeacher:
    """``teacher(x)`` gives log-probabilities in LABELS order for float faces (N, 1, S, S) in 0..255."""

    def __init__(self, cfg: StoreTeacherConfig, threads: int = 1) -> None:
        try:
            store, self.version = resolve(cfg)
        except StoreError as exc:
            raise StoreError(f"teacher {exc}") from None
        self.ref = f"{cfg.name}:{self.version}"
        self.manifest = store.manifest(cfg.name, self.version)
        if sorted(self.manifest.labels) != sorted(LABELS):
            raise StoreError(f"teacher {cfg.name} v{self.version} has labels {self.manifest.labels}, "
                             f"not {list(LABELS)}")
        if not self.manifest.input.normalization_in_graph or self.manifest.input.dtype != "uint8":
            raise StoreError(f"teacher {cfg.name} v{self.version}: only uint8 graphs with normalisation inside")
        self._order = [self.manifest.labels.index(name) for name in LABELS]  # by name, never by index
        self.tta = cfg.tta
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # it runs between training steps, never beside them
        path = store.version_dir(cfg.name, self.version) / self.manifest.model_file
        self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._in = self.manifest.input.name
        self._out = self.manifest.output.name

    def eval(self) -> StoreTeacher:
        return self

    def _log_probs(self, x: np.ndarray) -> np.ndarray:
        p = self._sess.run([self._out], {self._in: x})[0]
        return np.log(np.clip(p, 1e-8, 1.0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        u8 = np.ascontiguousarray(x.detach().round().clamp(0, 255).to(torch.uint8).cpu().numpy())
        logp = self._log_probs(u8)
        if self.tta:
            logp = (logp + self._log_probs(np.ascontiguousarray(u8[..., ::-1]))) / 2
        return torch.from_numpy(logp[:, self._order]).to(x.device)


class StoreEnsemble:
    """Published members averaged in log-probability (a geometric mean of their predictions)."""

    def __init__(self, cfgs: list[StoreTeacherConfig], threads: int = 1) -> None:
        self.members = [StoreTeacher(c, threads) for c in cfgs]
        self.refs = [m.ref for m in self.members]

    def eval(self) -> StoreEnsemble:
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

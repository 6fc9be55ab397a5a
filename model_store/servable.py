"""Whether a version can be served, checked before an alias moves to it.

The sha256 of every file says the files are the ones published, not that they make a model: a
garbage graph published with its own hash, or labels that do not match the graph's outputs, pass
verification and still fail in the service. So where onnxruntime is installed, each graph is also
loaded and run once on a batch of the manifest's input spec.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from model_store.manifest import Manifest
from model_store.store import ModelStore

if TYPE_CHECKING:  # onnxruntime is optional here: a store can be served without it
    import onnxruntime as ort

CHANNELS = {"gray": 1, "bgr": 3, "rgb": 3}
_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


def graph_problems(session: ort.InferenceSession, manifest: Manifest) -> list[str]:
    """How a loaded graph's tensors disagree with what the manifest says feeds it and comes out."""
    spec = manifest.input
    if len(spec.shape) != 4 or spec.height <= 0 or spec.width <= 0:
        return [f"input shape {spec.shape} is not N×C×H×W"]
    inputs = {i.name: i.type for i in session.get_inputs()}
    if list(inputs) != [spec.name]:
        return [f"the manifest's input {spec.name!r} is not the graph's one input (graph has {sorted(inputs)})"]
    problems = []
    if inputs[spec.name] != _ORT_TYPES[spec.dtype]:
        problems.append(f"graph input is {inputs[spec.name]}, manifest says {spec.dtype}")
    outputs = [o.name for o in session.get_outputs()]
    if manifest.output.name not in outputs:
        problems.append(f"the manifest's output {manifest.output.name!r} is not in the graph (graph has {outputs})")
    return problems


def servable_problems(store: ModelStore, name: str, version: int) -> list[str]:
    """Empty when the files verify and (with onnxruntime) every graph loads and fits the manifest."""
    problems = store.verify(name, version)
    if problems or importlib.util.find_spec("onnxruntime") is None:
        return problems
    import onnxruntime as ort

    manifest = store.manifest(name, version)
    spec = manifest.input
    vdir = store.version_dir(name, version)
    for fname in [manifest.model_file, *(v.file for v in manifest.variants.values())]:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(vdir / fname), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
            problems.append(f"{fname}: onnxruntime cannot load it: {str(exc).splitlines()[0][:200]}")
            continue
        mismatch = graph_problems(session, manifest)
        if mismatch:
            problems += [f"{fname}: {p}" for p in mismatch]
            continue
        batch = np.zeros((1, CHANNELS[spec.colour], spec.height, spec.width),
                         np.uint8 if spec.dtype == "uint8" else np.float32)
        try:
            out = session.run([manifest.output.name], {spec.name: batch})[0]
        except Exception as exc:
            problems.append(f"{fname}: fails on a {list(batch.shape)} batch: {str(exc).splitlines()[0][:200]}")
            continue
        if out.shape != (1, len(manifest.labels)):
            problems.append(f"{fname}: output shape {list(out.shape[1:])} does not match {len(manifest.labels)} labels")
    return problems

"""ONNX export: uint8 faces in, probabilities out, normalisation and labels inside the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OPSET = 17
INPUT_NAME = "faces"
OUTPUT_NAME = "probs"
PARITY_ATOL = 1e-4


class ExportError(Exception):
    pass


class Deployable(nn.Module):
    """What the service runs: uint8 (N, 1, S, S) in, class probabilities out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(faces.float()), dim=1)


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_probs(path: Path, x: np.ndarray, tta: bool = False, batch: int = 256) -> np.ndarray:
    sess = _session(path)
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch, None]
        p = sess.run([OUTPUT_NAME], {INPUT_NAME: xb})[0]
        if tta:
            p = (p + sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(xb[..., ::-1])})[0]) / 2
        out.append(p)
    return np.concatenate(out)


def export_onnx(model: nn.Module, path: Path, labels: list[str], in_size: int, parity_faces: np.ndarray) -> float:
    """Export, check the graph, and compare with torch; returns the max abs probability difference."""
    wrapper = Deployable(copy_to_cpu(model)).eval()
    dummy = torch.zeros(2, 1, in_size, in_size, dtype=torch.uint8)
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"labels": json.dumps(labels), "input": "uint8 NCHW gray 0..255"})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(32, in_size, in_size), dtype=np.uint8)
    faces = np.concatenate([parity_faces, noise])
    with torch.no_grad():
        expected = wrapper(torch.from_numpy(faces)[:, None]).numpy()
    got = onnx_probs(path, faces)
    diff = float(np.abs(expected - got).max())
    if not diff <= PARITY_ATOL:
        raise ExportError(f"onnxruntime and torch disagree by {diff:.2e} > {PARITY_ATOL:g}")
    return diff


def copy_to_cpu(model: nn.Module) -> nn.Module:
    # Module.to's stub lacks memory_format, which torch documents and accepts.
    return copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray, *, stem_in_float: bool = True) -> None:
    """Static QDQ INT8 quantisation, calibrated on training faces.

    The stem convolution stays in float: with one scale for all of its output channels, a few wide
    channels crush the others, and the whole network inherits that error. On the f48 shape it takes
    top-label agreement with the float graph from 79% to 98% (bench/bench_int8.py).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{INPUT_NAME: calibration[i : i + 64, None]} for i in range(0, len(calibration), 64)])

        def get_next(self) -> dict | None:
            return next(self._batches, None)

    convs = [n.name for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Conv"]
    quantize_static(
        str(fp32_path),
        str(int8_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=convs[:1] if stem_in_float else [],
    )

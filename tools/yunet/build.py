"""Build YuNet's ONNX from the weights compiled into the pinned yuface wheel.

    python -m tools.yunet.build                      # rewrites service/assets/yunet/yunet_n.onnx
    python -m tools.yunet.build --out /tmp/y.onnx    # anywhere else

The source is `yuface==2023.5.1` (dev extra), whose `libfacedetection.so` is libfacedetection's
YuNet (BSD-3-Clause; see service/assets/yunet/LICENSE). Its layer table `param_pConvInfo` lists the
53 convolutions in the order the C++ runs them, each with its channels, kind (1×1 or 3×3
depthwise), ReLU flag and pointers to its weight and bias arrays. The graph below lays them out as
libfacedetection's `objectdetect_cnn` does (backbone of 6 stages, a top-down feature pyramid, four
heads per stride), and its outputs are those of OpenCV-zoo's `face_detection_yunet_2023mar`:
`cls_*`/`obj_*` after the sigmoid, `bbox_*`/`kps_*` raw, each `[1, H/s·W/s, C]` for s in 8, 16, 32.

The input is `[1, 3, H, W]` BGR in 0..255 with H and W multiples of 32, as the C++ pads it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tools.yunet.elf import ElfImage

# The one library this build reads: libfacedetection.so from yuface 2023.5.1's cp311 manylinux wheel
# (the wheel's sha256 is fd03270a672da75b89809a2c999d5728ef19c6e701408a4d0bc9c00480c864a0).
YUFACE_VERSION = "2023.5.1"
LIB_SHA256 = "7fc3c140b563f449ce7cb5bd102ece650681e5bfeffc87efe79272be1932c4f4"
N_LAYERS = 53
N_PARAMS = 53_184
STRIDES = (8, 16, 32)
HEADS = (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
OPSET = 13
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "service" / "assets" / "yunet" / "yunet_n.onnx"


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Layer:
    name: str  # the weight symbol without its `_weight` suffix, e.g. `backbone__model1_dp1_pw`
    channels: int
    filters: int
    depthwise: bool
    relu: bool
    weight: np.ndarray
    bias: np.ndarray


def yuface_library() -> Path:
    spec = importlib.util.find_spec("yuface")
    if spec is None or spec.origin is None:
        raise BuildError(f"yuface is not installed: pip install yuface=={YUFACE_VERSION}")
    return Path(spec.origin).parent / "libfacedetection.so"


def read_layers(lib: bytes) -> list[Layer]:
    """The layer table, in execution order, with each layer's arrays."""
    elf = ElfImage(lib)
    by_addr = {s.addr: s.name for s in elf.symbols.values()}
    table = elf.symbols["param_pConvInfo"]
    entry = 32  # int channels, int num_filters, 3 bools, padding, float* weights, float* biases
    if table.size != N_LAYERS * entry:
        raise BuildError(f"param_pConvInfo holds {table.size} bytes, expected {N_LAYERS} layers")
    raw = elf.read(table.addr, table.size)
    layers = []
    for i in range(N_LAYERS):
        at = table.addr + i * entry
        channels, filters, depthwise, pointwise, relu = struct.unpack_from("<ii???", raw, i * entry)
        if depthwise == pointwise:
            raise BuildError(f"layer {i} is neither 1×1 nor 3×3 depthwise")
        w_name, b_name = by_addr[elf.pointers[at + 16]], by_addr[elf.pointers[at + 24]]
        weight, bias = elf.floats(w_name), elf.floats(b_name)
        want = 9 * channels if depthwise else filters * channels
        if weight.size != want or bias.size != filters or not w_name.endswith("_weight"):
            raise BuildError(f"layer {i} ({w_name}): {weight.size} weights, {bias.size} biases")
        layers.append(Layer(w_name.removesuffix("_weight"), channels, filters, depthwise, relu, weight, bias))
    if sum(la.weight.size + la.bias.size for la in layers) != N_PARAMS:
        raise BuildError("parameter count differs from libfacedetection's YuNet")
    return layers


class _Graph:
    def __init__(self, layers: list[Layer]) -> None:
        self.layers = {la.name: la for la in layers}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _tmp(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def _const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def _conv(self, x: str, name: str, weight: np.ndarray, bias: np.ndarray, **attrs: Any) -> str:
        wn = self._const(f"{name}.weight", np.ascontiguousarray(weight, dtype=np.float32))
        bn = self._const(f"{name}.bias", bias.astype(np.float32))
        out = self._tmp(name)
        self.nodes.append(helper.make_node("Conv", [x, wn, bn], [out], name=name, **attrs))
        return out

    def conv(self, x: str, name: str) -> str:
        la = self.layers[name]
        if la.depthwise:
            # The C++ keeps a depthwise kernel tap-major: [9 taps][channels].
            w = la.weight.reshape(9, la.channels).T.reshape(la.channels, 1, 3, 3)
            attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": la.channels}
        elif name == "backbone__model0_pw":
            # The first layer is a 3×3 stride-2 convolution that the C++ runs as 1×1 over an
            # im2col copy of the image: input channel (ky*3 + kx)*3 + c, padded from 27 to 32.
            w = la.weight.reshape(la.filters, la.channels)[:, :27].reshape(la.filters, 3, 3, 3).transpose(0, 3, 1, 2)
            attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
        else:
            w = la.weight.reshape(la.filters, la.channels, 1, 1)
            attrs = {"kernel_shape": [1, 1]}
        out = self._conv(x, name, w, la.bias, **attrs)
        if la.relu:
            act = self._tmp(f"{name}_relu")
            self.nodes.append(helper.make_node("Relu", [out], [act]))
            out = act
        return out

    def dp(self, x: str, prefix: str) -> str:
        """libfacedetection's ConvDPUnit: 1×1, then 3×3 depthwise."""
        return self.conv(self.conv(x, f"{prefix}_pw"), f"{prefix}_dw")

    def stage(self, x: str, prefix: str) -> str:
        return self.dp(self.dp(x, f"{prefix}_dp1"), f"{prefix}_dp2")

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        out = self._tmp(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def pool(self, x: str) -> str:
        return self.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def up_add(self, small: str, big: str) -> str:
        scales = self._const(self._tmp("scales"), np.array([1, 1, 2, 2], dtype=np.float32))
        up = self.op("Resize", [small, "", scales], mode="nearest")
        return self.op("Add", [big, up])

    def heads(self, x: str, level: int, stride: int) -> None:
        """The four heads of one level as one 1×1 and one depthwise convolution over their 16
        channels, split afterwards: the same arithmetic as four separate units, in two kernels
        instead of eight (libfacedetection's heads read the same feature map)."""
        units = [f"bbox_head__multi_level_{kind}__{level}" for kind, _ in HEADS]
        pws = [self.layers[f"{u}_pw"] for u in units]
        dws = [self.layers[f"{u}_dw"] for u in units]
        n = sum(la.filters for la in pws)
        name = f"head_{stride}"
        pw_w = np.concatenate([la.weight.reshape(la.filters, la.channels) for la in pws]).reshape(n, -1, 1, 1)
        dw_w = np.concatenate([la.weight.reshape(9, la.channels).T for la in dws]).reshape(n, 1, 3, 3)
        pw_b, dw_b = np.concatenate([la.bias for la in pws]), np.concatenate([la.bias for la in dws])
        y = self._conv(x, f"{name}_pw", pw_w, pw_b, kernel_shape=[1, 1])
        z = self._conv(y, f"{name}_dw", dw_w, dw_b, kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=n)
        z = self.op("Transpose", [z], perm=[0, 2, 3, 1])
        z = self.op("Reshape", [z, self._const(f"{name}.shape", np.array([1, -1, n], dtype=np.int64))])
        sizes = self._const(f"{name}.split", np.array([c for _, c in HEADS], dtype=np.int64))
        raw = [f"{kind}_{stride}" if kind in ("bbox", "kps") else f"{kind}_{stride}_logit" for kind, _ in HEADS]
        self.nodes.append(helper.make_node("Split", [z, sizes], raw, axis=2))
        for kind, _ in HEADS:
            if kind in ("cls", "obj"):
                self.nodes.append(helper.make_node("Sigmoid", [f"{kind}_{stride}_logit"], [f"{kind}_{stride}"]))


def build_model(layers: list[Layer]) -> onnx.ModelProto:
    g = _Graph(layers)
    x = g.dp(g.conv("input", "backbone__model0_pw"), "backbone__model0_dp")
    x = g.stage(g.stage(g.pool(x), "backbone__model1"), "backbone__model2")
    f8 = g.stage(g.pool(x), "backbone__model3")
    f16 = g.stage(g.pool(f8), "backbone__model4")
    f32 = g.stage(g.pool(f16), "backbone__model5")
    # Top-down pyramid: each level's lateral unit runs before it is added into the finer one.
    f32 = g.dp(f32, "neck__lateral_convs__2")
    f16 = g.dp(g.up_add(f32, f16), "neck__lateral_convs__1")
    f8 = g.dp(g.up_add(f16, f8), "neck__lateral_convs__0")
    for level, (feat, stride) in enumerate(zip((f8, f16, f32), STRIDES, strict=True)):
        g.heads(feat, level, stride)
    outputs = [
        helper.make_tensor_value_info(f"{kind}_{s}", TensorProto.FLOAT, [1, None, channels])
        for kind, channels in HEADS
        for s in STRIDES
    ]
    graph = helper.make_graph(
        g.nodes,
        "yunet_n",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs,
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fer-edge")
    model.ir_version = 7
    model.doc_string = f"YuNet (libfacedetection, BSD-3-Clause) from yuface=={YUFACE_VERSION}"
    onnx.checker.check_model(model, full_check=True)
    return model


def build(lib_path: Path, out: Path) -> str:
    """Writes the ONNX; returns its sha256."""
    lib = lib_path.read_bytes()
    digest = hashlib.sha256(lib).hexdigest()
    if digest != LIB_SHA256:
        raise BuildError(f"{lib_path} has sha256 {digest}, not yuface {YUFACE_VERSION}'s {LIB_SHA256}")
    data = build_model(read_layers(lib)).SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", type=Path, default=None, help="libfacedetection.so (default: the installed yuface's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    try:
        sha = build(args.lib or yuface_library(), args.out)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}  sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

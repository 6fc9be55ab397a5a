"""The shipped YuNet ONNX is rebuilt from the pinned yuface wheel and agrees with its C++ detector."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.images import astronaut_bgr, pasted_face_frame
from service.pipeline.yunet import BUNDLED_MODEL, YuNetSession
from tools.yunet import build
from tools.yunet.elf import ElfError, ElfImage

yuface = pytest.importorskip("yuface", reason="yuface==2023.5.1 (dev extra): wheels for CPython 3.11 x86-64 Linux only")


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("yunet") / "yunet_n.onnx"
    assert build.main(["--out", str(out)]) == 0
    return out


def test_the_build_reproduces_the_shipped_file_byte_for_byte(rebuilt: Path) -> None:
    assert rebuilt.read_bytes() == BUNDLED_MODEL.read_bytes()


def test_the_layer_table_is_libfacedetections_yunet() -> None:
    layers = build.read_layers(build.yuface_library().read_bytes())
    assert len(layers) == 53 and sum(la.weight.size + la.bias.size for la in layers) == 53_184
    assert layers[0].name == "backbone__model0_pw" and layers[-1].name == "bbox_head__multi_level_kps__2_dw"
    # Heads end without ReLU; every depthwise layer of the backbone and neck has one.
    assert not any(la.relu for la in layers if la.name.startswith("bbox_head"))
    assert all(la.relu for la in layers[:29] if la.depthwise)


def _scenes() -> list[np.ndarray]:
    astro = astronaut_bgr()
    scenes = [astro, cv2.resize(astro, (640, 640)), cv2.resize(astro, (320, 320)), astro[:, ::-1].copy()]
    for size, x, y in ((56, 150, 150), (80, 480, 300), (120, 320, 240), (200, 300, 250), (40, 200, 330)):
        scenes.append(pasted_face_frame(size, x, y)[0])
    return scenes


def test_detections_match_yufaces_own_detector(rebuilt: Path) -> None:
    session = YuNetSession(rebuilt)
    compared = 0
    for img in _scenes():
        # yuface's C++ returns its boxes truncated to integers and the score as int(100·score).
        theirs = [r for r in yuface.c_detect(np.ascontiguousarray(img)) if r[0] >= 50]
        ours = session.detect(img, 0.5)
        assert len(ours) == len(theirs), (img.shape, ours, theirs)
        for r in theirs:
            f = min(ours, key=lambda f, r=r: abs(f.x - r[1]) + abs(f.y - r[2]))
            assert np.abs(np.array([f.x, f.y, f.w, f.h]) - r[1:5]).max() <= 1.0, (f, r)
            assert np.abs(f.landmarks.reshape(-1) - r[5:15]).max() <= 1.0, (f, r)
            assert abs(f.score * 100 - r[0]) <= 1.0
            compared += 1
    assert compared >= 8


def test_a_stripped_or_foreign_library_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ElfError, match="not a little-endian ELF64"):
        ElfImage(b"MZ" + bytes(100))
    lib = tmp_path / "libfacedetection.so"
    lib.write_bytes(build.yuface_library().read_bytes()[:-1] + b"\1")
    with pytest.raises(build.BuildError, match="sha256"):
        build.build(lib, tmp_path / "out.onnx")

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.config import ConfigError, EANConfig, load_config
from trainer.data import LABELS, DataError, class_index, load_split, remap
from trainer.distill import kd_loss
from trainer.layers import ECA, EANBlock, eca_kernel_size
from trainer.model import EAN, count_macs, count_params


def test_kd_loss_matches_hand_computed_values() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0]])
    t_logits = torch.tensor([[1.0, 1.0, 0.0]])
    T, alpha, y = 2.0, 0.6, torch.tensor([0])
    p = torch.softmax(t_logits / T, 1)[0].tolist()
    q = torch.softmax(s / T, 1)[0].tolist()
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    ce = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = kd_loss(s, torch.tensor([p]), y, temperature=T, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Without soft targets (round 0, the control) it is plain cross-entropy.
    assert kd_loss(s, None, y, T, alpha).item() == pytest.approx(ce, rel=1e-6)
    # Identical distributions: only the hard term is left.
    same = torch.softmax(s / T, 1)
    assert kd_loss(s, same, y, T, alpha).item() == pytest.approx((1 - alpha) * ce, rel=1e-5)


def test_eca_kernel_size_is_odd_and_adaptive() -> None:
    assert [eca_kernel_size(c) for c in (16, 64, 127)] == [3, 3, 3]
    assert eca_kernel_size(256) == 5
    assert eca_kernel_size(512) == 5
    assert all(eca_kernel_size(c) % 2 == 1 for c in range(4, 2048, 7))


def test_eca_shapes_and_gating() -> None:
    eca = ECA(32)
    assert sum(p.numel() for p in eca.parameters()) == 3  # one bias-free 1-D kernel, k=3
    x = torch.randn(2, 32, 6, 6)
    gate = eca.gate(x)
    assert gate.shape == (2, 32, 1, 1)
    assert ((gate > 0) & (gate < 1)).all()
    assert torch.allclose(eca(x), x * gate)
    # The gate is local: channel i depends only on the pooled values of channels i-1..i+1.
    x2 = x.clone()
    x2[:, 20] += 5.0
    changed = (eca.gate(x2) - gate).abs().flatten(1).amax(0) > 0
    assert changed.nonzero().flatten().tolist() == [19, 20, 21]


def test_ean_block_residual_and_stride() -> None:
    assert EANBlock(16, 16).residual and not EANBlock(16, 32).residual
    assert EANBlock(16, 32, stride=2)(torch.randn(1, 16, 12, 12)).shape == (1, 32, 6, 6)


def test_ean_shipped_architecture_meets_budget() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "trainer/configs/fer2013.yaml")
    model = EAN(cfg.student)
    assert count_params(model) <= 200_000
    assert count_macs(model) <= 15_000_000
    assert model(torch.zeros(3, 1, 48, 48)).shape == (3, 7)


def test_count_macs_by_hand() -> None:
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 48 * 48, 7))
    assert count_macs(model) == 48 * 48 * 4 * 9 + 4 * 48 * 48 * 7
    assert count_params(EAN(EANConfig(stem=8, widths=[8], depths=[1], strides=[1]))) > 0


def test_class_names_map_by_name_not_index() -> None:
    assert class_index("Happiness") == LABELS.index("happy")
    assert class_index("anger") == LABELS.index("angry")
    raf_order = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    assert [LABELS[i] for i in remap(raf_order)] == ["surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"]
    with pytest.raises(DataError, match="unknown class name 'contempt'"):
        class_index("contempt")


def _write_png(path: Path, size: int = 48) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size), 128, np.uint8))


def test_image_folders_and_csv_load(tmp_path: Path) -> None:
    for cls in ("happiness", "anger"):
        _write_png(tmp_path / "folders" / "train" / cls / "a.png", size=100)  # resized to 48
    split = load_split(tmp_path / "folders", "train")
    assert split.x.shape == (2, 48, 48)
    assert sorted(split.y.tolist()) == sorted([LABELS.index("happy"), LABELS.index("angry")])

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    px = " ".join(["7"] * 48 * 48)
    (csv_dir / "fer2013.csv").write_text(
        f"emotion,pixels,Usage\n3,{px},Training\n0,{px},PublicTest\n6,{px},Training\n"
    )
    train = load_split(csv_dir, "train")
    assert train.y.tolist() == [LABELS.index("happy"), LABELS.index("neutral")]
    assert load_split(csv_dir, "val").x.shape == (1, 48, 48)


def test_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nope", "train")
    with pytest.raises(DataError, match=r"no train\.npz"):
        load_split(tmp_path, "train")
    np.savez(tmp_path / "train.npz", x=np.zeros((3, 32, 32), np.uint8), y=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, 48, 48\)"):
        load_split(tmp_path, "train")
    np.savez(tmp_path / "train.npz", x=np.zeros((0, 48, 48), np.uint8), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="empty"):
        load_split(tmp_path, "train")
    np.savez(tmp_path / "train.npz", x=np.zeros((2, 48, 48), np.uint8), y=np.array([0, 9]))
    with pytest.raises(DataError, match="outside FER2013"):
        load_split(tmp_path, "train")
    _write_png(tmp_path / "imgs" / "val" / "contempt" / "a.png")
    with pytest.raises(DataError, match="unknown class name 'contempt'"):
        load_split(tmp_path / "imgs", "val")
    (tmp_path / "empty" / "val" / "happy").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_split(tmp_path / "empty", "val")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("student:\n  widths: [64, 128]\n  depths: [1]\n")
    with pytest.raises(ConfigError, match="student"):
        load_config(bad)
    bad.write_text("alpha: 1.5\n")
    with pytest.raises(ConfigError, match="'alpha'"):
        load_config(bad)
    bad.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="'learning_rate'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    assert load_config(None, {"round0.epochs": 3}).round0.epochs == 3


def test_eca_placement_and_the_pooled_head_gate() -> None:
    base = {"stem": 8, "widths": [16, 24, 32], "depths": [1, 2, 2], "strides": [1, 2, 2]}
    every = EAN(EANConfig(**base))
    assert sum(isinstance(b.eca, ECA) for b in every.blocks) == 5 and every.head_eca is None
    staged = EAN(EANConfig(**base, eca="stage_end", eca_from_stage=1))
    # Stage 1's last block keeps its gate; the last stage's gate moves onto the pooled features.
    assert [isinstance(b.eca, ECA) for b in staged.blocks] == [False, False, True, False, False]
    assert staged.head_eca is not None
    head = EAN(EANConfig(**base, eca="head"))
    assert not any(isinstance(b.eca, ECA) for b in head.blocks) and head.head_eca is not None
    # A per-channel gate commutes with global pooling: gating the pooled vector is ECA on the map.
    eca, fmap = ECA(32), torch.randn(3, 32, 5, 5)
    pooled = fmap.mean(dim=(2, 3))
    torch.testing.assert_close(pooled * eca.pooled_gate(pooled), eca(fmap).mean(dim=(2, 3)))

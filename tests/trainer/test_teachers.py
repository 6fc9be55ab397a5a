"""The teacher family free of the student's budget, the CPU fast path, and teachers scored once per view."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_store import ModelStore
from tests.trainer.conftest import TINY_SETS
from trainer.__main__ import main as trainer_cli
from trainer.config import ConfigError, EANConfig, ResNetConfig, StoreTeacherConfig, load_config
from trainer.data import load_split
from trainer.distill import soft_labels
from trainer.model import EAN, ResNet, count_macs, count_params
from trainer.targets import load_or_build
from trainer.teacher import StoreEnsemble
from trainer.train import _teacher_output, fit, load_checkpoint, make_batch, use_bf16
from trainer.views import apply, augment, fixed_views

REPO = Path(__file__).resolve().parents[2]
SETS = [arg for s in [*TINY_SETS, "round0.epochs=4", "round_k.epochs=3", "quantize=false"] for arg in ("--set", s)]
TINY_RESNET = ["--set", "student.family=resnet", "--set", "student.dropout=0.0"]


def test_the_dense_family_is_resnet18_at_half_width() -> None:
    cfg = load_config(None, {"student.family": "resnet"})
    model = ResNet(cfg.student)
    assert isinstance(cfg.student, ResNetConfig)
    assert count_params(model) == 2_796_263  # ResNet-18's 11.2M at half width
    assert count_macs(model) == 78_024_448
    assert model(torch.full((2, 1, 48, 48), 128, dtype=torch.uint8)).shape == (2, 7)
    # Keys of the EAN family are not the ResNet's: a mistake names the key.
    with pytest.raises(ConfigError, match=r"student\.resnet\.eca"):
        load_config(None, {"student.family": "resnet", "student.eca": "head"})
    with pytest.raises(ConfigError, match="'vgg'"):
        load_config(None, {"student.family": "vgg"})


def test_a_checkpoint_from_before_families_is_an_ean() -> None:
    ckpt = REPO / "model_store/lineage/ean-teacher/1/checkpoint.pt"
    assert "family" not in torch.load(ckpt, weights_only=True)["arch"]
    model, _ = load_checkpoint(ckpt, torch.device("cpu"))
    assert isinstance(model, EAN) and isinstance(model.cfg, EANConfig)


def test_bf16_is_chosen_only_where_it_pays() -> None:
    cpu = torch.device("cpu")
    ean, dense = load_config(None), load_config(None, {"student.family": "resnet"})
    amx = torch.cpu._is_amx_tile_supported()
    assert not use_bf16(ean, ean.student, cpu)  # slower for depthwise-separable nets, AMX or not
    assert use_bf16(dense, dense.student, cpu) == amx  # emulated without AMX: 15x slower
    forced = load_config(None, {"student.family": "resnet", "precision": "fp32"})
    assert not use_bf16(forced, forced.student, cpu)


def test_the_bf16_fast_path_learns_like_fp32(tiny_data: Path, tmp_path: Path) -> None:
    """Same seed, same data, same schedule: the loss curves and the accuracy agree."""
    train, val = load_split(tiny_data, "train"), load_split(tiny_data, "val")
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(None, {**dict(s.split("=", 1) for s in TINY_SETS), "student.family": "resnet",
                                 "student.stem": 8, "student.widths": [8, 16], "student.depths": [1, 1],
                                 "student.strides": [2, 2], "student.dropout": 0.0, "rounds": 0,
                                 "round0.epochs": 5, "precision": precision, "seed": 3})
        out = tmp_path / precision
        out.mkdir()
        runs[precision] = fit(train, val, cfg, out)[0]
    fp32, bf16 = runs["fp32"], runs["bf16"]
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(fp32.history, bf16.history, strict=True)]
    assert losses[-1][0] < 0.5 * losses[0][0] and losses[-1][1] < 0.5 * losses[0][1]  # both learn
    assert all(abs(a - b) <= 0.1 * a + 0.02 for a, b in losses), losses
    assert fp32.evaluation and bf16.evaluation
    assert abs(fp32.evaluation.accuracy - bf16.evaluation.accuracy) <= 0.05


def test_fixed_views_are_made_again_bit_for_bit() -> None:
    cfg = load_config(None)
    views = fixed_views(10, 48, 3, seed=7, aug=cfg.augment)
    again = fixed_views(10, 48, 3, seed=7, aug=cfg.augment)
    assert views.flip.shape == (3, 10) and all(torch.equal(a, b) for a, b in
                                                zip(views.as_dict().values(), again.as_dict().values(), strict=True))
    other = fixed_views(10, 48, 3, seed=8, aug=cfg.augment)
    assert not torch.equal(views.angle, other.angle)
    # A batch's views are its faces' own, whatever the batch: view 2 of face 5 alone, or among others.
    x = torch.rand(10, 1, 48, 48) * 255
    alone = apply(x[5:6], views[torch.tensor([2]), torch.tensor([5])])
    among = apply(x[[1, 5]], views[torch.tensor([0, 2]), torch.tensor([1, 5])])
    assert torch.equal(alone[0], among[1])
    # augment draws one fresh view per face from the generator it is given.
    gen = torch.Generator().manual_seed(1)
    assert torch.equal(augment(x, gen, cfg.augment), augment(x, torch.Generator().manual_seed(1), cfg.augment))


@pytest.fixture(scope="module")
def members(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two published teachers of two families: a tiny EAN and a tiny ResNet."""
    root = tmp_path_factory.mktemp("members")
    store = root / "store"
    for name, family in (("ean-teacher", []), ("resnet-teacher", TINY_RESNET)):
        assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "0", "--out", str(root / name),
                            "--store", str(store), *SETS, *family, "--set", f"model_name={name}"]) == 0
    return store


def test_a_resnet_member_is_published_and_served_like_any_member(members: Path) -> None:
    store = ModelStore(members)
    m = store.manifest("resnet-teacher", 1)
    assert m.lineage.config["student"]["family"] == "resnet" and store.verify("resnet-teacher", 1) == []
    assert m.input.dtype == "uint8" and m.metrics.val_accuracy > 0.5
    model, _ = load_checkpoint(store.version_dir("resnet-teacher", 1) / "checkpoint.pt", torch.device("cpu"))
    assert isinstance(model, ResNet)


def test_cached_targets_are_what_a_live_teacher_gives_on_the_same_view(
    members: Path, tiny_data: Path, tmp_path: Path
) -> None:
    refs = [StoreTeacherConfig(store=str(members), name=n, version=1) for n in ("ean-teacher", "resnet-teacher")]
    teacher = StoreEnsemble(refs)
    train = load_split(tiny_data, "train")
    cfg = load_config(None, {"temperature": 3.0})
    cache = load_or_build(tmp_path / "targets.pt", teacher, teacher.refs, train, 4, seed=1, aug=cfg.augment)
    assert cache.outputs.shape == (4, len(train), 7) and cache.outputs.dtype == torch.float32

    x_all = torch.from_numpy(train.x)[:, None].float()
    gen = torch.Generator().manual_seed(0)
    for start in (0, 32, 96):
        idx = torch.arange(start, start + 32)
        xb, soft = make_batch(x_all[idx], idx, gen, cfg, [teacher], cache)
        assert soft is not None
        live = soft_labels(_teacher_output([teacher], xb), cfg.temperature)
        torch.testing.assert_close(soft, live, rtol=0, atol=1e-6)
    # Without teachers (the control) the batch is the same views, with no soft labels.
    idx = torch.arange(0, 8)
    xa, _ = make_batch(x_all[idx], idx, torch.Generator().manual_seed(5), cfg, [teacher], cache)
    xc, none = make_batch(x_all[idx], idx, torch.Generator().manual_seed(5), cfg, [], cache)
    assert none is None and torch.equal(xa, xc)

    # A second run finds the cache; another teacher or other views score again.
    again = load_or_build(tmp_path / "targets.pt", teacher, teacher.refs, train, 4, seed=1, aug=cfg.augment)
    assert torch.equal(again.outputs, cache.outputs)
    one = StoreEnsemble(refs[:1])
    other = load_or_build(tmp_path / "targets.pt", one, one.refs, train, 4, seed=1, aug=cfg.augment)
    assert not torch.equal(other.outputs, cache.outputs)
    torch.testing.assert_close(other.outputs[1, :8], one(cache.batch(x_all[:8], torch.arange(8),
                                                                     torch.ones(8, dtype=torch.long))[0]))


def test_a_stage_with_cached_targets_trains_publishes_and_controls(members: Path, tiny_data: Path,
                                                                    tmp_path: Path) -> None:
    ensemble = (f"teacher_store=[{{store: {members}, name: ean-teacher, version: 1}}, "
                f"{{store: {members}, name: resnet-teacher, version: 1}}]")
    run = tmp_path / "kd"
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(run), "--store",
                        str(members), *SETS, "--set", ensemble, "--set", "teacher_views=3"]) == 0
    assert (run / "targets.pt").exists()
    manifest = ModelStore(members).manifest("ean", 1)
    assert manifest.lineage.teachers == ["ean-teacher:1", "resnet-teacher:1"]
    assert manifest.lineage.config["teacher_views"] == 3
    assert trainer_cli(["control", "--data", str(tiny_data), "--run", str(run)]) == 0
    assert (run / "control1.pt").exists()
    # Views need teachers that hold still: published ones, for one round.
    with pytest.raises(ConfigError, match="teacher_views"):
        load_config(None, {"teacher_views": 4})

"""``python -m trainer recipe``: stages published one by one, skipped once the store holds them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model_store import ModelStore
from trainer.recipe import RecipeError, _comparable, load_recipe, run_recipe, stage_config

REPO = Path(__file__).resolve().parents[2]
TINY = {"student": {"stem": 8, "widths": [16, 32], "depths": [1, 1], "strides": [2, 2]}, "batch_size": 32,
        "threads": 1, "quantize": False}


def _recipe(path: Path, member_epochs: int = 4) -> Path:
    member = {"rounds": 0, "round0": {"epochs": member_epochs, "lr": 0.2}}
    student = {"rounds": 1, "round_k": {"epochs": 2, "lr": 0.1}}
    path.write_text(yaml.safe_dump({"set": TINY, "stages": [
        {"name": "m1", "model_name": "ean-teacher", "set": {**member, "seed": 1}},
        {"name": "m2", "model_name": "ean-teacher", "set": {**member, "seed": 2}},
        {"name": "r1", "teachers": ["m1", "m2"], "set": student, "control": True},
        {"name": "r2", "teachers": ["m1", "m2", "r1"], "init_from": "r1", "set": student},
    ]}))
    return path


def test_a_recipe_publishes_each_stage_once(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe, store_root = _recipe(tmp_path / "tiny.yaml"), tmp_path / "store"
    run_recipe(recipe, str(tiny_data), str(store_root), tmp_path / "runs", dry_run=True)
    assert capsys.readouterr().out.splitlines() == ["m1: to train", "m2: to train", "r1: waits on m1, m2",
                                                    "r2: waits on m1, m2, r1"]
    # A session's worth: the members, then nothing more.
    assert run_recipe(recipe, str(tiny_data), str(store_root), tmp_path / "runs", until="m2") == {"m1": 1, "m2": 2}
    assert "ean" not in ModelStore(store_root).models()
    with pytest.raises(RecipeError, match="has no stage 'r9'"):
        run_recipe(recipe, str(tiny_data), str(store_root), tmp_path / "runs", until="r9")
    assert run_recipe(recipe, str(tiny_data), str(store_root), tmp_path / "runs") == {"m1": 1, "m2": 2, "r1": 1,
                                                                                      "r2": 2}
    store = ModelStore(store_root)
    r1, r2 = store.manifest("ean", 1), store.manifest("ean", 2)
    assert (r1.lineage.stage, r1.lineage.teachers) == ("r1", ["ean-teacher:1", "ean-teacher:2"])
    assert [r.kind for r in r1.metrics.rounds] == ["teacher", "kd"]
    report = (store.version_dir("ean", 1) / "report.json").read_text()
    assert '"controls": [' in report and '"kind": "control"' in report  # r1's control travels with it
    assert r2.lineage.teachers == ["ean-teacher:1", "ean-teacher:2", "ean:1"] and r2.lineage.init_from == "ean:1"
    assert store.manifest("ean-teacher", 2).lineage.stage == "m2"
    capsys.readouterr()

    # Again: the store holds every stage, so nothing trains. Neither the threads nor the path the store
    # is reached by make another stage.
    assert run_recipe(recipe, str(tiny_data), f"{store_root}/.", tmp_path / "runs", overrides={"threads": 2}) == {
        "m1": 1, "m2": 2, "r1": 1, "r2": 2}
    assert "training" not in capsys.readouterr().out
    assert store.versions("ean") == [1, 2]

    # A stage changed under its old name is refused, not silently retrained or skipped.
    _recipe(recipe, member_epochs=5)
    with pytest.raises(RecipeError, match=r"stage 'm1' was published as ean-teacher v1 with another config "
                                          r"\(it differs in round0\)"):
        run_recipe(recipe, str(tiny_data), str(store_root), tmp_path / "runs")


def test_a_recipe_names_its_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stages": [{"name": "r1", "teachers": ["m1"]}]}))
    with pytest.raises(RecipeError, match="stage 'r1' needs 'm1', which is not an earlier stage"):
        load_recipe(bad)
    proc = subprocess.run([sys.executable, "-m", "trainer", "recipe", str(bad), "--data", str(tmp_path),
                           "--store", str(tmp_path / "s")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: recipe") and len(proc.stderr.splitlines()) == 1


def test_the_shipped_recipe_resolves_every_stage() -> None:
    recipe = REPO / "trainer" / "recipes" / "v2.yaml"
    r = load_recipe(recipe)
    published = {s.name: 1 for s in r.stages}
    for stage in r.stages:
        cfg = stage_config(recipe, r, stage, "model_store/seed", published, {})
        assert cfg.model_name == stage.model_name


def test_a_run_saved_before_a_config_key_existed_is_the_same_stage(tmp_path: Path) -> None:
    """A stage trained by an older trainer (its config lacks a key added since) is not trained again."""
    recipe = _recipe(tmp_path / "tiny.yaml")
    r = load_recipe(recipe)
    cfg = stage_config(recipe, r, r.stages[0], str(tmp_path / "store"), {}, {}).model_dump(mode="json")
    older = {k: v for k, v in cfg.items() if k not in ("init_from", "teacher_store")}
    assert _comparable(older) == _comparable(cfg)
    assert _comparable({**cfg, "seed": 9}) != _comparable(cfg)

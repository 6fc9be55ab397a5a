"""``python -m trainer ship``: a lineage version becomes the service's model through the stable gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model_store import ModelStore
from trainer.data import load_split
from trainer.evaluate import served_score
from trainer.publish import RunError
from trainer.recipe import run_recipe
from trainer.ship import ship
from trainer.train import CHECKPOINT_FILE

REPO = Path(__file__).resolve().parents[2]
TINY = {"student": {"stem": 8, "widths": [16, 32], "depths": [1, 1], "strides": [2, 2]}, "batch_size": 32,
        "threads": 1, "quantize": False, "rounds": 0, "round0": {"epochs": 2, "lr": 0.2}}


@pytest.fixture(scope="module")
def lineage(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lineage")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"set": TINY, "stages": [
        {"name": "a", "model_name": "ean-student", "set": {"seed": 1}},
        {"name": "b", "model_name": "ean-student", "set": {"seed": 2, "round0": {"epochs": 1, "lr": 0.2}}},
    ]}))
    run_recipe(recipe, str(tiny_data), str(root / "store"), root / "runs")
    return root / "store"


def test_shipping_copies_the_served_files_and_gates_stable_on_the_same_faces(
        lineage: Path, tiny_data: Path, tmp_path: Path) -> None:
    target = tmp_path / "seed"
    assert ship(lineage, "ean-student:1", target, "ean", str(tiny_data), force_promote=False) == 1
    store = ModelStore(target)
    m = store.manifest("ean", 1)
    assert (m.name, m.lineage.shipped_from, m.lineage.stage) == ("ean", "ean-student:1", "a")
    assert CHECKPOINT_FILE not in m.files and "model.onnx" in m.files
    assert store.verify("ean", 1) == [] and store.aliases("ean") == {"candidate": 1, "stable": 1}

    with pytest.raises(RunError, match="was shipped already, as ean v1"):
        ship(lineage, "ean-student:1", target, "ean", str(tiny_data), force_promote=False)

    # The second becomes stable only if its served graph scores at least the first's on the same faces.
    assert ship(lineage, "ean-student:2", target, "ean", str(tiny_data), force_promote=False) == 2
    val = load_split(str(tiny_data), "val", 48)
    acc = [served_score(store.version_dir("ean", v) / "model.onnx", val).accuracy for v in (1, 2)]
    assert store.aliases("ean") == {"candidate": 2, "stable": 2 if acc[1] >= acc[0] else 1}


def test_a_manifest_that_claims_more_than_its_graph_scores_is_not_shipped(
        lineage: Path, tiny_data: Path, tmp_path: Path) -> None:
    liar = tmp_path / "liar"
    ModelStore(liar, create=True)
    (liar / "ean-student").mkdir()
    src = ModelStore(lineage).version_dir("ean-student", 1)
    dst = liar / "ean-student" / "1"
    dst.mkdir()
    for f in src.iterdir():
        dst.joinpath(f.name).write_bytes(f.read_bytes())
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["metrics"]["val_accuracy"] = 0.99
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=r"scores 0\.\d+ on these faces, but its manifest says 0\.9900"):
        ship(liar, "ean-student:1", tmp_path / "seed", "ean", str(tiny_data), force_promote=False)
    assert not (tmp_path / "seed" / "ean").exists()


@pytest.mark.parametrize(("ref", "message"), [
    ("ean-student", "is not name:version"),
    ("nobody:1", "holds no model 'nobody' (it holds: ean-student)"),
    ("ean-student:9", "version 9"),
])
def test_the_command_names_a_bad_reference_in_one_line(lineage: Path, tiny_data: Path, tmp_path: Path, ref: str,
                                                       message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "trainer", "ship", ref, "--from", str(lineage), "--store",
                          str(tmp_path / "seed"), "--data", str(tiny_data)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

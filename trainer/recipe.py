"""A training recipe in stages, each published to the model store before the next one starts.

    python -m trainer recipe trainer/recipes/v2.yaml --data data/fer2013 --store model_store/lineage

A run of several hours must not depend on one uninterrupted process. So every stage (a teacher
member, a T-S round with its control) is an ordinary ``fit`` whose model is published as a store
version, with the stage's name in its lineage. Running the recipe again skips every stage the store
already holds, continues an interrupted stage at its last epoch (``fit --resume``) and trains the
rest. Later stages name earlier ones as their teachers (an ensemble, run under onnxruntime) or as the
checkpoint their student starts from (transfer), so the store alone carries a run from one stage,
one process or one machine to the next.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model_store import ModelStore
from trainer.config import ConfigError, TrainConfig, first_error, load_config
from trainer.data import Split, load_split
from trainer.publish import publish_run
from trainer.train import control, fit

# Execution knobs, not the recipe: a stage trained on a GPU or with other threads is the same stage.
_EXECUTION_KEYS = ("device", "threads")


class RecipeError(Exception):
    """A recipe that cannot run as written; the message names the stage."""


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="unique in the recipe; kept in the lineage")
    model_name: str = Field("ean", description="the store name it is published under")
    set: dict[str, Any] = Field(default_factory=dict, description="config keys over the recipe's config, dotted")
    teachers: list[str] = Field(
        default_factory=list, description="earlier stages whose published models teach it, as one ensemble"
    )
    init_from: str | None = Field(None, description="an earlier stage whose checkpoint round 1's student starts from")
    control: bool = Field(False, description="train each T-S round again on cross-entropy alone (trainer control)")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str | None = Field(None, description="a base TrainConfig YAML, relative to the recipe file")
    set: dict[str, Any] = Field(default_factory=dict, description="config keys every stage shares, dotted")
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _earlier_stages(self) -> Recipe:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage {stage.name!r} appears twice")
            for dep in [*stage.teachers, *([stage.init_from] if stage.init_from else [])]:
                if dep not in seen:
                    raise ValueError(f"stage {stage.name!r} needs {dep!r}, which is not an earlier stage")
            seen.add(stage.name)
        return self


def load_recipe(path: str | Path) -> Recipe:
    try:
        raw = yaml.safe_load(Path(path).read_text())
        return Recipe.model_validate(raw)
    except FileNotFoundError:
        raise RecipeError(f"recipe {str(path)!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        where, msg = first_error(exc)
        raise RecipeError(f"recipe {str(path)!r}, {where}: {msg}") from None


def _comparable(config: dict) -> dict:
    """What makes a stage what it is: not how it ran, nor the path its store was reached by.

    ``config`` is validated first, so a key added to TrainConfig since (at its default) changes nothing.
    """
    try:
        config = TrainConfig.model_validate(config).model_dump(mode="json")
    except ValidationError:
        return config  # a config this trainer cannot read differs from any it writes
    out = {k: v for k, v in config.items() if k not in _EXECUTION_KEYS}
    out["teacher_store"] = [{**t, "store": None} for t in out.get("teacher_store") or []] or None
    if out.get("init_from"):
        out["init_from"] = {**out["init_from"], "store": None}
    return out


def stage_config(recipe_path: Path, recipe: Recipe, stage: Stage, store: str, published: dict[str, int],
                 overrides: dict) -> TrainConfig:
    """The stage's whole TrainConfig, its teachers and start resolved to the versions the store holds."""
    def ref(dep: str) -> dict:
        by_name = {s.name: s for s in recipe.stages}
        return {"store": store, "name": by_name[dep].model_name, "version": published[dep]}

    sets = {**recipe.set, **stage.set, "model_name": stage.model_name, **overrides}
    if stage.teachers:
        sets["teacher_store"] = [ref(dep) for dep in stage.teachers]
    if stage.init_from:
        sets["init_from"] = ref(stage.init_from)
    try:
        return load_config(recipe_path.parent / recipe.config if recipe.config else None, sets)
    except ConfigError as exc:
        raise RecipeError(f"stage {stage.name!r}: {exc}") from None


def find_published(store: ModelStore, stage: Stage, cfg: TrainConfig) -> int | None:
    """The version this stage was published as; a stage published with another config is an error."""
    if stage.model_name not in store.models():
        return None
    for version in store.versions(stage.model_name):
        lineage = store.manifest(stage.model_name, version).lineage
        if lineage.stage != stage.name:
            continue
        then, now = _comparable(lineage.config), _comparable(cfg.model_dump(mode="json"))
        if then != now:
            changed = sorted(k for k in now.keys() | then.keys() if then.get(k) != now.get(k))
            raise RecipeError(f"stage {stage.name!r} was published as {stage.model_name} v{version} with another "
                              f"config (it differs in {', '.join(changed)}): give the changed stage a new name")
        return version
    return None


def run_recipe(path: str | Path, data: str, store_root: str, runs: str | Path, *, overrides: dict | None = None,
               dry_run: bool = False, until: str | None = None) -> dict[str, int]:
    """Train and publish every stage the store lacks, in order, up to ``until`` (or all of them);
    returns each stage's published version."""
    path = Path(path)
    recipe = load_recipe(path)
    if until is not None and until not in {s.name for s in recipe.stages}:
        raise RecipeError(f"recipe {str(path)!r} has no stage {until!r}")
    store = ModelStore(store_root, create=True)
    published: dict[str, int] = {}
    splits: dict[int, tuple[Split, Split]] = {}
    for stage in recipe.stages:
        waiting = [d for d in dict.fromkeys([*stage.teachers, stage.init_from]) if d and d not in published]
        if waiting:  # only in a dry run: a real one trains every dependency first
            print(f"{stage.name}: waits on {', '.join(waiting)}")
            continue
        cfg = stage_config(path, recipe, stage, store_root, published, overrides or {})
        version = find_published(store, stage, cfg)
        out = Path(runs) / path.stem / stage.name
        if version is not None:
            published[stage.name] = version
            print(f"{stage.name}: published as {stage.model_name} v{version}")
        elif dry_run:
            partial = sorted(out.glob("*.partial.pt"))
            print(f"{stage.name}: to train" + (f" (resumes {', '.join(p.name for p in partial)})" if partial else ""))
        else:
            published[stage.name] = _train(stage, cfg, data, store_root, out, splits)
        if stage.name == until:
            break
    return published


def _train(stage: Stage, cfg: TrainConfig, data: str, store_root: str, out: Path,
           splits: dict[int, tuple[Split, Split]]) -> int:
    size = cfg.student.in_size
    if size not in splits:
        splits[size] = load_split(data, "train", size), load_split(data, "val", size)
    train, val = splits[size]
    _prepare(out, cfg)
    print(f"{stage.name}: training in {out}", flush=True)
    fit(train, val, cfg, out, resume=True)
    if stage.control:
        control(train, val, cfg, out, out, list(range(1, cfg.rounds + 1)), resume=True)
    version = publish_run(out, train, val, cfg, store=store_root, force_promote=False,
                          data_name=Path(data).resolve().name, stage=stage.name)
    assert version is not None
    return version


def _prepare(out: Path, cfg: TrainConfig) -> None:
    """``out`` for this config: a run left by another config of the stage is set aside, not resumed."""
    saved = out / "config.yaml"
    if saved.exists() and _comparable(yaml.safe_load(saved.read_text())) != _comparable(cfg.model_dump(mode="json")):
        stale = out.with_name(out.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        out.rename(stale)
        print(f"{out}: trained with another config, moved to {stale}")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

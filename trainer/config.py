"""Trainer configuration: one YAML file, validated; the architecture travels with every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(Exception):
    """A bad config file; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EANConfig(_Strict):
    """Architecture of an Efficient Attention Network (EAN)."""

    in_size: int = Field(48, ge=16, description="input side in pixels (square, grayscale)")
    stem: int = Field(32, ge=4, description="channels of the stride-2 stem convolution")
    widths: list[int] = Field([64, 128, 256], description="channels of each stage")
    depths: list[int] = Field([2, 3, 2], description="EAN blocks in each stage")
    strides: list[int] = Field([1, 2, 2], description="stride of each stage's first block")
    width_mult: float = Field(1.0, gt=0, description="scales stem and widths (wider teachers)")
    dropout: float = Field(0.2, ge=0, lt=1)
    num_classes: int = Field(7, ge=2)

    @model_validator(mode="after")
    def _stages_match(self) -> EANConfig:
        if not self.widths or not len(self.widths) == len(self.depths) == len(self.strides):
            raise ValueError("widths, depths and strides must be non-empty lists of one length")
        if min(self.depths) < 1 or min(self.widths) < 4:
            raise ValueError("every stage needs at least one block and four channels")
        return self


class RoundConfig(_Strict):
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0, description="peak learning rate of the one-cycle schedule")


class TrainConfig(_Strict):
    """Everything `python -m trainer fit` needs besides the data and store paths."""

    model_name: str = Field("ean", description="name of the model in the store")
    student: EANConfig = EANConfig()
    teacher_width_mult: float = Field(
        1.0, gt=0, description=">1 trains a wider EAN teacher in round 0 whose soft labels teach round 1"
    )
    round0: RoundConfig = RoundConfig(epochs=30, lr=0.1)
    rounds: int = Field(3, ge=0, description="teacher-student rounds after round 0")
    round_k: RoundConfig = RoundConfig(epochs=15, lr=0.03)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft-label (KD) term")
    soft_label_momentum: float = Field(
        0.5, ge=0, le=1, description="new soft labels = m * previous + (1 - m) * teacher's"
    )
    ferplus_weight: float = Field(
        0.0, ge=0, le=1, description="share of FER+ crowd votes mixed into the soft labels"
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(2e-4, ge=0)
    tta: bool = Field(True, description="horizontal-flip test-time augmentation at evaluation")
    crop_margin: float = Field(
        0.2, ge=0, le=1, description="face-box margin the training crops correspond to (to manifest)"
    )
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    quantize: bool = Field(True, description="also publish an INT8 variant when it loses <= 0.5 pt")
    max_int8_drop: float = 0.005


def load_config(path: str | Path | None, overrides: dict | None = None) -> TrainConfig:
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping")
    merged = _deep_merge(TrainConfig().model_dump(), raw)
    for dotted, value in (overrides or {}).items():
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {dotted!r}: {key!r} is not a section")
        node[leaf] = value
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(f"config key {where!r}: {first['msg']}") from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out

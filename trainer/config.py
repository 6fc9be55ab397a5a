"""Trainer configuration: one YAML file, validated; the architecture travels with every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(Exception):
    """A bad config file; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_stages(widths: list[int], depths: list[int], strides: list[int]) -> None:
    if not widths or not len(widths) == len(depths) == len(strides):
        raise ValueError("widths, depths and strides must be non-empty lists of one length")
    if min(depths) < 1 or min(widths) < 4:
        raise ValueError("every stage needs at least one block and four channels")


class EANConfig(_Strict):
    """Architecture of an Efficient Attention Network (EAN)."""

    family: Literal["ean"] = Field("ean", description="the model family (what a checkpoint without one is)")
    in_size: int = Field(48, ge=16, description="input side in pixels (square, grayscale)")
    stem: int = Field(32, ge=4, description="channels of the stride-2 stem convolution")
    widths: list[int] = Field([64, 128, 256], description="channels of each stage")
    depths: list[int] = Field([1, 3, 2], description="EAN blocks in each stage")
    strides: list[int] = Field([2, 2, 1], description="stride of each stage's first block")
    width_mult: float = Field(1.0, gt=0, description="scales stem and widths (wider teachers)")
    eca: Literal["every_block", "stage_end", "head"] = Field(
        "every_block",
        description="where the ECA gates sit: every block (v1); the last block of each stage, the last stage's "
        "on the pooled features; or only on the pooled features",
    )
    eca_from_stage: int = Field(0, ge=0, description="with eca=stage_end, the first stage (0-based) with a gate")
    dropout: float = Field(0.2, ge=0, lt=1, description="before the classifier")
    num_classes: int = Field(7, ge=2, description="outputs; the labels come from the data loader")

    @model_validator(mode="after")
    def _stages_match(self) -> EANConfig:
        _check_stages(self.widths, self.depths, self.strides)
        return self


class ResNetConfig(_Strict):
    """A dense residual network for 48×48 faces: a teacher free of the student's budget.

    ResNet's basic blocks (He et al., 2016) with a 3×3 stem at stride 2 and no max-pool, the shape
    that suits 48×48 inputs (Pramerdorfer & Kampel, 2016). Never shipped to the service: it teaches.
    """

    family: Literal["resnet"] = "resnet"
    in_size: int = Field(48, ge=16, description="input side in pixels (square, grayscale)")
    stem: int = Field(32, ge=4, description="channels of the stride-2 3×3 stem convolution")
    widths: list[int] = Field([32, 64, 128, 256], description="channels of each stage (ResNet-18 at half width)")
    depths: list[int] = Field([2, 2, 2, 2], description="basic blocks in each stage")
    strides: list[int] = Field([1, 2, 2, 2], description="stride of each stage's first block")
    dropout: float = Field(0.2, ge=0, lt=1, description="before the classifier")
    num_classes: int = Field(7, ge=2, description="outputs; the labels come from the data loader")

    @model_validator(mode="after")
    def _stages_match(self) -> ResNetConfig:
        _check_stages(self.widths, self.depths, self.strides)
        return self


def _family(value: object) -> str:
    """Checkpoints and manifests written before families existed hold EANs without the key."""
    family = value.get("family", "ean") if isinstance(value, dict) else getattr(value, "family", "ean")
    return str(family)


# Any trainable architecture, told apart by its ``family`` key.
ArchConfig = Annotated[
    Annotated[EANConfig, Tag("ean")] | Annotated[ResNetConfig, Tag("resnet")], Discriminator(_family)
]


class AugmentConfig(_Strict):
    """Batched augmentation for small grayscale faces; each draw is uniform in ±range."""

    rotate_deg: float = Field(15.0, ge=0, description="rotation range in degrees")
    scale: float = Field(0.125, ge=0, lt=1, description="zoom range as a fraction")
    shift: float = Field(0.05, ge=0, lt=1, description="translation range as a fraction of the side")
    contrast: float = Field(0.3, ge=0, lt=1, description="contrast factor range around 1")
    brightness: float = Field(30.0, ge=0, description="brightness offset range in grey levels")
    erase_p: float = Field(0.5, ge=0, le=1, description="probability of erasing one rectangle")


class RoundConfig(_Strict):
    epochs: int = Field(ge=1, description="epochs of this round")
    lr: float = Field(gt=0, description="peak learning rate of the round's one-cycle SGD schedule")


class StoreRef(_Strict):
    """One published version: ``store`` root, model ``name``, and a version number or an alias."""

    store: str = Field(description="model store root")
    name: str = Field("ean", description="model name in the store")
    version: int | str = Field("stable", description="a version number or an alias")


class StoreTeacherConfig(StoreRef):
    """A published version as a member of round 0's teacher (run under onnxruntime, never trained again)."""

    tta: bool = Field(True, description="average the teacher's predictions on the view and its mirror")


class TrainConfig(_Strict):
    """Everything `python -m trainer fit` needs besides the data and store paths."""

    model_name: str = Field("ean", description="name of the model in the store")
    student: ArchConfig = Field(
        EANConfig(), description="the architecture trained and published: an EAN (what the service ships) or, for "
        "a teacher member, a dense family"
    )
    teacher: ArchConfig | None = Field(
        None, description="round 0's architecture (a wider network); none: round 0 trains the student itself"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="training arithmetic on a CPU: bf16 autocast, fp32, or auto, the faster of the two for "
        "the family (docs/training.md)"
    )
    teacher_store: list[StoreTeacherConfig] | None = Field(
        None,
        description="round 0 is these published versions, an ensemble averaged in log-probability, instead of "
        "a training (exclusive with teacher); one mapping is an ensemble of one",
    )
    init_from: StoreRef | None = Field(
        None,
        description="round 1's student starts from this published version's checkpoint, optimizer included "
        "(a T-S round as a stage of its own: the previous stage's student)",
    )
    round0: RoundConfig = Field(RoundConfig(epochs=40, lr=0.1), description="round 0: cross-entropy")
    rounds: int = Field(3, ge=0, description="teacher-student rounds after round 0")
    round_k: RoundConfig = Field(RoundConfig(epochs=20, lr=0.03), description="each T-S round")
    lr_decay: float = Field(1.0, gt=0, le=1, description="round k's peak LR is round_k.lr * lr_decay^(k-1)")
    init: Literal["transfer", "scratch"] = Field(
        "transfer",
        description="a round's student starts from the previous student's weights and optimizer (transfer) "
        "or afresh (scratch, as Born-Again Networks)",
    )
    teacher_set: Literal["previous", "first", "ensemble"] = Field(
        "previous",
        description="round k's soft labels: the previous round's model, round 0's in every round, or round 0 "
        "and every student so far",
    )
    temperature: float = Field(4.0, gt=0, description="softmax temperature T of the soft labels")
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft-label (KD) term")
    teacher_views: int = Field(
        0, ge=0, description="0: the teachers score every batch live; N: they score N seeded augmented views of "
        "each face once, and each epoch the student (and its control) trains on one of those views, drawn at random "
        "(trainer/targets.py); needs teacher_store and at most one round"
    )
    ferplus_weight: float = Field(
        0.0, ge=0, le=1, description="share of FER+ crowd votes mixed into the soft labels"
    )
    augment: AugmentConfig = Field(AugmentConfig(), description="training augmentation (plus random flips)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="on the hard-label cross-entropy")
    batch_size: int = Field(128, ge=1, description="faces per SGD step")
    weight_decay: float = Field(5e-4, ge=0, description="on weights, not on BN parameters or biases")
    crop_margin: float = Field(
        0.2, ge=0, le=1, description="face-box margin the training crops correspond to (to manifest)"
    )
    seed: int = Field(0, description="seeds weights, shuffling and augmentation")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto takes a GPU when torch sees one")
    quantize: bool = Field(True, description="also publish an INT8 variant if it passes the three int8 gates")
    max_int8_drop: float = Field(0.005, ge=0, description="largest val accuracy loss of the INT8 variant")
    min_int8_agreement: float = Field(
        0.99, ge=0, le=1, description="smallest share of val faces whose INT8 top label is the float graph's"
    )
    max_int8_score_shift: float = Field(
        0.15, ge=0, le=1, description="largest move of the float graph's top-label probability under INT8"
    )

    @field_validator("teacher_store", mode="before")
    @classmethod
    def _one_member(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _one_teacher(self) -> TrainConfig:
        if self.teacher is not None and self.teacher_store is not None:
            raise ValueError("set teacher (train one) or teacher_store (use published ones), not both")
        if self.teacher_store == []:
            raise ValueError("teacher_store needs at least one version")
        if self.teacher_views and (self.teacher_store is None or self.rounds > 1):
            raise ValueError("teacher_views scores published teachers once: it needs teacher_store and rounds <= 1")
        return self


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
    # A family is set before the keys of its section: it replaces the other family's keys.
    for dotted, value in sorted((overrides or {}).items(), key=lambda kv: not kv[0].endswith(".family")):
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {dotted!r}: {key!r} is not a section")
        if leaf == "family" and _family(node) != value:
            node.clear()
        node[leaf] = value
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        where, msg = first_error(exc)
        raise ConfigError(f"config key {where!r}: {msg}") from None


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The dotted key and the message of a validation's first error: one line for the user."""
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]) or "<root>", first["msg"]


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        # An architecture of another family shares no keys with the default one: it replaces it.
        if isinstance(value, dict) and isinstance(out.get(key), dict) and _family(value) == _family(out[key]):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out

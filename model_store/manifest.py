"""The manifest: everything the service needs to run a model, and nothing it must guess.

Trainer and service share only this contract, so labels, input size and preprocessing are written
here once by the trainer and read back by the service; neither side hard-codes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    name: str = Field("faces", description="the graph's input tensor, as export named it")
    shape: list[int | None] = Field(description="NCHW; None marks the dynamic batch axis")
    dtype: Literal["uint8", "float32"] = "uint8"
    colour: Literal["gray", "bgr", "rgb"] = "gray"
    layout: Literal["NCHW"] = "NCHW"
    mean: float = Field(description="subtracted after scaling pixels to [0, 1]")
    std: float
    normalization_in_graph: bool = Field(
        description="True: feed raw pixels of `dtype`; the graph scales and normalises them"
    )

    @property
    def height(self) -> int:
        return int(self.shape[2] or 0)

    @property
    def width(self) -> int:
        return int(self.shape[3] or 0)


class OutputSpec(_Strict):
    name: str = Field("probs", description="the graph's output tensor, as export named it")
    kind: Literal["probabilities"] = Field("probabilities", description="softmax over `labels`, in their order")


class Lineage(_Strict):
    dataset: str
    round: int
    teacher_version: int | None = Field(None, description="the version of this model name that taught it, alone")
    teachers: list[str] = Field(
        default_factory=list, description="name:version of every published model whose soft labels taught it"
    )
    init_from: str | None = Field(None, description="name:version whose checkpoint its training started from")
    stage: str | None = Field(None, description="the recipe stage that trained it (python -m trainer recipe)")
    shipped_from: str | None = Field(
        None, description="name:version where it was trained, when shipped from there (python -m trainer ship)"
    )
    seed: int
    code_version: str
    config: dict = Field(default_factory=dict)
    device: str | None = Field(None, description="what trained it: cpu, cuda (and the GPU's name)")


class RoundMetrics(_Strict):
    round: int
    kind: Literal["teacher", "ce", "kd", "control"]
    epochs: int
    val_accuracy: float
    val_accuracy_tta: float
    wall_time_s: float


class Metrics(_Strict):
    val_accuracy: float = Field(description="PublicTest accuracy of the published model, 0..1")
    tta: bool = Field(description="whether val_accuracy used horizontal-flip test-time augmentation")
    per_class_recall: dict[str, float]
    params: int
    macs: int
    rounds: list[RoundMetrics] = Field(default_factory=list)
    wall_time_s: float | None = None


class FileEntry(_Strict):
    sha256: str
    size: int


class Variant(_Strict):
    """An alternative graph of the same model, such as an INT8 quantisation."""

    file: str
    val_accuracy: float
    note: str = ""
    agreement: float | None = Field(None, description="share of val faces whose top label the main graph's equals")
    max_score_shift: float | None = Field(
        None, description="largest change, over val faces, of the main graph's top label's probability"
    )


class Manifest(_Strict):
    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    version: int | None = Field(default=None, description="set by the store at publish time")
    labels: list[str] = Field(min_length=2, description="class names in output order")
    input: InputSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    crop_policy: Literal["square_margin"] = Field(
        "square_margin", description="how a face box becomes the model's input (model_store.crop)"
    )
    crop_margin: float = Field(
        ge=0.0, le=1.0, description="fraction of the face box added on each side before resizing"
    )
    model_file: str = "model.onnx"
    variants: dict[str, Variant] = Field(default_factory=dict)
    lineage: Lineage
    metrics: Metrics
    files: dict[str, FileEntry] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

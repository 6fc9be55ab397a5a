"""Which model the service serves, from which store, and how it watches for new versions."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from service.config._base import Strict


class ModelConfig(Strict):
    store: Path = Field(Path("model_store/seed"), title="Store root")
    name: str = Field("ean", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    alias: str = Field("stable", description="alias (or version number) to serve and to watch")
    variant: str | None = Field(None, description="a manifest variant such as 'int8'; the main graph when unset")
    watch_interval_s: float = Field(2.0, ge=0, description="how often the alias is checked; 0 turns watching off")
    threads: int = Field(1, ge=0, le=64, description="onnxruntime intra-op threads; 0 lets it choose")
    max_batch: int = Field(16, ge=1, le=256, description="faces per onnxruntime call")


class DetectorConfig(Strict):
    kind: str | None = Field(
        None,
        pattern=r"^(yunet|opencv_yunet|haar)$",
        description="yunet (onnxruntime) unless only yunet_model is set, which keeps cv2.FaceDetectorYN",
    )
    yunet_model: Path | None = Field(
        None, description="a YuNet ONNX file (OpenCV-zoo 2023mar outputs); the shipped one when unset"
    )
    score_threshold: float = Field(0.6, gt=0, lt=1, description="YuNet: sqrt(cls·obj) a face must reach")
    min_face: int = Field(24, ge=8, description="smallest face, in detection-size pixels")
    threads: int = Field(1, ge=1, le=64, description="YuNet: onnxruntime intra-op threads per detector")
    haar_cascade: Path | None = Field(None, description="cascade XML; OpenCV's bundled frontal-face one when unset")
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="Haar only")
    min_neighbors: int = Field(5, ge=0, le=50, description="Haar only")

    @property
    def resolved_kind(self) -> str:
        if self.kind:
            return self.kind
        # Before the onnxruntime detector, a yunet_model alone meant cv2.FaceDetectorYN.
        return "opencv_yunet" if self.yunet_model else "yunet"


class TrackingConfig(Strict):
    iou_threshold: float = Field(0.3, gt=0, lt=1)
    max_age_s: float = Field(1.0, gt=0, description="a track unseen this long ends")
    smoothing_tau_s: float = Field(0.5, ge=0, description="time constant of the per-track moving average")
    min_dwell_s: float = Field(1.0, ge=0, description="a new label must hold this long before it is published")
    reentry_window_s: float = Field(
        10.0,
        ge=0,
        description="a new track whose label is the one the camera reported less than this ago sends no event "
        "(a face that left and came back); 0 turns this off",
    )

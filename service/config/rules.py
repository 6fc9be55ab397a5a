"""Anomaly rules. Labels are names, checked against the manifest at model load, never indices."""

from __future__ import annotations

from pydantic import Field, model_validator

from service.config._base import Strict

# Frigate's name for the same idea (review alerts, recordings): the rule looks only at faces in these zones.
_REQUIRED_ZONES = "only faces in at least one of these zones of the camera count; empty: every face"


class SustainedNegativeRule(Strict):
    enabled: bool = True
    labels: list[str] = Field(
        default_factory=lambda: ["angry", "fear", "sad", "disgust"],
        min_length=1,
        description="the smoothed probabilities of these labels are summed",
    )
    threshold: float = Field(0.6, gt=0, le=1, description="sum of probabilities that counts as negative")
    min_duration_s: float = Field(3.0, ge=0, description="how long the sum must stay above threshold")
    clear_s: float = Field(1.0, ge=0, description="how long it must stay below before the event ends")
    update_delta: float = Field(0.1, gt=0, le=1, description="top score rise that sends an `update`")
    required_zones: list[str] = Field(default_factory=list, description=_REQUIRED_ZONES)


class AbruptChangeRule(Strict):
    enabled: bool = True
    from_labels: list[str] = Field(default_factory=lambda: ["neutral", "happy"], min_length=1)
    to_labels: list[str] = Field(default_factory=lambda: ["fear", "surprise"], min_length=1)
    window_s: float = Field(1.5, gt=0, description="the change must happen within this many seconds")
    min_score: float = Field(0.5, gt=0, le=1, description="smoothed probability of the new label")
    hold_s: float = Field(2.0, ge=0, description="the event ends this long after the new label stops holding")
    required_zones: list[str] = Field(default_factory=list, description=_REQUIRED_ZONES)

    @model_validator(mode="after")
    def _disjoint(self) -> AbruptChangeRule:
        overlap = set(self.from_labels) & set(self.to_labels)
        if overlap:
            raise ValueError(f"from_labels and to_labels overlap: {sorted(overlap)}")
        return self


class CameraFaultRule(Strict):
    enabled: bool = True
    no_frames_s: float = Field(5.0, gt=0, description="no frame for this long counts as a fault")


class RulesConfig(Strict):
    sustained_negative: SustainedNegativeRule = Field(default_factory=SustainedNegativeRule)
    abrupt_change: AbruptChangeRule = Field(default_factory=AbruptChangeRule)
    camera_fault: CameraFaultRule = Field(default_factory=CameraFaultRule)

    def zone_references(self) -> dict[str, list[str]]:
        """The zones each rule names, by dotted key."""
        return {
            "sustained_negative.required_zones": self.sustained_negative.required_zones,
            "abrupt_change.required_zones": self.abrupt_change.required_zones,
        }

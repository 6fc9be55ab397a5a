"""Zones and masks on real frames through the real pipeline (the default detector, onnxruntime), and their
config errors. A face is placed by the centre of its box, in coordinates relative to the frame."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from harness.images import face_crop
from service.comms.base import MemoryPublisher
from service.comms.payloads import AnomalyEvent, ExpressionChange
from service.config import CameraConfig, ConfigError, RulesConfig, Settings, TrackingConfig, load_settings
from service.demo import Segment, background, render
from service.metrics import Metrics
from service.models import ModelManager
from service.pipeline.capture import Frame
from service.pipeline.detect import Box
from service.pipeline.rules import RuleEngine
from service.pipeline.runner import CameraPipeline
from service.pipeline.track import Track
from service.pipeline.zones import ZoneFilter

LEFT_HALF = "0,0,0.5,0,0.5,1,0,1"
RIGHT_TOP = [[0.5, 0], [1, 0], [1, 0.5], [0.5, 0.5]]
RIGHT_BOTTOM = "0.5,0.5,1,0.5,1,1,0.5,1"


def face_at(x: float, y: float) -> np.ndarray:
    return render(background(640, 480), face_crop(), Segment(1.0, x=x, y=y, size=180), 0.0)


class Rig:
    def __init__(self, settings: Settings, camera: dict[str, Any]) -> None:
        self.metrics = Metrics(CollectorRegistry())
        models = ModelManager(settings.model, self.metrics)
        models.load_initial()
        self.labels = models.require().labels
        self.publisher = MemoryPublisher()
        # The detector on every frame, so that the per-detection counts below are per frame.
        base = {"id": "c", "source": "unused.avi", "detect": {"interval": 1}}
        self.cam = CameraConfig.model_validate(base | camera)
        tracking = TrackingConfig(min_dwell_s=0.2, smoothing_tau_s=0.1, max_age_s=0.5)
        self.pipe = CameraPipeline(self.cam, "unused.avi", detector=settings.detector, tracking=tracking,
                                   models=models, publisher=self.publisher, metrics=self.metrics)  # fmt: skip
        self.t = time.time()
        self.seq = 0

    def play(self, image: np.ndarray, seconds: float, fps: float = 10) -> None:
        for _ in range(round(seconds * fps)):
            self.seq += 1
            self.t += 1 / fps
            self.pipe.process(Frame(image, self.t, self.seq))

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, {"camera": "c", **labels}) or 0.0


@pytest.fixture
def rig(make_settings: Callable[..., Settings]) -> Callable[[dict[str, Any]], Rig]:
    settings = make_settings()
    return lambda camera: Rig(settings, camera)


def test_a_face_inside_a_mask_is_never_classified_or_reported(rig: Callable[[dict[str, Any]], Rig]) -> None:
    r = rig({"masks": [LEFT_HALF]})  # the television on the left
    r.play(face_at(0.25, 0.5), 1.5)
    assert r.value("fer_faces_ignored_total", reason="mask") == 15
    # No classification spent: the classify stage never ran and no face was analysed.
    assert r.value("fer_stage_seconds_count", stage="classify") == 0
    assert r.value("fer_faces_total") == 0
    assert r.publisher.events == [] and all(s.label is None for s in r.publisher.expressions)
    assert r.pipe.tracker.tracks == {}

    r.play(face_at(0.75, 0.5), 1.5)  # the same face beside the television is analysed
    assert r.value("fer_stage_seconds_count", stage="classify") == 15
    changes = [e for e in r.publisher.events if isinstance(e, ExpressionChange)]
    assert changes and changes[0].current_zones == []


def test_zones_name_the_face_and_a_face_outside_every_zone_is_dropped(rig: Callable[[dict[str, Any]], Rig]) -> None:
    r = rig({"zones": {"door": {"coordinates": LEFT_HALF}, "desk": {"coordinates": RIGHT_TOP}}})
    r.play(face_at(0.75, 0.75), 1.5)  # right bottom: in no zone
    assert r.value("fer_faces_ignored_total", reason="outside_zones") == 15
    assert r.value("fer_stage_seconds_count", stage="classify") == 0 and r.publisher.events == []

    r.play(face_at(0.25, 0.5), 1.5)
    changes = [e for e in r.publisher.events if isinstance(e, ExpressionChange)]
    assert changes and all(e.current_zones == ["door"] for e in changes)
    assert r.publisher.expressions[-1].current_zones == ["door"] and r.publisher.expressions[-1].label in r.labels

    r.play(face_at(0.75, 0.25), 1.5)  # a new face at the desk
    state = r.publisher.expressions[-1]
    assert state.current_zones == ["desk"] and state.label is not None


def test_rules_per_zone_on_real_frames(rig: Callable[[dict[str, Any]], Rig]) -> None:
    labels = rig({}).labels
    # Every label counts as negative, so the rule's timing alone decides: quick at the door, never at the desk.
    negative = {"labels": labels, "threshold": 0.5, "clear_s": 0.2}
    off = {"enabled": False}
    r = rig({
        "rules": {"sustained_negative": negative | {"min_duration_s": 0.5}, "abrupt_change": off},
        "zones": {
            "door": {"coordinates": LEFT_HALF},
            "desk": {"coordinates": RIGHT_BOTTOM,
                     "rules": {"sustained_negative": negative | {"min_duration_s": 60}, "abrupt_change": off}},
        },
    })  # fmt: skip
    r.play(face_at(0.75, 0.75), 2.0)
    assert not [e for e in r.publisher.events if isinstance(e, AnomalyEvent)]
    r.play(face_at(0.25, 0.5), 2.0)
    anomalies = [e for e in r.publisher.events if isinstance(e, AnomalyEvent)]
    assert anomalies and anomalies[0].type == "new" and anomalies[0].current_zones == ["door"]


def engine_with_zones() -> RuleEngine:
    labels = ["neutral", "sad"]
    strict = RulesConfig.model_validate({"sustained_negative": {"labels": ["sad"], "min_duration_s": 0.5}})
    camera = RulesConfig.model_validate(
        {"sustained_negative": {"labels": ["sad"], "min_duration_s": 0.5, "required_zones": ["door", "hall"]}}
    )
    return RuleEngine("c", camera, TrackingConfig(min_dwell_s=0.1), labels, {"hall": strict})


def test_required_zones_and_an_event_leaving_its_zone() -> None:
    eng = engine_with_zones()
    sad = np.array([0.1, 0.9])
    t = Track(1, Box(0, 0, 10, 10), 0.0, sad)
    out = []
    for i in range(10):
        out += eng.on_frame([t], [], i * 0.1, {1: ("desk",)})  # not a zone the rule looks at
    assert not [e for e in out if isinstance(e, AnomalyEvent)]
    for i in range(10, 20):
        out += eng.on_frame([t], [], i * 0.1, {1: ("door",)})
    new = [e for e in out if isinstance(e, AnomalyEvent)]
    assert [(e.type, e.current_zones) for e in new] == [("new", ["door"])]
    for i in range(20, 40):
        out += eng.on_frame([t], [], i * 0.1, {1: ("desk",)})  # it walks out: the event clears
    ends = [e for e in out if isinstance(e, AnomalyEvent) and e.type == "end"]
    assert [e.current_zones for e in ends] == [["desk"]]


def test_zone_filter_places_by_box_centre() -> None:
    f = ZoneFilter([((0.0, 0.0), (0.5, 0.0), (0.5, 0.5))], {})
    # Centre (0.1, 0.05) is in the masked triangle; centre (0.2, 0.4) is not, though the box overlaps it.
    placed = f.place([Box(0, 0, 128, 48), Box(96, 144, 64, 96)], 640, 480)
    assert placed.boxes == [Box(96, 144, 64, 96)] and placed.masked == 1


@pytest.mark.parametrize(
    ("camera", "error"),
    [
        ({"masks": ["0,0,1,0"]}, "cameras.0.masks.0: Value error, a polygon needs at least 3 points"),
        ({"masks": ["0,0,1,0,1.2,1"]}, "cameras.0.masks.0: Value error, point (1.2, 1) is outside 0..1"),
        ({"masks": ["0,0,1,1,1,0,0,1"]}, "cameras.0.masks.0: Value error, the outline crosses itself"),
        ({"zones": {"door": {"coordinates": [[0, 0], [1, 0]]}}}, "cameras.0.zones.door.coordinates: Value error"),
        ({"zones": {"door": {"coordinates": "0,0,x,1,1,1"}}}, "comma-separated numbers"),
        (
            {"zones": {"door": {"coordinates": LEFT_HALF}}, "rules": {"abrupt_change": {"required_zones": ["dor"]}}},
            "rules.abrupt_change.required_zones: unknown zone(s) ['dor'] (this camera's zones: door)",
        ),
        ({"zones": {"the door": {"coordinates": LEFT_HALF}}}, "zones.the door: a zone name is [a-zA-Z0-9_-]"),
        ({"transport": "http"}, "cameras.0.transport: Input should be 'tcp' or 'udp'"),
    ],
)
def test_bad_zones_and_masks_name_the_key(tmp_path: Path, camera: dict, error: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"cameras": [{"id": "c", "source": "x.avi"} | camera]}))
    with pytest.raises(ConfigError) as exc:
        load_settings(path, {})
    assert error in str(exc.value)


def test_zone_rules_merge_over_the_camera_and_top_level_rules(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "rules": {"sustained_negative": {"threshold": 0.7}},
        "cameras": [{
            "id": "c", "source": "x.avi", "rules": {"sustained_negative": {"clear_s": 2}},
            "masks": ["0.1,0.1,0.3,0.1,0.3,0.4"],
            "zones": {"door": {"coordinates": LEFT_HALF, "rules": {"sustained_negative": {"min_duration_s": 1}}},
                      "desk": {"coordinates": RIGHT_TOP}},
        }],
    }))  # fmt: skip
    cam = load_settings(path, {}).cameras[0]
    door = cam.zones["door"].rules
    assert door is not None and cam.zones["desk"].rules is None
    rule = door.sustained_negative
    assert (rule.threshold, rule.clear_s, rule.min_duration_s) == (0.7, 2.0, 1.0)
    assert cam.masks[0] == ((0.1, 0.1), (0.3, 0.1), (0.3, 0.4)) and cam.transport == "tcp"

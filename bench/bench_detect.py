"""Face detectors side by side: recall by face size, false positives and ms per 640×480 frame.

Builds its labelled set itself (bench/faceset.py: FER2013 val faces and the astronaut pasted at
40-200 px into 640×480 photographs, plus face-free frames), runs every detector at one thread on
the same frames, and prints one table. A face counts as found when a box's centre lies inside its
square and the box is 35-160% of its width (a FER2013 crop frames some faces loosely, so YuNet's
tight box can overlap it by less than IoU 0.4 and still be right); false positives are boxes on the
face-free frames, and "extra" counts the boxes on face frames that are not the face.

    .venv/bin/python bench/bench_detect.py                 # 240 face frames + 40 face-free
    .venv/bin/python bench/bench_detect.py --faces 20      # quicker
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from bench.faceset import FER_VAL, Sample, faces_and_frames
from service.config import DetectorConfig
from service.pipeline.detect import Box, detect_scaled, make_detector
from service.pipeline.yunet import BUNDLED_MODEL

BUCKETS = ((40, 40), (56, 56), (80, 80), (120, 10_000))


def matches(b: Box, face: tuple[int, int, int, int]) -> bool:
    x, y, w, h = face
    cx, cy = b.x + b.w / 2, b.y + b.h / 2
    return x <= cx <= x + w and y <= cy <= y + h and 0.35 * w <= b.w <= 1.6 * w


def run(detect: Callable[[np.ndarray], list[Box]], samples: list[Sample]) -> tuple[list[list[Box]], float, float]:
    """Boxes per sample, and wall and CPU ms per frame. Everything runs on this one thread (OpenCV
    and onnxruntime at one thread each), so its CPU time is the detector's cost even when other
    processes share the cores and stretch the wall time."""
    for s in samples[:3]:
        detect(s.image)
    out, wall, cpu = [], 0.0, 0.0
    for s in samples:
        t0, c0 = time.perf_counter(), time.thread_time()
        boxes = detect(s.image)
        wall += time.perf_counter() - t0
        cpu += time.thread_time() - c0
        out.append(boxes)
    return out, wall / len(samples) * 1000, cpu / len(samples) * 1000


def score(samples: list[Sample], found: list[list[Box]], threshold: float | None) -> tuple[list[float], int, int]:
    hits = {b: [0, 0] for b in BUCKETS}
    fp_free = extra = 0
    for s, boxes in zip(samples, found, strict=True):
        boxes = [b for b in boxes if threshold is None or (b.score or 0) >= threshold]
        if not s.faces:
            fp_free += len(boxes)
            continue
        bucket = next(b for b in BUCKETS if b[0] <= s.size <= b[1])
        hits[bucket][1] += 1
        matched = [b for b in boxes if matches(b, s.faces[0])]
        hits[bucket][0] += bool(matched)
        extra += len(boxes) - min(len(matched), 1)
    return [100 * h / n if n else float("nan") for h, n in hits.values()], fp_free, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=40, help="face frames per size (40, 56, 80, 120, 160, 200 px)")
    ap.add_argument("--free", type=int, default=40, help="face-free frames")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7], help="YuNet scores to report")
    ap.add_argument("--no-haar-full", action="store_true", help="skip the full-frame Haar run (the slowest)")
    args = ap.parse_args()
    if not FER_VAL.is_file():
        raise SystemExit(f"needs {FER_VAL}")
    cv2.setNumThreads(1)
    samples = list(faces_and_frames(args.faces, n_free=args.free))
    n_faces = sum(1 for s in samples if s.faces)
    print(f"{n_faces} frames with one face, {len(samples) - n_faces} face-free, 640x480; one thread")
    low = min(args.thresholds)
    # min_face 8: the detectors' own reach, before the service's min_face filter.
    yunet = make_detector(DetectorConfig(kind="yunet", score_threshold=low, min_face=8))
    cv_yunet = make_detector(DetectorConfig(kind="opencv_yunet", yunet_model=BUNDLED_MODEL, score_threshold=low))
    haar = make_detector(DetectorConfig(kind="haar"))
    runs: list[tuple[str, Callable[[np.ndarray], list[Box]], list[float | None]]] = []
    if not args.no_haar_full:
        runs.append(("Haar, full frame", haar.detect, [None]))
    runs.append(("Haar, 320 wide", partial(detect_scaled, haar, max_w=320, max_h=240), [None]))
    for w in (640, 480, 416, 320):
        runs.append((f"YuNet onnxruntime, {w} wide", partial(detect_scaled, yunet, max_w=w, max_h=w * 3 // 4),
                     args.thresholds))
    for w in (640, 320):
        runs.append((f"YuNet cv2.FaceDetectorYN, {w} wide",
                     partial(detect_scaled, cv_yunet, max_w=w, max_h=w * 3 // 4), [low]))
    labels = " / ".join(str(lo) if hi == lo else f">={lo}" for lo, hi in BUCKETS)
    print(f"| detector | score >= | CPU ms per frame | wall ms | recall % at {labels} px | FP on face-free | extra |")
    print("|---|---|---|---|---|---|---|")
    for name, fn, thresholds in runs:
        found, wall, cpu = run(fn, samples)
        for thr in thresholds:
            recall, fp, extra = score(samples, found, thr)
            rec = " / ".join(f"{r:.0f}" for r in recall)
            t = "-" if thr is None else f"{thr:.2f}"
            print(f"| {name} | {t} | {cpu:.1f} | {wall:.1f} | {rec} | {fp} | {extra} |", flush=True)


if __name__ == "__main__":
    main()

"""Does aligning the face crop by YuNet's eye line raise the classifier's accuracy?

FER2013 val faces (upright, as published) are pasted at 120 px into 640×480 photographs, upright
and rolled by a random angle of up to ±25°; YuNet finds them, and the shipped classifier labels
each one twice: from the service's axis-aligned crop, and from a crop rotated so that the line
between the eyes is level. Accuracy is against the FER2013 label, over the faces YuNet found.

    .venv/bin/python bench/bench_align.py               # 600 faces
    .venv/bin/python bench/bench_align.py --faces 200
"""

from __future__ import annotations

import argparse
import math

import cv2
import numpy as np

from bench.faceset import FER_VAL, ROOT, fer_face, photos, scene
from model_store import ModelStore
from service.models import load_version
from service.pipeline.classify import crop_face, to_model_colour
from service.pipeline.detect import Box
from service.pipeline.yunet import YuNetSession

SIZE = 120


def aligned_crop(image: np.ndarray, box: Box, eyes: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray:
    """crop_face's square, turned about the box centre so that the eye line is horizontal."""
    (rx, ry), (lx, ly) = eyes
    angle = math.degrees(math.atan2(ly - ry, lx - rx))
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    m = cv2.getRotationMatrix2D((cx, cy), angle, size[0] / side)
    m[0, 2] += size[0] / 2.0 - cx
    m[1, 2] += size[1] / 2.0 - cy
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def pasted(face48: np.ndarray, angle: float, pics: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    frame = scene(pics, rng)
    patch, _ = fer_face(face48, SIZE)
    side = patch.shape[0]
    rot = cv2.warpAffine(
        patch, cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0), (side, side), borderMode=cv2.BORDER_REFLECT
    )
    # A feathered square: the rotation filled its corners with mirrored face border.
    mask = cv2.erode(np.full((side, side), 255, np.uint8), np.ones((9, 9), np.uint8), borderValue=0)
    feather = cv2.GaussianBlur(mask, (0, 0), side / 30)[..., None] / 255.0
    x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
    region = frame[y : y + side, x : x + side].astype(np.float32)
    frame[y : y + side, x : x + side] = (feather * rot + (1 - feather) * region).astype(np.uint8)
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=600)
    ap.add_argument("--max-roll", type=float, default=25.0)
    args = ap.parse_args()
    store = ModelStore(ROOT / "model_store" / "seed")
    model = load_version(store, "ean", store.resolve("ean", "stable"), variant=None, threads=1, max_batch=16)
    width, height = model.input_size
    colour, margin = model.manifest.input.colour, model.manifest.crop_margin
    det = YuNetSession()
    data = np.load(FER_VAL)
    rng = np.random.default_rng(1)
    pics = photos()
    idx = rng.choice(len(data["x"]), size=args.faces, replace=False)
    print(f"model {model.name} v{model.version}; {args.faces} FER2013 val faces at {SIZE} px; labels: FER2013")
    print("| faces | found | accuracy, axis-aligned crop | accuracy, eye-line aligned crop |")
    print("|---|---|---|---|")
    for name, max_roll in (("upright", 0.0), (f"rolled up to ±{args.max_roll:g}°", args.max_roll)):
        correct = np.zeros(2, int)
        found = 0
        for i in idx:
            angle = float(rng.uniform(-max_roll, max_roll))
            frame = pasted(data["x"][i], angle, pics, rng)
            faces = det.detect(frame, 0.6)
            if not faces:
                continue
            f = max(faces, key=lambda f: f.score)
            box = Box(round(f.x), round(f.y), round(f.w), round(f.h), f.score)
            crops = [
                crop_face(frame, box, margin, (width, height)),
                aligned_crop(frame, box, f.landmarks[:2], margin, (width, height)),
            ]
            batch = np.stack([to_model_colour(c, colour) for c in crops])
            batch = batch[:, None] if batch.ndim == 3 else batch.transpose(0, 3, 1, 2)
            pred = model.predict(np.ascontiguousarray(batch)).argmax(axis=1)
            correct += pred == int(data["y"][i])
            found += 1
        acc = 100 * correct / max(found, 1)
        print(f"| {name} | {found} | {acc[0]:.1f}% | {acc[1]:.1f}% |", flush=True)


if __name__ == "__main__":
    main()

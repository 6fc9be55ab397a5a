"""``python -m trainer ship``: a version trained into one store becomes the service's model in another.

Recipes publish every stage into a lineage store (teachers, students, their checkpoints). Shipping copies
one version's served files into the store the service reads, under the service's model name, through
the same stable gate as ``publish``: it becomes candidate, and stable only if its served graph scores at
least what the stable one does on the same faces. The training checkpoint stays behind: a service
never loads it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from model_store import ModelStore
from trainer.data import load_split
from trainer.evaluate import served_score
from trainer.publish import RunError, promote
from trainer.train import CHECKPOINT_FILE

# A manifest's figure and the same graph scored again on the same faces: only float summation order
# may differ.
_RESCORE_TOLERANCE = 0.0005


def parse_ref(ref: str) -> tuple[str, str]:
    """``name:version`` or ``name:alias``."""
    name, sep, version = ref.rpartition(":")
    if not sep or not name or not version:
        raise RunError(f"{ref!r} is not name:version (e.g. ean-student:3) or name:alias (e.g. ean-student:stable)")
    return name, version


def ship(source: str | Path, ref: str, target: str | Path, name: str, data: str, *, force_promote: bool) -> int:
    """Publish ``ref`` from the ``source`` store into ``target`` as ``name``, re-scored on ``data``'s val
    split; returns its new version there."""
    src = ModelStore(source)
    model, wanted = parse_ref(ref)
    if model not in src.models():
        raise RunError(f"{source} holds no model {model!r} (it holds: {', '.join(src.models()) or 'none'})")
    version = src.resolve(model, wanted)
    problems = src.verify(model, version)
    if problems:
        raise RunError(f"{model} v{version} in {source} does not verify: {'; '.join(problems)}")
    dst = ModelStore(target, create=True)
    if name in dst.models():
        for v in dst.versions(name):
            if dst.manifest(name, v).lineage.shipped_from == f"{model}:{version}":
                raise RunError(f"{model} v{version} was shipped already, as {name} v{v} in {target}")
    manifest = src.manifest(model, version)
    vdir = src.version_dir(model, version)
    val = load_split(data, "val", manifest.input.height)
    score = served_score(vdir / manifest.model_file, val)
    if not manifest.metrics.tta and abs(score.accuracy - manifest.metrics.val_accuracy) > _RESCORE_TOLERANCE:
        raise RunError(f"{model} v{version} scores {score.accuracy:.4f} on these faces, but its manifest says "
                       f"{manifest.metrics.val_accuracy:.4f}: is --data the split it was measured on?")
    files = {f: vdir / f for f in manifest.files if f != CHECKPOINT_FILE}
    shipped = manifest.model_copy(update={
        "name": name, "version": None, "files": {}, "created_at": datetime.now(UTC),
        "lineage": manifest.lineage.model_copy(update={"shipped_from": f"{model}:{version}"}),
    })
    new_version = dst.publish(shipped, files)
    promote(dst, name, new_version, score.accuracy, val, force=force_promote)
    return new_version

"""The model store: the only contract between the trainer and the service (no torch here)."""

from model_store.manifest import (
    MANIFEST_FILE,
    FileEntry,
    InputSpec,
    Lineage,
    Manifest,
    Metrics,
    OutputSpec,
    RoundMetrics,
    Variant,
)
from model_store.store import ModelStore, StoreError, sha256_file

__all__ = [
    "MANIFEST_FILE",
    "FileEntry",
    "InputSpec",
    "Lineage",
    "Manifest",
    "Metrics",
    "ModelStore",
    "OutputSpec",
    "RoundMetrics",
    "StoreError",
    "Variant",
    "sha256_file",
]

"""Loading model versions from the store and swapping them in without a restart."""

from service.models.loaded import LoadedModel, ModelLoadError, load_version
from service.models.manager import AliasMove, ModelManager, PromoteError, Refusal, ReloadResult, StoreListing

__all__ = [
    "AliasMove",
    "LoadedModel",
    "ModelLoadError",
    "ModelManager",
    "PromoteError",
    "Refusal",
    "ReloadResult",
    "StoreListing",
    "load_version",
]

"""Loading model versions from the store and swapping them in without a restart."""

from service.models.loaded import LoadedModel, ModelLoadError, load_version
from service.models.manager import AliasMove, ModelManager, PromoteError, ReloadResult

__all__ = ["AliasMove", "LoadedModel", "ModelLoadError", "ModelManager", "PromoteError", "ReloadResult", "load_version"]

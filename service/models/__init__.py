"""Loading model versions from the store and swapping them in without a restart."""

from service.models.loaded import LoadedModel, ModelLoadError, load_version
from service.models.manager import ModelManager, ReloadResult

__all__ = ["LoadedModel", "ModelLoadError", "ModelManager", "ReloadResult", "load_version"]

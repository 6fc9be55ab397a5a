"""A fleet of gateways: following the central model store."""

from service.fleet.sync import ModelSync, SyncError

__all__ = ["ModelSync", "SyncError"]

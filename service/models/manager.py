"""Hot reload after TF Serving's availability-preserving policy, and promotion.

The served model is one reference. A request reads it once and keeps that object, so it finishes
on the version it started with even if a swap happens meanwhile; swapping is one assignment made
under a lock after the new version has been verified, loaded and warmed up.

Promotion and rollback load and warm the target before they move the alias, so a refused version
never becomes what the next start-up reads. Should an alias name a bad version at start-up anyway
(moved by hand, or by an older CLI), the alias's previous good version is served, loudly.
Everything here blocks on the disk and on the store's file lock: call it from a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field

from model_store import ModelStore, StoreError
from service.config import ModelConfig
from service.metrics import Metrics
from service.models.loaded import LoadedModel, ModelLoadError, load_version

logger = logging.getLogger(__name__)


class ReloadResult(BaseModel):
    result: Literal["swapped", "unchanged", "failed", "fallback"]
    version: int | None
    previous_version: int | None = None
    error: str | None = None


class Refusal(Enum):
    """Why a promotion or rollback was refused. The HTTP answer to each is chosen at the API edge
    (service/api/errors.py)."""

    UNKNOWN_VERSION = "unknown_version"
    """The store has no such version."""
    UNVERIFIED = "unverified"
    """The version fails the store's verification: a file missing, or not matching its recorded sha256."""
    NO_TARGET = "no_target"
    """A rollback with nothing to go back to: the alias, or an earlier version in its history, is missing
    or unreadable."""
    UNSERVABLE = "unservable"
    """The version would not load or warm up."""
    STORE_REFUSED = "store_refused"
    """The store could not move the alias."""


Operation = Literal["promote", "rollback"]


class PromoteError(Exception):
    """A promotion or rollback refused; the alias did not move."""

    def __init__(self, operation: Operation, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.kind = kind


class AliasMove(BaseModel):
    alias: str
    version: int
    reload: ReloadResult | None = Field(None, description="set when the alias is the served one")


@dataclass(frozen=True)
class StoreListing:
    """The served name's aliases and versions in the store; ``error`` when the store could not be read."""

    aliases: dict[str, int] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)
    error: str | None = None


class ModelManager:
    def __init__(
        self,
        cfg: ModelConfig,
        metrics: Metrics | None = None,
        *,
        on_swap: Callable[[LoadedModel], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.store = ModelStore(cfg.store)
        self._on_swap = on_swap
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()
        self._failed_version: int | None = None
        self.last_result: ReloadResult | None = None
        self.last_check_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def name(self) -> str:
        """The model name served from the store."""
        return self.cfg.name

    @property
    def alias(self) -> str:
        """The alias whose version is served."""
        return self.cfg.alias

    def listing(self) -> StoreListing:
        """What the store holds for the served name; a store that cannot be read is reported, not raised,
        since the served model is still answering."""
        try:
            return StoreListing(self.store.aliases(self.cfg.name), self.store.versions(self.cfg.name))
        except StoreError as exc:
            return StoreListing(error=str(exc))

    def require(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise ModelLoadError("no model is loaded")
        return model

    def load_initial(self) -> LoadedModel:
        """Load the alias at start-up, or else the newest good version it named before."""
        try:
            version = self.store.resolve(self.cfg.name, self.cfg.alias)
        except StoreError as exc:
            raise ModelLoadError(str(exc)) from None
        try:
            model = self._load(version)
        except (ModelLoadError, StoreError) as exc:
            model = self._fall_back(version, str(exc))
        self._swap(model)
        logger.info("serving %s v%s (%s)", model.name, model.version, model.model_file)
        return model

    def _fall_back(self, bad: int, error: str) -> LoadedModel:
        name, alias = self.cfg.name, self.cfg.alias
        try:
            history = self.store.alias_history(name, alias)
        except StoreError:
            history = []
        tried = {bad}
        for version in reversed(history):
            if version in tried:
                continue
            tried.add(version)
            try:
                model = self._load(version)
            except (ModelLoadError, StoreError) as exc:
                logger.error("%s:%s history: v%s cannot be served either: %s", name, alias, version, exc)
                continue
            logger.error(
                "%s:%s names v%s, which cannot be served (%s); falling back to the alias's previous good "
                "version, serving v%s. Fix the alias: python -m model_store promote %s <version>",
                name, alias, bad, error, version, name,
            )  # fmt: skip
            if self.metrics is not None:
                self.metrics.model_reloads.labels("fallback").inc()
            # The watcher must not count the same bad version again on every poll.
            self._failed_version = bad
            self.last_result = ReloadResult(result="fallback", version=version, error=error)
            return model
        raise ModelLoadError(error)

    def _load(self, version: int) -> LoadedModel:
        return load_version(
            self.store,
            self.cfg.name,
            version,
            variant=self.cfg.variant,
            threads=self.cfg.threads,
            max_batch=self.cfg.max_batch,
        )

    def _swap(self, model: LoadedModel) -> None:
        self._current = model
        if self.metrics is not None:
            self.metrics.model_info.info(
                {
                    "name": model.name,
                    "version": str(model.version),
                    "sha256": model.sha256,
                    "file": model.model_file,
                }
            )
        if self._on_swap is not None:
            self._on_swap(model)

    def check(self, *, force: bool = False) -> ReloadResult:
        """Load the version the alias names if it is not the one served.

        A version that failed is not retried on every poll (that would count one failure many
        times); ``force`` (the admin reload) retries it.
        """
        with self._lock:
            self.last_check_at = time.time()
            previous = self._current.version if self._current else None
            try:
                version = self.store.resolve(self.cfg.name, self.cfg.alias)
            except StoreError as exc:
                return self._failed(previous, None, str(exc), count=force or self._failed_version != -1)
            if version == previous:
                self._failed_version = None
                return ReloadResult(result="unchanged", version=previous)
            if version == self._failed_version and not force:
                return ReloadResult(result="unchanged", version=previous)
            try:
                model = self._load(version)
            except (ModelLoadError, StoreError) as exc:
                return self._failed(previous, version, str(exc))
            self._swap(model)
            self._failed_version = None
            logger.info("swapped %s v%s -> v%s", self.cfg.name, previous, version)
            if self.metrics is not None:
                self.metrics.model_reloads.labels("swapped").inc()
            self.last_result = ReloadResult(result="swapped", version=version, previous_version=previous)
            return self.last_result

    def _failed(self, previous: int | None, version: int | None, error: str, *, count: bool = True) -> ReloadResult:
        # -1 marks an unresolvable alias, so a broken alias file is also counted once.
        self._failed_version = version if version is not None else -1
        if count:
            logger.error("reload refused, still serving v%s: %s", previous, error)
            if self.metrics is not None:
                self.metrics.model_reloads.labels("failed").inc()
        self.last_result = ReloadResult(result="failed", version=previous, previous_version=previous, error=error)
        return self.last_result

    def promote(self, version: int, alias: str) -> AliasMove:
        """Point ``alias`` at ``version`` once it verifies, loads and warms up; swap if it is served."""
        name = self.cfg.name
        with self._lock:
            try:
                self.store.version_dir(name, version)
            except StoreError as exc:
                raise PromoteError("promote", Refusal.UNKNOWN_VERSION, str(exc)) from None
            problems = self.store.verify(name, version)
            if problems:
                raise PromoteError("promote", Refusal.UNVERIFIED, f"v{version} refused: {'; '.join(problems[:3])}")
            return self._move("promote", alias, version, lambda: self.store.set_alias(name, alias, version))

    def rollback(self, alias: str) -> AliasMove:
        """Point ``alias`` back at its previous version, once that version loads and warms up."""
        name = self.cfg.name
        with self._lock:
            try:
                version = self.store.rollback_target(name, alias)
            except StoreError as exc:
                raise PromoteError("rollback", Refusal.NO_TARGET, str(exc)) from None
            return self._move("rollback", alias, version, lambda: self.store.rollback(name, alias))

    def _move(self, operation: Operation, alias: str, version: int, move: Callable[[], object]) -> AliasMove:
        served = alias == self.cfg.alias
        current = self._current
        model = None
        if not (served and current is not None and current.version == version):
            try:
                model = self._load(version)
            except (ModelLoadError, StoreError) as exc:
                logger.error("%s of %s:%s to v%s refused, alias not moved: %s", operation,
                             self.cfg.name, alias, version, exc)  # fmt: skip
                message = f"v{version} refused, {alias} not moved: {exc}"
                raise PromoteError(operation, Refusal.UNSERVABLE, message) from None
        try:
            move()
        except StoreError as exc:
            raise PromoteError(operation, Refusal.STORE_REFUSED, str(exc)) from None
        if not served:
            return AliasMove(alias=alias, version=version)
        previous = current.version if current else None
        if model is None:
            self._failed_version = None
            self.last_result = ReloadResult(result="unchanged", version=previous)
        else:
            self._swap(model)
            self._failed_version = None
            logger.info("swapped %s v%s -> v%s (%s)", self.cfg.name, previous, version, operation)
            if self.metrics is not None:
                self.metrics.model_reloads.labels("swapped").inc()
            self.last_result = ReloadResult(result="swapped", version=version, previous_version=previous)
        return AliasMove(alias=alias, version=version, reload=self.last_result)

    def start_watching(self) -> None:
        if self.cfg.watch_interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="model-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.cfg.watch_interval_s):
            try:
                self.check()
            except Exception:
                logger.exception("model watch failed; will retry")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

"""Entry point: ``python -m service --config PATH`` or ``fer-edge serve --config PATH``.

The model is loaded and warmed up before the port opens (no slow first request); SIGTERM makes
uvicorn shut down, and the lifespan then ends open anomalies, publishes `stopped` and flushes
the outbox.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from model_store import StoreError
from service.config import ConfigError, Settings, load_settings
from service.models import ModelLoadError
from service.pipeline.detect import DetectorError

logger = logging.getLogger("service")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-edge", description="fer-edge on-device service")
    p.add_argument("command", nargs="?", choices=["serve", "check"], default="serve",
                   help="serve (default) or check: validate the config and print it with secrets hidden")  # fmt: skip
    p.add_argument("--config", default=os.environ.get("FER_CONFIG"), help="YAML file (default: $FER_CONFIG)")
    p.add_argument("--host", help="overrides api.host")
    p.add_argument("--port", type=int, help="overrides api.port")
    return p


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _after_shutdown(signum: int, frame: object) -> None:
    logger.info("stopped on signal %s", signal.Signals(signum).name)


def serve(settings: Settings) -> int:
    import uvicorn

    from service.app import create_app
    from service.runtime import Runtime

    runtime: Runtime | None = None
    try:
        runtime = Runtime(settings)
        runtime.start()
    except (ModelLoadError, StoreError, DetectorError, OSError) as exc:
        logger.error("cannot start: %s", exc)
        if runtime is not None:
            runtime.stop()
        return 2
    app = create_app(settings, runtime)
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT itself and re-raises the signal once it has shut down; this
    # handler receives that re-raise, so a graceful stop exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_shutdown)
    try:
        server.run()
    finally:
        runtime.stop()
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
        if overrides:
            settings = settings.model_copy(update={"api": settings.api.model_copy(update=overrides)})
    except ConfigError as exc:
        print(f"fer-edge: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    if args.command == "check":
        print(settings.model_dump_json(indent=2))
        return 0
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())

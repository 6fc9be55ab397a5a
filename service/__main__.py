"""Entry point: ``python -m service --config PATH`` or ``fer-edge serve --config PATH``.

The app's lifespan starts the runtime, so the model is loaded and warmed up before uvicorn opens
the port (no slow first request); a start-up failure is one line and exit code 2. SIGTERM makes
uvicorn shut down, and the lifespan then ends open anomalies, publishes `stopped` and flushes
the outbox.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from service.config import ConfigError, Settings, load_settings

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


def port_problem(host: str, port: int) -> str | None:
    """Why the HTTP port cannot be bound, or None; checked before the broker sees us `online`."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # What uvicorn sets too: a port left in TIME_WAIT by a previous run is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return (f"cannot listen on {host}:{port} ({exc.strerror or exc}): another process has the port? "
                    "Choose another with FER_API__PORT (or api.port in the config, or --port)")  # fmt: skip
    return None


def serve(settings: Settings) -> int:
    import uvicorn

    from service.app import create_app
    from service.server import server_config

    problem = port_problem(settings.api.host, settings.api.port)
    if problem is not None:
        logger.error("cannot start: %s", problem)
        return 2
    # The app's lifespan owns the runtime; uvicorn runs it before it binds the port.
    app = create_app(settings)
    server = uvicorn.Server(server_config(app, settings))
    app.state.exiting = lambda: server.should_exit
    # uvicorn handles SIGTERM/SIGINT itself and re-raises the signal once it has shut down; this
    # handler receives that re-raise, so a graceful stop exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_shutdown)
    try:
        server.run()
    except SystemExit:
        # uvicorn exits 3 when the lifespan fails; ours says why in one line and exits 2.
        if app.state.start_error is None:
            raise
    if app.state.start_error is not None:
        return 2
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

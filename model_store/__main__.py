"""``python -m model_store list|show|promote|rollback|verify|serve``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from model_store.servable import servable_problems
from model_store.store import ModelStore, StoreError

DEFAULT_ROOT = os.environ.get("FER_MODEL_STORE", "model_store/seed")


def _cmd_list(store: ModelStore, args: argparse.Namespace) -> int:
    for name in [args.model] if args.model else store.models():
        by_version: dict[int, list[str]] = {}
        for alias, version in store.aliases(name).items():
            by_version.setdefault(version, []).append(alias)
        for version in store.versions(name):
            m = store.manifest(name, version)
            tags = ",".join(sorted(by_version.get(version, [])))
            # Named as docs/model.md and the page name them: a figure taken with flip TTA is not the
            # served (one pass) one, and v1's manifest holds only that.
            kind = "flip_tta" if m.metrics.tta else "served"
            print(
                f"{name}\tv{version}\t{kind}={m.metrics.val_accuracy:.4f}\tparams={m.metrics.params}"
                f"\tmacs={m.metrics.macs}\t{m.created_at:%Y-%m-%dT%H:%M:%SZ}\t{tags}"
            )
    return 0


def _cmd_show(store: ModelStore, args: argparse.Namespace) -> int:
    version = store.resolve(args.model, args.ref)
    print(store.manifest(args.model, version).model_dump_json(indent=2))
    return 0


def _refused(store: ModelStore, args: argparse.Namespace, version: int) -> bool:
    # A service restarted on an alias that names an unservable version could not serve it.
    problems = servable_problems(store, args.model, version)
    if problems:
        print(f"error: {args.model} v{version} refused, {args.alias} not moved: {'; '.join(problems[:3])}",
              file=sys.stderr)  # fmt: skip
    return bool(problems)


def _cmd_promote(store: ModelStore, args: argparse.Namespace) -> int:
    version = store.resolve(args.model, args.ref)
    if _refused(store, args, version):
        return 1
    gateways = [g for g in args.gateways.split(",") if g] if args.gateways is not None else None
    store.set_alias(args.model, args.alias, version, gateways)
    print(f"{args.model}:{args.alias} -> v{version}" + (f" for {','.join(gateways)}" if gateways is not None else ""))
    return 0


def _cmd_rollback(store: ModelStore, args: argparse.Namespace) -> int:
    if _refused(store, args, store.rollback_target(args.model, args.alias)):
        return 1
    version = store.rollback(args.model, args.alias)
    print(f"{args.model}:{args.alias} -> v{version}")
    return 0


def _cmd_verify(store: ModelStore, args: argparse.Namespace) -> int:
    models = [args.model] if args.model else store.models()
    bad = 0
    for name in models:
        versions = [store.resolve(name, args.ref)] if args.ref else store.versions(name)
        for version in versions:
            problems = store.verify(name, version)
            bad += bool(problems)
            print(f"{name} v{version}: " + ("ok" if not problems else "; ".join(problems)))
    return 1 if bad else 0


def _cmd_serve(store: ModelStore, args: argparse.Namespace) -> int:
    from model_store.distribution import ServerConfigError, ServerSecurity, serve

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    announcer = None
    if args.mqtt_host:
        announcer = {
            "host": args.mqtt_host,
            "port": args.mqtt_port,
            "prefix": args.prefix,
            "poll_s": args.poll_s,
            "username": args.mqtt_username,
            "password": os.environ.get("MODEL_STORE_MQTT_PASSWORD"),
            "ca_file": args.mqtt_cafile,
        }

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)
    try:
        # From the environment or a file, never the command line, where every user sees it.
        security = ServerSecurity.from_options(
            token=os.environ.get("MODEL_STORE_TOKEN", "").strip() or None,
            token_file=args.token_file,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
        with contextlib.suppress(KeyboardInterrupt):
            serve(store.root, args.host, args.port, announcer, security=security, insecure=args.insecure)
    except ServerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store", description=__doc__)
    parser.add_argument("--root", default=DEFAULT_ROOT, help="store root (env FER_MODEL_STORE)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="versions with their metrics and aliases")
    p.add_argument("model", nargs="?")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("show", help="print a version's manifest")
    p.add_argument("model")
    p.add_argument("ref", nargs="?", default="stable", help="version number or alias")
    p.set_defaults(func=_cmd_show)
    p = sub.add_parser("promote", help="point an alias at a version, once it verifies and loads (exit 1 if not)")
    p.add_argument("model")
    p.add_argument("ref", help="version number or alias to promote")
    p.add_argument("--alias", default="stable")
    p.add_argument("--gateways", help="comma-separated gateway ids that take this alias first (a staged rollout)")
    p.set_defaults(func=_cmd_promote)
    p = sub.add_parser("rollback", help="point an alias back at its previous version")
    p.add_argument("model")
    p.add_argument("--alias", default="stable")
    p.set_defaults(func=_cmd_rollback)
    p = sub.add_parser("verify", help="check every file's size and sha256 (exit 1 on a mismatch)")
    p.add_argument("model", nargs="?")
    p.add_argument("ref", nargs="?", help="version number or alias (default: all versions)")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("serve", help="serve the store read-only over HTTP and announce its aliases over MQTT")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: then a token and TLS are required)")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--token-file", type=Path, help="first line: the bearer token (or env MODEL_STORE_TOKEN)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve HTTPS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--insecure", action="store_true", help="off loopback without a token or TLS: a trusted trial only")
    p.add_argument("--mqtt-host", help="announce aliases on this broker (retained <prefix>/models/<name>/<alias>)")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--mqtt-username", help="password from env MODEL_STORE_MQTT_PASSWORD")
    p.add_argument("--mqtt-cafile", type=Path, help="connect over TLS, trusting this CA (the shipped broker's 8883)")
    p.add_argument("--prefix", default="fer", help="MQTT topic prefix, as the gateways' mqtt.prefix")
    p.add_argument("--poll-s", type=float, default=1.0, help="how often the alias files are checked for changes")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_cmd_serve)
    args = parser.parse_args(argv)
    try:
        store = ModelStore(args.root)
        return args.func(store, args)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``genai serve`` and ``genai keys``: added to the genai CLI through the ``genai.commands``
entry point, so ``genai`` itself never imports the service (nor Ray, nor FastAPI)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone

from pydantic import ValidationError


def register(sub) -> None:
    serve_p = sub.add_parser("serve", help="run the service locally: Ray, the Serve app and the web page")
    serve_p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve_p.add_argument("--port", type=int, default=8000)
    serve_p.add_argument("--open", action="store_true",
                         help="no API keys (a local demo; only allowed on a loopback host)")
    serve_p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local Ray")
    serve_p.set_defaults(handler=cmd_serve)

    keys = sub.add_parser("keys", help="API keys of the service (stored hashed)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="make a key; it is printed once, as the last line")
    create.add_argument("name")
    ls = ksub.add_parser("list", help="keys with their id, name, creation and revocation time")
    ls.add_argument("--json", action="store_true")
    revoke = ksub.add_parser("revoke", help="revoke a key by id, or every key of a name")
    revoke.add_argument("key", metavar="ID_OR_NAME")
    keys.set_defaults(handler=cmd_keys)


def _settings(**kwargs):
    from serving.settings import Settings

    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors())
        print(f"error: {msgs}", file=sys.stderr)
        return None


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def cmd_keys(args: argparse.Namespace) -> int:
    from serving.store import Store

    settings = _settings()
    if settings is None:
        return 2
    store = Store(settings.db_url)
    if args.keys_command == "create":
        record, secret = store.create_key(args.name)
        print(f"created key {record.id} ({record.name}); it is shown only this once:")
        print(secret)
        return 0
    if args.keys_command == "list":
        keys = store.list_keys()
        if args.json:
            print(json.dumps([k.__dict__ for k in keys], indent=1))
            return 0
        print(f"{'ID':10} {'NAME':20} {'CREATED':21} REVOKED")
        for k in keys:
            print(f"{k.id:10} {k.name[:20]:20} {_when(k.created):21} {_when(k.revoked)}")
        return 0
    revoked = store.revoke_key(args.key)
    if not revoked:
        print(f"error: no active key with id or name {args.key!r}", file=sys.stderr)
        return 2
    for k in revoked:
        print(f"revoked key {k.id} ({k.name})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from serving.app import init_ray, port_free, start_local, stop_local
    from serving.store import Store

    settings = _settings(host=args.host, port=args.port, auth="open" if args.open else "keys")
    if settings is None:
        return 2
    if not port_free(settings.host, settings.port):
        print(f"error: --port {settings.port}: {settings.host}:{settings.port} is in use or not available",
              file=sys.stderr)
        return 2
    if settings.auth == "keys" and not [k for k in Store(settings.db_url).list_keys() if k.revoked is None]:
        print("genai: no API keys yet; create one with: genai keys create NAME (or use --open on loopback)",
              file=sys.stderr)

    stop_on_sigterm()
    try:
        print("genai: starting Ray and the Serve app (first start loads the models) ...", file=sys.stderr, flush=True)
        init_ray(address=args.ray_address)
        stop_on_sigterm()  # again: ray.init installed its own handlers
        # one machine: the Upscaler reserves 1 CPU in Ray (the rest runs video chunks) but its
        # network may use every core when it is the only work
        url = start_local(settings, address=args.ray_address,
                          engine_options=None if args.ray_address else {"threads": os.cpu_count()})
        stop_on_sigterm()
        print(f"genai is serving at {url}  (API docs: {url}docs; Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("genai: stopping (running jobs go back to the queue) ...", file=sys.stderr, flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second one must not cut the shutdown short
            signal.signal(sig, lambda signum, frame: None)
        stop_local()
    return 0


def stop_on_sigterm() -> None:
    """SIGTERM (docker stop, Kubernetes, systemd) stops like Ctrl-C: a KeyboardInterrupt in the
    main thread. Ray's driver installs its own handler at ``ray.init`` (its core worker prints a
    fatal-signal stack and the process dies with the signal), so this is installed again after it."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

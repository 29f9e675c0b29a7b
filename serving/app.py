"""The Serve application: ``build_app(args)`` for ``serve run``/``serve build`` and the config
YAML (``import_path: serving.app:build_app``), and ``start_local`` for ``genai serve``.

    serve run serving.app:build_app settings='{"auth": "keys"}'
    serve deploy serving/deploy/serve_config.yaml
"""

from __future__ import annotations

import logging
import os
import socket

from serving.processes import children, end, tree, wait_gone
from serving.settings import Settings

APP_NAME = "genai"
PROXY_GRACE_S = 5.0  # the proxy's timeout is the gateway's and this: the gateway answers its 504 first
STOP_WAIT_S = 15.0  # how long stop_local waits for the local Ray's processes before ending them

log = logging.getLogger(__name__)
_ray_roots: set[int] = set()  # the processes ray.init started here (a local Ray), for stop_local


def build_app(args: dict | None = None):
    """The application: Gateway (ingress) -> Upscaler, Designer, Synthesizer. ``args``: ``settings`` (Settings fields;
    jobs run on Ray by default), ``engine_options`` (EngineConfig fields, e.g. device,
    precision, backend) and ``upscaler`` (deployment options, e.g. ``user_config``; a Serve
    config file sets these per deployment instead)."""
    from serving.deployments import Designer, Gateway, Synthesizer, Upscaler

    args = dict(args or {})
    settings = {"job_executor": "ray", **(args.get("settings") or {})}
    checked = Settings(**settings)  # a bad setting fails here, with the field named, not in a replica
    generators = (Designer.bind(checked.design_model), Synthesizer.bind())
    if checked.image_inference == "ingress":  # the SR engines in the gateway's replica: no Upscaler hop
        gateway = Gateway.options(ray_actor_options={"num_cpus": 1})
        return gateway.bind(None, *generators, settings, args.get("engine_options"))
    upscaler = Upscaler.options(**args["upscaler"]) if args.get("upscaler") else Upscaler
    return Gateway.bind(upscaler.bind(args.get("engine_options")), *generators, settings)


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def init_ray(*, address: str | None = None, temp_dir: str | None = None, **kwargs) -> None:
    """Join ``address`` (or RAY_ADDRESS), or start a local Ray without the dashboard."""
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, logging_level=logging.WARNING, **kwargs)
        return
    # Not RAY_SERVE_THROUGHPUT_OPTIMIZED=1: it saved ~3 ms a request here (benchmarks/serving.py)
    # but a replica being deleted then no longer stopped its running job (the restart test).
    before = children(os.getpid())
    try:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, _temp_dir=temp_dir, **kwargs)
    finally:  # a start that failed halfway leaves processes too
        _ray_roots.update(children(os.getpid()) - before)


def start_local(settings: Settings, *, address: str | None = None, ray_temp_dir: str | None = None,
                engine_options: dict | None = None, upscaler: dict | None = None) -> str:
    """Start (or join) Ray, start Serve's HTTP proxy on ``settings.host:port`` and run the app.
    Returns the URL of the page. ``stop_local`` undoes it."""
    from ray import serve

    init_ray(address=address, temp_dir=ray_temp_dir)
    serve.start(http_options={"host": settings.host, "port": settings.port,
                              "request_timeout_s": settings.request_timeout_s + PROXY_GRACE_S})
    fields = settings.model_dump(mode="json", exclude_unset=True)
    serve.run(build_app({"settings": {"job_executor": "ray", **fields}, "engine_options": engine_options,
                         "upscaler": upscaler}), name=APP_NAME, route_prefix="/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/"


def stop_local(wait_s: float = STOP_WAIT_S) -> None:
    """Shut Serve and Ray down; a local Ray started here leaves no process behind: its processes
    (listed before the shutdown: GCS, raylet, its agents and workers, their children) get
    ``wait_s`` seconds to exit, then the ones left are terminated, with a log line."""
    import ray
    from ray import serve

    started = tree(_ray_roots)
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        _ray_roots.clear()
        left = wait_gone(started, wait_s)
        if left:
            log.warning("%d processes of the local Ray outlived its shutdown by %.0f s; terminating: %s",
                        len(left), wait_s, "; ".join(map(str, left)))
            end(left)

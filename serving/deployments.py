"""Ray Serve deployments: the ``Upscaler`` (many SR models per replica, small images batched),
the ``Designer`` (the learned topology generator), the ``Synthesizer`` (trained synthetic-data
generators, several per replica, by id) and the ``Gateway`` (the FastAPI app of
``serving.gateway`` as the HTTP ingress).

Resources, autoscaling and batching are set here as defaults and overridden per cluster in
the Serve config (``serving/deploy/serve_config.yaml``); batching is tuned live through
``user_config`` (``reconfigure``) without restarting replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor

from ray import serve
from ray.serve.handle import DeploymentHandle

from serving import memtrace

log = logging.getLogger("ray.serve")

_FOLDERS = 256  # far more than the generators a Synthesizer replica keeps loaded (4)
DEFAULT_BATCHING = {"batching": True, "max_batch_size": 8, "batch_wait_timeout_s": 0.01,
                    "batch_max_pixels": 256 * 256}


@serve.deployment(
    name="Upscaler",
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
    max_ongoing_requests=64,
    autoscaling_config={"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 16},
    user_config=DEFAULT_BATCHING,
    health_check_period_s=10,
)
class Upscaler:
    """Hosts up to three SR models per replica (least recently used unloaded first); requests
    name theirs with ``handle.options(multiplexed_model_id=...)``. Small RGB images (at most
    ``batch_max_pixels``) wait up to ``batch_wait_timeout_s`` to share one network call."""

    def __init__(self, engine_options: dict | None = None) -> None:
        import genai.sr  # heavy imports (torch, spandrel, onnxruntime) happen in the replica

        memtrace.start("Upscaler")

        self._engine_module = genai.sr
        self.engine_options = engine_options or {}
        # every network call from one thread: the engine's own threads (torch intra-op, ONNX
        # Runtime) use the replica's CPUs; calls queue here, and batching merges the queue
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genai-engine")
        self.batching = DEFAULT_BATCHING["batching"]
        self.batch_max_pixels = DEFAULT_BATCHING["batch_max_pixels"]

    def reconfigure(self, config: dict) -> None:
        config = {**DEFAULT_BATCHING, **(config or {})}
        self.batching = bool(config["batching"])
        self.batch_max_pixels = int(config["batch_max_pixels"])
        self._batched.set_max_batch_size(int(config["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.multiplexed(max_num_models_per_replica=3)
    async def get_model(self, model_id: str):
        m = self._engine_module
        config = m.EngineConfig(model=model_id, **self.engine_options)
        engine = await self._run(lambda: m.Upscaler(config=config))
        log.info("loaded %s (%s on %s, %s: %s)", model_id, engine.backend.name, engine.backend.device,
                 engine.backend.precision, engine.backend.reason)
        return engine

    async def ready(self) -> bool:
        return True

    async def upscale(self, pixels, scale=None, width=None, height=None):
        engine = await self.get_model(serve.get_multiplexed_model_id())
        h, w = pixels.shape[:2]
        if self.batching and pixels.ndim == 3 and pixels.shape[2] == 3 and h * w <= self.batch_max_pixels:
            return await self._batched((pixels, scale, width, height))
        from serving.inference import run_cancellable

        return await run_cancellable(self._runner, lambda cancel: engine.upscale(
            pixels, scale=scale, width=width, height=height, cancel=cancel).pixels)

    async def _run(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._runner, fn)

    @serve.batch(max_batch_size=DEFAULT_BATCHING["max_batch_size"],
                 batch_wait_timeout_s=DEFAULT_BATCHING["batch_wait_timeout_s"])
    async def _batched(self, items: list[tuple]) -> list:
        """One call of the network per group of same-shape, same-target images (a batch holds
        one model: Serve splits batches by multiplexed model id)."""
        engine = await self.get_model(serve.get_multiplexed_model_id())
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (pixels, scale, width, height) in enumerate(items):
            groups[(pixels.shape, pixels.dtype.str, scale, width, height)].append(i)
        results: list = [None] * len(items)

        def run() -> None:
            for (_, _, scale, width, height), idx in groups.items():
                outs = engine.upscale_batch([items[i][0] for i in idx], scale=scale, width=width, height=height)
                for i, out in zip(idx, outs):
                    results[i] = out

        await self._run(run)
        return results


@serve.deployment(
    name="Designer",
    ray_actor_options={"num_cpus": 0, "num_gpus": 0},  # small: shares the CPUs (a cluster's config sets them)
    max_ongoing_requests=16,
    health_check_period_s=10,
)
class Designer:
    """Hosts the learned topology generator: ``propose(spec, refine)`` answers a 2D spec with the
    proposal refined by ``refine`` SIMP iterations (metrics and file bytes)."""

    def __init__(self, model: str = "topogen-64") -> None:
        from genai.design.topogen import TopologyGenerator

        memtrace.start("Designer")
        self.generator = TopologyGenerator.load(model)
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genai-design")

    async def ready(self) -> bool:
        return True

    async def propose(self, spec: dict, refine: int) -> dict:
        from serving.inference import design_proposal, run_cancellable

        return await run_cancellable(self._runner, lambda cancel: design_proposal(self.generator, spec, refine, cancel))


@serve.deployment(
    name="Synthesizer",
    ray_actor_options={"num_cpus": 0, "num_gpus": 0},
    max_ongoing_requests=16,
    health_check_period_s=10,
)
class Synthesizer:
    """Samples from trained synthetic-data generators, up to four loaded per replica (least
    recently used unloaded first); requests name theirs with ``multiplexed_model_id`` (the
    generator's id) and pass its folder (on storage every node mounts)."""

    def __init__(self) -> None:
        memtrace.start("Synthesizer")
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genai-synth")
        self._folders: OrderedDict[str, str] = OrderedDict()  # generator id -> folder, the latest _FOLDERS

    async def ready(self) -> bool:
        return True

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_model(self, generator_id: str):
        from genai.synth.diffusion import GeneratorConfig, SynthGenerator

        run = self._folders[generator_id]
        return await asyncio.get_running_loop().run_in_executor(
            self._runner, lambda: SynthGenerator(config=GeneratorConfig(run=run)))

    async def sample(self, run_dir: str, counts: dict, seed: int, steps: int, guidance: float, sampler: str) -> dict:
        from serving.inference import run_cancellable, synth_grid

        generator_id = serve.get_multiplexed_model_id()
        self._folders[generator_id] = run_dir
        self._folders.move_to_end(generator_id)
        while len(self._folders) > _FOLDERS:  # one entry per generator ever asked for: keep the recent ones
            self._folders.popitem(last=False)
        generator = await self.get_model(generator_id)
        return await run_cancellable(self._runner, lambda cancel: synth_grid(
            generator, counts, seed=seed, steps=steps, guidance=guidance, sampler=sampler, cancel=cancel))


@serve.deployment(
    name="Gateway",
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=256,
    autoscaling_config={"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 64},
    graceful_shutdown_timeout_s=30,
)
@serve.ingress()
class Gateway:
    """The HTTP ingress: ``create_app(settings)`` with the synchronous routes on the model
    deployments' handles and jobs run on Ray."""

    def __init__(self, upscaler: DeploymentHandle | None, designer: DeploymentHandle, synthesizer: DeploymentHandle,
                 settings: dict, engine_options: dict | None = None) -> None:
        self.handles = (upscaler, designer, synthesizer)
        self.settings = settings
        self.engine_options = engine_options  # image_inference="ingress": the SR engines live here

    def __serve_build_asgi_app__(self):
        from serving.gateway import create_app
        from serving.inference import LocalInference, ServeInference
        from serving.settings import Settings

        local = LocalInference(engine_options=self.engine_options) if self.handles[0] is None else None
        app = create_app(Settings(**self.settings), inference=ServeInference(*self.handles, local=local))
        memtrace.start("Gateway")  # after the imports: traced, they take minutes
        return app

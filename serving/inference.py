"""How the gateway reaches the generators for its synchronous routes.

``ServeInference`` calls the Ray Serve deployments through their handles (the service):
``Upscaler`` (SR models, multiplexed), ``Designer`` (the learned topology generator) and
``Synthesizer`` (trained synthetic-data generators, multiplexed by id). ``LocalInference``
keeps the same engines in this process (``create_app`` without Ray: development, the web
tests, and the baseline of benchmarks/serving.py). ``design_proposal`` and ``synth_grid`` are
the work both run, so a replica and the in-process path answer the same.

Work nobody waits for stops: both run the engines through ``run_cancellable``, so a request
cancelled while it computes (a 504, a client gone, Serve cancelling a replica's request) stops
at the engine's next cancel check.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from genai.progress import CancelFn

DESIGN_FILES = {"preview_png": "preview.png", "proposal_png": "proposal.png", "glb": "design.glb",
                "stl": "design.stl"}


class Inference(Protocol):
    async def upscale(self, pixels: np.ndarray, *, model: str, scale: float | None,
                      width: int | None, height: int | None) -> np.ndarray: ...

    async def propose(self, spec: dict, *, refine: int) -> dict: ...

    async def sample(self, generator_id: str, run_dir: str, counts: dict[str, int], *, seed: int, steps: int,
                     guidance: float, sampler: str) -> dict: ...

    async def ready(self) -> None: ...


async def run_cancellable(executor, work: Callable[[CancelFn], Any]) -> Any:
    """``work(cancel)`` on ``executor`` (a replica's single engine thread), awaited. If the
    awaiting task is cancelled (``asyncio.CancelledError``: a timeout, a client gone, Serve
    cancelling the request), ``cancel()`` turns True, so the engine raises ``Cancelled`` at its
    next check (a tile, a SIMP iteration, a sampler step) and the thread is free for the next
    request; work still queued behind another is dropped before it starts."""
    stop = threading.Event()
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, work, stop.is_set)
    except asyncio.CancelledError:
        stop.set()
        raise


async def cancel_with_caller(response) -> Any:
    """Await a Ray Serve ``DeploymentResponse``; if this task is cancelled, cancel the request
    in its replica too (where ``run_cancellable`` stops the engine)."""
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise


def design_proposal(generator, spec: dict, refine: int, cancel: CancelFn | None = None) -> dict:
    """The learned generator's design for ``spec`` (a 2D spec dict) after ``refine`` SIMP
    iterations: its metrics and its files' bytes (``DESIGN_FILES``)."""
    from genai.design.problem import load_spec
    from genai.design.run import propose_design

    with tempfile.TemporaryDirectory(prefix="genai-propose-") as tmp:
        metrics = propose_design(load_spec(spec), Path(tmp), refine=refine, generator=generator, cancel=cancel)
        return {"metrics": metrics, **{k: (Path(tmp) / name).read_bytes() for k, name in DESIGN_FILES.items()}}


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, "PNG")
    return buf.getvalue()


def synth_grid(generator, counts: dict[str, int], *, seed: int, steps: int, guidance: float, sampler: str,
              cancel: CancelFn | None = None) -> dict:
    """Images sampled per class (image i from seed ``seed + i``, as ``genai synth sample``) and
    a grid of them, one row per class: PNG bytes."""
    classes = generator.classes
    labels = [i for i, c in enumerate(classes) for _ in range(counts.get(c, 0))]
    images = generator.sample(labels, seeds=[seed + i for i in range(len(labels))], guidance=guidance, steps=steps,
                              sampler=sampler, cancel=cancel)
    rows = [c for c in classes if counts.get(c, 0)]
    h, w, ch = (*generator.size, images.shape[-1]) if len(images) else (*generator.size, 1)
    cols = max([counts.get(c, 0) for c in rows], default=0)
    grid = np.full((max(1, len(rows)) * (h + 2), max(1, cols) * (w + 2), ch), 255, np.uint8)
    k = 0
    for r, c in enumerate(rows):
        for j in range(counts[c]):
            grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, j * (w + 2) + 1:j * (w + 2) + 1 + w] = images[k]
            k += 1
    return {"classes": classes, "rows": rows, "labels": [classes[i] for i in labels],
            "pngs": [_png(im) for im in images], "grid": _png(grid)}


class LocalInference:
    """Engines in this process, the ``max_models`` most recently used kept loaded."""

    def __init__(self, *, max_models: int = 2, engine_options: dict | None = None,
                 design_model: str = "topogen-64") -> None:
        self.max_models = max_models
        self.engine_options = engine_options or {}
        self.design_model = design_model
        self._engines: OrderedDict = OrderedDict()
        self._synth: OrderedDict = OrderedDict()  # run folder -> SynthGenerator
        self._designer = None
        self._lock = threading.Lock()
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genai-engine")

    def engine(self, model: str):
        from genai.sr import EngineConfig, Upscaler

        with self._lock:
            if model in self._engines:
                self._engines.move_to_end(model)
                return self._engines[model]
            engine = Upscaler(config=EngineConfig(model=model, **self.engine_options))
            self._engines[model] = engine
            while len(self._engines) > self.max_models:
                self._engines.popitem(last=False)
            return engine

    async def upscale(self, pixels, *, model, scale, width, height):
        def run(cancel):
            return self.engine(model).upscale(pixels, scale=scale, width=width, height=height, cancel=cancel).pixels

        return await run_cancellable(self._runner, run)

    async def propose(self, spec, *, refine):
        def run(cancel):
            from genai.design.topogen import TopologyGenerator

            if self._designer is None:
                self._designer = TopologyGenerator.load(self.design_model)
            return design_proposal(self._designer, spec, refine, cancel)

        return await run_cancellable(self._runner, run)

    async def sample(self, generator_id, run_dir, counts, *, seed, steps, guidance, sampler):
        def run(cancel):
            from genai.synth.diffusion import GeneratorConfig, SynthGenerator

            if run_dir not in self._synth:
                self._synth[run_dir] = SynthGenerator(config=GeneratorConfig(run=Path(run_dir)))
                while len(self._synth) > self.max_models:
                    self._synth.popitem(last=False)
            self._synth.move_to_end(run_dir)
            return synth_grid(self._synth[run_dir], counts, seed=seed, steps=steps, guidance=guidance, sampler=sampler,
                              cancel=cancel)

        return await run_cancellable(self._runner, run)

    async def ready(self) -> None:
        return None


class ServeInference:
    """The deployments: requests to the Upscaler carry the model id and those to the
    Synthesizer the generator id (``@serve.multiplexed``). With ``local`` (and no Upscaler
    handle) upscales run in this replica (``image_inference="ingress"``)."""

    def __init__(self, upscaler, designer=None, synthesizer=None, *, local: LocalInference | None = None) -> None:
        self.handle, self.designer, self.synthesizer, self.local = upscaler, designer, synthesizer, local

    async def upscale(self, pixels, *, model, scale, width, height):
        if self.handle is None:
            return await self.local.upscale(pixels, model=model, scale=scale, width=width, height=height)
        return await cancel_with_caller(
            self.handle.options(multiplexed_model_id=model).upscale.remote(pixels, scale, width, height))

    async def propose(self, spec, *, refine):
        return await cancel_with_caller(self.designer.propose.remote(spec, refine))

    async def sample(self, generator_id, run_dir, counts, *, seed, steps, guidance, sampler):
        return await cancel_with_caller(self.synthesizer.options(multiplexed_model_id=generator_id).sample.remote(
            run_dir, counts, seed, steps, guidance, sampler))

    async def ready(self) -> None:
        await asyncio.gather(*(h.ready.remote() for h in (self.handle, self.designer, self.synthesizer) if h))

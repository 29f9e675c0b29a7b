"""How the gateway reaches the super-resolution engines.

``ServeInference`` calls the Ray Serve ``Upscaler`` deployment through its handle (the service);
``LocalInference`` keeps engines in this process (``create_app`` without Ray: development, and
the baseline of benchmarks/serving.py). Both take and return HxWxC uint8/uint16 arrays.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from typing import Protocol

import numpy as np


class Inference(Protocol):
    async def upscale(self, pixels: np.ndarray, *, model: str, scale: float | None,
                      width: int | None, height: int | None) -> np.ndarray: ...

    async def ready(self) -> None: ...


class LocalInference:
    """Engines in this process, the ``max_models`` most recently used kept loaded."""

    def __init__(self, *, max_models: int = 2, engine_options: dict | None = None) -> None:
        self.max_models = max_models
        self.engine_options = engine_options or {}
        self._engines: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genai-engine")

    def engine(self, model: str):
        from genai.engine import EngineConfig, Upscaler

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
        def run():
            return self.engine(model).upscale(pixels, scale=scale, width=width, height=height).pixels

        return await asyncio.get_running_loop().run_in_executor(self._runner, run)

    async def ready(self) -> None:
        return None


class ServeInference:
    """The ``Upscaler`` deployment: requests carry the model id (``@serve.multiplexed``)."""

    def __init__(self, handle) -> None:
        self.handle = handle

    async def upscale(self, pixels, *, model, scale, width, height):
        return await self.handle.options(multiplexed_model_id=model).upscale.remote(pixels, scale, width, height)

    async def ready(self) -> None:
        await self.handle.ready.remote()

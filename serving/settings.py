"""Service settings: environment variables ``GENAI_SERVE_*`` (or keyword arguments).

``get_settings()`` is the FastAPI dependency (cached); tests and ``create_app(settings)`` pass
their own ``Settings`` instead.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from genai.paths import genai_home

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENAI_SERVE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path | None = Field(None, description="job database and files (default: GENAI_HOME/service)")
    database_url: str | None = Field(None, description="sqlite:///PATH (default) or postgresql://...")
    auth: Literal["keys", "open"] = Field("keys", description="'open' (no keys) only on a loopback host")

    max_upload_mb: int = Field(512, gt=0, description="any request body")
    max_image_mb: int = Field(50, gt=0, description="an image for the synchronous route")
    max_image_pixels: int = Field(8_000_000, gt=0, description="input pixels of a synchronous upscale")
    max_output_pixels: int = Field(64_000_000, gt=0, description="output pixels of a synchronous upscale")
    max_video_pixels: int = Field(4096 * 2160, gt=0, description="pixels of one input video frame")
    request_timeout_s: float = Field(120.0, gt=0)
    key_cache_s: float = Field(5.0, ge=0, description="a revoked key stops working within this time")
    rate_limit_per_minute: int = Field(120, ge=0, description="requests per key per minute (0: no limit)")
    max_active_jobs: int = Field(2, gt=0, description="queued + running jobs per key")

    image_inference: Literal["deployment", "ingress"] = Field(
        "deployment", description="where synchronous upscales run: the Upscaler deployment (scales apart from "
                                  "the gateway, batches) or the gateway's own replica (one Ray hop fewer)")
    image_model: str = "realesrgan-x4plus"
    video_model: str = "realesr-animevideov3"
    job_workers: int = Field(1, ge=0, description="jobs run at once by this gateway process (0: none)")
    job_executor: Literal["local", "ray"] = Field("local", description="'ray': chunks on Ray actors")
    job_lease_s: float = Field(30.0, gt=0, description="a running job without a heartbeat this long is resumed")
    job_max_attempts: int = Field(3, gt=0)
    result_ttl_hours: float = Field(72.0, ge=0, description="results and uploads of a finished job are deleted "
                                                            "this long after it ends (0: kept)")
    max_design_elements: int = Field(200_000, gt=0, description="elements of a design grid (jobs and propose)")
    max_synth_images: int = Field(20_000, gt=0, description="images of one synth-sample job")
    # work bounds, checked at submission (422): what one unit costs on a 2-core CPU is in serving/README.md
    max_design_work: int = Field(200_000_000, gt=0, description="elements x iterations x designs of a design job "
                                                               "(propose: elements x refine)")
    max_train_work: int = Field(4_000_000_000, gt=0, description="steps x batch x image pixels of a synth-train job")
    max_train_batch_pixels: int = Field(1_048_576, gt=0, description="batch x image pixels of a synth-train job: "
                                        "its memory (~4.6 KB each: 64 images of 128x128 peak at ~5 GB)")
    max_sample_work: int = Field(500_000, gt=0, description="images x sampler steps of a synth-sample job or "
                                                           "synth:sample")
    max_video_work: int = Field(100_000_000_000, gt=0, description="output pixels x frames of a remaster job")
    design_model: str = Field("topogen-64", description="the learned topology generator of designs:propose")

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> "Settings":
        if self.auth == "open" and not is_loopback(self.host):
            raise ValueError(f"auth 'open' (no API keys) is only allowed on a loopback host, not {self.host!r}")
        return self

    @property
    def home(self) -> Path:
        return self.data_dir or genai_home() / "service"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'genai.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

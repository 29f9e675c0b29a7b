"""Video remastering: probe, plan chunks, upscale, assemble (see remaster.py)."""

from genai.video.probe import VideoInfo, probe
from genai.video.remaster import RemasterConfig, RemasterResult, remaster

__all__ = ["RemasterConfig", "RemasterResult", "VideoInfo", "probe", "remaster"]

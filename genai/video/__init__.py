"""Video remastering: probe, plan chunks, upscale, assemble (see remaster.py).

``remaster(src, dst, RemasterConfig(...))`` does it all in this process. To run the chunks
elsewhere (``pipelines.remaster`` sends them to Ray actors), the steps are public too:
``prepare`` (plan the chunks, pick up the finished ones of an earlier run), ``encode_chunk``
(one chunk into a file), ``mark_done`` (record it in the resume manifest) and ``finish``
(assemble the output, remove the work folder).
"""

from genai.video.assemble import finish
from genai.video.chunks import mark_done, prepare, work_dir_for
from genai.video.encode import encode_chunk
from genai.video.plan import Chunk, Plan, RemasterConfig
from genai.video.probe import VideoInfo, probe
from genai.video.remaster import RemasterResult, remaster

__all__ = ["Chunk", "Plan", "RemasterConfig", "RemasterResult", "VideoInfo", "encode_chunk", "finish",
           "mark_done", "prepare", "probe", "remaster", "work_dir_for"]

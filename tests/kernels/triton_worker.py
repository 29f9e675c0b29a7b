"""Runs the Triton kernels under Triton's interpreter and saves inputs and outputs for the tests.

Run by the tests in a subprocess, with TRITON_INTERPRET=1 set before triton is imported (Triton
reads it when a kernel is decorated), so the interpreter never leaks into other test modules:

    TRITON_INTERPRET=1 python tests/kernels/triton_worker.py {yuv|blend} OUT.pt
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cases  # noqa: E402

from kernels import AccumulateTile, NormalizeCanvas  # noqa: E402
from kernels.experimental import RgbToYuv, YuvToRgb  # noqa: E402


def run_yuv() -> dict:
    out = {}
    for i, fmt in enumerate(cases.YUV_FORMATS):
        to_rgb, to_yuv = YuvToRgb(fmt, impl="triton"), RgbToYuv(fmt, impl="triton")
        assert to_rgb.impl == to_yuv.impl == "triton", (to_rgb, to_yuv)
        for j, shape in enumerate(cases.YUV_SHAPES):
            seed = 100 * i + j
            out[(cases.fmt_id(fmt), shape)] = {
                "rgb": to_rgb(*cases.yuv_case(fmt, shape, seed)),
                "yuv": to_yuv(cases.rgb_case(shape, seed)),
            }
    return out


def run_blend() -> dict:
    acc_op, norm_op = AccumulateTile(impl="triton"), NormalizeCanvas(impl="triton")
    assert acc_op.impl == norm_op.impl == "triton"
    c, h, w = cases.BLEND_CANVAS
    acc, wsum = torch.zeros(c, h, w), torch.zeros(h, w)
    for y0, x0, tile, feather, edges in cases.blend_tiles():
        acc_op(acc, wsum, tile, y0, x0, feather, edges)
    engine = cases.engine_upscale("triton")
    return {"acc": acc, "wsum": wsum, "normalized": norm_op(acc, wsum), "engine": engine}


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1")
    what, dest = sys.argv[1], sys.argv[2]
    torch.save({"yuv": run_yuv, "blend": run_blend}[what](), dest)

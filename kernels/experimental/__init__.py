"""Kernels no product code uses yet, kept with their tests (in ``make test-all`` only).

- yuv.py: YUV planes <-> float RGB (``YuvToRgb``, ``RgbToYuv``), for decoding and converting
  video frames on the device. genai.video converts with swscale on the host; these become
  product code once a CUDA decode path uses them (see kernels/README.md).
"""

from kernels.experimental.yuv import MATRICES, RgbToYuv, YuvFormat, YuvToRgb

__all__ = ["MATRICES", "RgbToYuv", "YuvFormat", "YuvToRgb"]

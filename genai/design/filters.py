"""Filters on element fields (the regularisation of density-based topology optimization):
density and sensitivity filters with linear cone weights max(0, rmin - distance), as in top88
and top3d (neighbours outside the domain do not count), and a smoothed Heaviside projection.
Convolutions, so they cost O(elements) on CPU and GPU alike; a kernel of more than
``FFT_ABOVE`` values (a large rmin) goes through the FFT, whose memory is that of the padded
grid, not elements x kernel (torch's direct convolution unfolds its input: a 200x100 grid with
rmin 200 asked for 25 GB)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genai.design import fem

FFT_ABOVE = 125  # kernel values: rmin up to 3 (the usual values) keeps the direct convolution


class ConeFilter:
    """H x / Hs with H_ij = max(0, rmin - |c_i - c_j|) over elements within the domain."""

    def __init__(self, element_shape: tuple[int, ...], rmin: float, *, device=None, dtype=torch.float64) -> None:
        self.dim = len(element_shape)
        r = max(0, math.ceil(rmin) - 1)
        self.pad = tuple(min(r, n - 1) for n in element_shape)  # two elements are at most n - 1 apart on an axis
        axes = [torch.arange(-p, p + 1, dtype=dtype, device=device) for p in self.pad]
        dist = torch.sqrt(sum(g ** 2 for g in torch.meshgrid(*axes, indexing="ij")))
        self.kernel = (rmin - dist).clamp(min=0)[None, None]
        self.Hs = self._conv(torch.ones(element_shape, dtype=dtype, device=device))

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution over slabs of layers along the first axis (each read with its halo):
        torch's CPU convolution in float64 unfolds its input (27 values an element in 3D), and
        a whole-grid unfold is hundreds of MB at a million elements (see ``fem.slabs``)."""
        if self.kernel.numel() > FFT_ABOVE:
            return self._conv_fft(x)
        conv = F.conv2d if self.dim == 2 else F.conv3d
        r, n0 = self.pad[0], x.shape[0]
        step = max(1, fem.SLAB_ELEMENTS // (x.numel() // n0))
        if step >= n0:
            return conv(x[None, None], self.kernel, padding=self.pad)[0, 0]
        xp = F.pad(x[None, None], (0, 0) * (self.dim - 1) + (r, r))[0, 0]  # zeros past both ends of the first axis
        out = torch.empty_like(x)
        for k0 in range(0, n0, step):
            k1 = min(n0, k0 + step)
            out[k0:k1] = conv(xp[None, None, k0:k1 + 2 * r], self.kernel, padding=(0,) + self.pad[1:])[0, 0]
        return out

    def _conv_fft(self, x: torch.Tensor) -> torch.Tensor:
        """The same convolution through the FFT: zero-padded to the full linear convolution's
        size (no wrap-around), then the centre cropped (the kernel is symmetric)."""
        shape = [n + 2 * p for n, p in zip(x.shape, self.pad)]
        y = torch.fft.irfftn(torch.fft.rfftn(x, shape) * torch.fft.rfftn(self.kernel[0, 0], shape), shape)
        return y[tuple(slice(p, p + n) for p, n in zip(self.pad, x.shape))].contiguous()

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Filtered densities: (H x) / Hs."""
        return self._conv(x) / self.Hs

    def density_transpose(self, g: torch.Tensor) -> torch.Tensor:
        """The chain rule through ``density``: H^T (g / Hs) (H is symmetric)."""
        return self._conv(g / self.Hs)

    def sensitivity(self, x: torch.Tensor, dc: torch.Tensor) -> torch.Tensor:
        """Sigmund's sensitivity filter: H (x dc) / Hs / max(1e-3, x)."""
        return self._conv(x * dc) / self.Hs / x.clamp(min=1e-3)


def heaviside(x: torch.Tensor, beta: float, eta: float = 0.5) -> torch.Tensor:
    """Smoothed Heaviside projection (Wang et al. 2011); beta -> infinity gives a 0/1 design."""
    tb, tn = math.tanh(beta * eta), math.tanh(beta * (1 - eta))
    return (tb + torch.tanh(beta * (x - eta))) / (tb + tn)


def heaviside_derivative(x: torch.Tensor, beta: float, eta: float = 0.5) -> torch.Tensor:
    tb, tn = math.tanh(beta * eta), math.tanh(beta * (1 - eta))
    return beta * (1 - torch.tanh(beta * (x - eta)) ** 2) / (tb + tn)

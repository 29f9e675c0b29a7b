"""Linear elasticity on structured grids: element stiffness, the matrix-free product, assembly.

Pure functions on torch tensors (float64; CPU or CUDA alike), no optimizer and no I/O.

Conventions (2D and 3D alike):

* elements are unit squares/cubes (scaled by ``h`` in the problem, not here); element (i, j[, k])
  spans x in [i, i+1], y in [j, j+1] (y up: j = 0 is the bottom row), z in [k, k+1];
* element fields have shape (nelx, nely) in 2D and (nelz, nelx, nely) in 3D;
* nodal fields have shape (nelx+1, nely+1, 2) in 2D and (nelz+1, nelx+1, nely+1, 3) in 3D, so
  the flat dof index is 2*(i*(nely+1)+j)+c, or 3*((k*(nelx+1)+i)*(nely+1)+j)+c;
* an element's nodes are ordered (0,0), (1,0), (1,1), (0,1) in (x, y), then the same at z+1:
  the order of top88 (Andreassen et al. 2011) and top3d (Liu & Tovar 2014), so their element
  matrices are ours.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

DTYPE = torch.float64
CORNERS_2D = ((0, 0), (1, 0), (1, 1), (0, 1))
CORNERS_3D = tuple((dx, dy, dz) for dz in (0, 1) for dx, dy in CORNERS_2D)


@dataclass(frozen=True)
class Grid:
    """A structured grid of ``shape`` elements: (nelx, nely) or (nelx, nely, nelz)."""

    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def nelx(self) -> int:
        return self.shape[0]

    @property
    def nely(self) -> int:
        return self.shape[1]

    @property
    def nelz(self) -> int:
        return self.shape[2] if self.dim == 3 else 1

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))

    @property
    def element_shape(self) -> tuple[int, ...]:
        """Shape of an element field: (nelx, nely) or (nelz, nelx, nely)."""
        return (self.nelx, self.nely) if self.dim == 2 else (self.nelz, self.nelx, self.nely)

    @property
    def node_shape(self) -> tuple[int, ...]:
        """Shape of a nodal vector field (last axis: the components)."""
        return tuple(n + 1 for n in self.element_shape) + (self.dim,)

    @property
    def dofs(self) -> int:
        return int(np.prod(self.node_shape))

    def coarsened(self) -> "Grid":
        return Grid(tuple(n // 2 for n in self.shape))

    def can_coarsen(self) -> bool:
        return all(n % 2 == 0 and n >= 2 for n in self.shape)


# ------------------------------------------------------------------ element stiffness


def _gauss_points(dim: int):
    g = 1 / np.sqrt(3)
    return list(itertools.product((-g, g), repeat=dim))


def element_stiffness(dim: int, nu: float) -> torch.Tensor:
    """Stiffness of a unit square (plane stress, thickness 1) or unit cube with E = 1, by 2x2(x2)
    Gauss quadrature (exact for bilinear/trilinear elements); dofs ordered node by node."""
    corners = CORNERS_2D if dim == 2 else CORNERS_3D
    signs = np.array([[2 * c - 1 for c in corner] for corner in corners], float)  # natural coords of nodes
    nn = len(corners)
    if dim == 2:
        D = np.array([[1, nu, 0], [nu, 1, 0], [0, 0, (1 - nu) / 2]]) / (1 - nu ** 2)
    else:
        D = np.zeros((6, 6))
        D[:3, :3] = nu
        np.fill_diagonal(D[:3, :3], 1 - nu)
        D[3:, 3:] = np.eye(3) * (1 - 2 * nu) / 2
        D /= (1 + nu) * (1 - 2 * nu)
    K = np.zeros((nn * dim, nn * dim))
    for point in _gauss_points(dim):
        # dN/dxi for N_a = prod_d (1 + s_ad xi_d) / 2^dim; x = (xi + 1) / 2 so dN/dx = 2 dN/dxi
        grads = np.zeros((nn, dim))
        for a in range(nn):
            for d in range(dim):
                term = signs[a, d] / 2 ** dim
                for e in range(dim):
                    if e != d:
                        term *= 1 + signs[a, e] * point[e]
                grads[a, d] = 2 * term
        if dim == 2:
            B = np.zeros((3, 2 * nn))
            B[0, 0::2] = grads[:, 0]
            B[1, 1::2] = grads[:, 1]
            B[2, 0::2] = grads[:, 1]
            B[2, 1::2] = grads[:, 0]
        else:
            B = np.zeros((6, 3 * nn))
            B[0, 0::3] = grads[:, 0]
            B[1, 1::3] = grads[:, 1]
            B[2, 2::3] = grads[:, 2]
            B[3, 0::3], B[3, 1::3] = grads[:, 1], grads[:, 0]
            B[4, 1::3], B[4, 2::3] = grads[:, 2], grads[:, 1]
            B[5, 0::3], B[5, 2::3] = grads[:, 2], grads[:, 0]
        K += B.T @ D @ B * (0.5 ** dim)  # det J of the map from [-1, 1]^d to the unit element
    return torch.tensor((K + K.T) / 2, dtype=DTYPE)


# ------------------------------------------------------------------ gather / scatter


def _corner_slices(grid: Grid):
    """For each element corner, the slice of the nodal field holding that node of every element."""
    if grid.dim == 2:
        nx, ny = grid.nelx, grid.nely
        return [(slice(dx, dx + nx), slice(dy, dy + ny)) for dx, dy in CORNERS_2D]
    nx, ny, nz = grid.nelx, grid.nely, grid.nelz
    return [(slice(dz, dz + nz), slice(dx, dx + nx), slice(dy, dy + ny)) for dx, dy, dz in CORNERS_3D]


def gather(grid: Grid, u: torch.Tensor) -> torch.Tensor:
    """Nodal field (..., node_shape) -> element dof vectors (..., *element_shape, ndof_e).
    Leading dims (load cases) are kept."""
    lead = u.shape[: u.dim() - grid.dim - 1]
    parts = [u[(..., *s, slice(None))] for s in _corner_slices(grid)]
    return torch.cat(parts, dim=-1).reshape(*lead, *grid.element_shape, -1)


def scatter(grid: Grid, fe: torch.Tensor) -> torch.Tensor:
    """Element dof vectors (..., *element_shape, ndof_e) -> summed nodal field (..., node_shape)."""
    lead = fe.shape[: fe.dim() - grid.dim - 1]
    out = torch.zeros(*lead, *grid.node_shape, dtype=fe.dtype, device=fe.device)
    _scatter_add(grid, fe, out)
    return out


def _scatter_add(grid: Grid, fe: torch.Tensor, out: torch.Tensor) -> None:
    d = grid.dim
    for a, s in enumerate(_corner_slices(grid)):
        out[(..., *s, slice(None))] += fe[..., a * d:(a + 1) * d]


# ------------------------------------------------------------------ element-wise kernels, by slabs

SLAB_ELEMENTS = 32_768


def slabs(grid: Grid, elements: int | None = None):
    """Layers of elements along the first axis of an element field (z in 3D, x in 2D), about
    ``elements`` at a time: (first layer, end layer, the slab's own grid). The element-wise
    kernels below run slab by slab so their per-element temporaries (8 or 24 values an element)
    stay a few MB: in cache, and reused by malloc. On the whole grid they were 96 to 192 MB at a
    million 3D elements, over glibc's largest mmap threshold (32 MB), so every one was mmapped,
    unmapped when freed and faulted in (zeroed by the kernel) page by page again: the per-element
    cost of a matrix-free product tripled from 128k to 1M elements, half of it system time."""
    n0 = grid.element_shape[0]
    step = max(1, (elements or SLAB_ELEMENTS) // (grid.elements // n0))
    for k0 in range(0, n0, step):
        k1 = min(n0, k0 + step)
        yield k0, k1, Grid((k1 - k0, grid.nely)) if grid.dim == 2 else Grid((grid.nelx, grid.nely, k1 - k0))


def _nodes(grid: Grid, t: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    """The nodes of element layers k0..k1 of a nodal field (..., *node_shape)."""
    return t.narrow(t.dim() - grid.dim - 1, k0, k1 - k0 + 1)


def _elements(grid: Grid, t: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    """Element layers k0..k1 of an element field (..., *element_shape)."""
    return t.narrow(t.dim() - grid.dim, k0, k1 - k0)


def apply_stiffness(grid: Grid, E: torch.Tensor, ke: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """K(E) u without forming K: sum over elements of E_e ke u_e (matrix-free)."""
    out = torch.zeros(torch.broadcast_shapes(u.shape[: u.dim() - grid.dim - 1], E.shape[: E.dim() - grid.dim])
                      + grid.node_shape, dtype=u.dtype, device=u.device)
    for k0, k1, sub in slabs(grid):
        fe = (gather(sub, _nodes(grid, u, k0, k1)) @ ke) * _elements(grid, E, k0, k1)[..., None]
        _scatter_add(sub, fe, _nodes(grid, out, k0, k1))
    return out


def element_energy(grid: Grid, ke: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """u_e^T ke u_e per element (for E = 1): top88's ``ce``."""
    out = torch.empty(u.shape[: u.dim() - grid.dim - 1] + grid.element_shape, dtype=u.dtype, device=u.device)
    for k0, k1, sub in slabs(grid):
        ue = gather(sub, _nodes(grid, u, k0, k1))
        _elements(grid, out, k0, k1).copy_(((ue @ ke) * ue).sum(-1))
    return out


def stiffness_diagonal(grid: Grid, E: torch.Tensor, ke: torch.Tensor) -> torch.Tensor:
    """The diagonal of K(E) as a nodal field (for Jacobi smoothing)."""
    out = torch.zeros(grid.node_shape, dtype=ke.dtype, device=E.device)
    diag = torch.diagonal(ke)
    for k0, k1, sub in slabs(grid):
        _scatter_add(sub, diag * _elements(grid, E, k0, k1)[..., None], _nodes(grid, out, k0, k1))
    return out


def element_dof_indices(grid: Grid, device=None) -> torch.Tensor:
    """Flat dof numbers of each element's dofs: (elements, ndof_e), element order = element field order."""
    ids = torch.arange(grid.dofs, device=device).reshape(grid.node_shape).to(DTYPE)
    return gather(grid, ids).reshape(grid.elements, -1).round().long()


def assemble_dense(grid: Grid, E: torch.Tensor, ke: torch.Tensor, edof: torch.Tensor | None = None) -> torch.Tensor:
    """K(E) as a dense matrix (small problems only: the direct solver and coarse grids)."""
    edof = element_dof_indices(grid, E.device) if edof is None else edof
    n = edof.shape[1]
    rows = edof[:, :, None].expand(-1, n, n).reshape(-1)
    cols = edof[:, None, :].expand(-1, n, n).reshape(-1)
    vals = (E.reshape(-1, 1, 1) * ke).reshape(-1)
    K = torch.zeros(grid.dofs, grid.dofs, dtype=ke.dtype, device=E.device)
    K.index_put_((rows, cols), vals, accumulate=True)
    return K


def simp(x: torch.Tensor, penal: float, E0: float, Emin: float) -> torch.Tensor:
    """Young's modulus of each element: Emin + x^p (E0 - Emin)."""
    return Emin + x.clamp(0, 1) ** penal * (E0 - Emin)


def simp_derivative(x: torch.Tensor, penal: float, E0: float, Emin: float) -> torch.Tensor:
    return penal * x.clamp(0, 1) ** (penal - 1) * (E0 - Emin)

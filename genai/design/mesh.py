"""From element density fields to printable meshes and previews.

Conventions (those of the topology-optimization engine): a 3D field has shape
``(nelz, nelx, nely)`` and element ``(k, i, j)`` spans x in [i, i+1], y in [j, j+1] (y up),
z in [k, k+1]; a 2D field has shape ``(nelx, nely)`` with the same x/y meaning. Coordinates
are multiplied by ``element_size``.

* ``density_to_mesh``: a watertight, outward-oriented triangle mesh of {density >= threshold}.
  3D: marching cubes on the element-centre samples of the zero-padded field (so the surface
  closes at the domain boundary), then light Taubin smoothing. 2D: marching squares on the
  same samples, extruded exactly into a slab of ``thickness`` (flat caps, vertical walls).
* ``mesh_volume_check``: relative volume difference between a mesh and its density field.
* ``write_mesh``: binary STL or GLB, written atomically.
* ``preview_png`` / ``contact_sheet``: quick numpy-only pictures of designs, written atomically.

With centre sampling a binary field's surface passes through the element faces: before
smoothing, flat faces lie exactly on the voxel boundary (smoothing moves them ~0.1 element)
and only edges and corners are chamfered (each convex voxel edge loses about 1/8 element
area per unit length). So the mesh volume is a few percent below the element count for
small blocky parts, and less for larger or smoother ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh

from genai.errors import InputError
from genai.paths import atomic_path

# Sample values closer than this to the threshold are pushed away from it, so no mesh vertex
# sits on (or within float32 precision of) a sample point: no degenerate triangles, and an
# STL round trip (float32 coordinates, vertices merged by value) keeps the mesh watertight.
_NUDGE = 1e-3
# Taubin lambda|mu smoothing with pass-band k_PB = 1/lambda - 1/nu ~ 0.1 (Taubin 1995):
# removes the voxel staircase without the shrinkage of plain Laplacian smoothing.
_TAUBIN_LAMBDA = 0.5
_TAUBIN_NU = 0.526
# Depth jump (elements) between neighbouring pixels drawn as an outline in 3D previews.
_OUTLINE_JUMP = 4.0
# Height (px) of the label band under each tile of a contact sheet.
LABEL_HEIGHT = 18


class EmptyDesignError(InputError, ValueError):
    """A density field with no solid element: there is nothing to mesh."""


# ----------------------------------------------------------------------------- meshing


def _as_field(density) -> np.ndarray:
    d = np.asarray(density, dtype=np.float64)
    if d.ndim not in (2, 3):
        raise ValueError(f"density must be a 2D (nelx, nely) or 3D (nelz, nelx, nely) array, got shape {d.shape}")
    if d.size == 0:
        raise ValueError(f"density field is empty (shape {d.shape})")
    if not np.isfinite(d).all():
        raise ValueError("density field contains NaN or infinite values")
    return d


def _padded_samples(field_xyz: np.ndarray, threshold: float) -> np.ndarray:
    """The field with one layer of zeros around it, clipped to [0, 1], values near the
    threshold pushed to threshold +- _NUDGE (values equal to it count as solid)."""
    p = np.pad(np.clip(field_xyz, 0.0, 1.0), 1)
    near = np.abs(p - threshold) < _NUDGE
    p[near] = np.where(p[near] >= threshold, threshold + _NUDGE, threshold - _NUDGE)
    return p


def _check_args(threshold: float, element_size: float) -> None:
    if not (threshold > 0):
        raise ValueError(f"threshold must be > 0 (the padding around the domain is void), got {threshold}")
    if not (element_size > 0):
        raise ValueError(f"element_size must be > 0, got {element_size}")


def _require_solid(d: np.ndarray, threshold: float) -> None:
    if not (d >= threshold).any():
        raise EmptyDesignError(
            f"density field has no solid: no element of the {'x'.join(map(str, d.shape))} field reaches "
            f"the threshold {threshold:g} (max density {float(d.max()):.3g}); nothing to mesh")


def _drop_small_pieces(mesh: trimesh.Trimesh, fraction: float) -> trimesh.Trimesh:
    """Remove connected surface pieces enclosing less than ``fraction`` of the largest one.

    Compared by absolute enclosed volume, so a cavity's (inward) shell is dropped before the
    body around it ever is: what is left is still closed and consistently oriented."""
    if fraction <= 0 or len(mesh.faces) == 0:
        return mesh
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    if labels.max() == 0:
        return mesh
    tri = mesh.vertices[mesh.faces]
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    vol = np.abs(np.bincount(labels, weights=signed))
    keep = vol >= fraction * vol.max()
    if keep.all():
        return mesh
    mesh.update_faces(keep[labels])
    mesh.remove_unreferenced_vertices()
    return mesh


def _finish(mesh: trimesh.Trimesh, min_piece_fraction: float) -> trimesh.Trimesh:
    if not mesh.is_winding_consistent:
        trimesh.repair.fix_winding(mesh)
    if mesh.volume < 0:
        mesh.invert()
    mesh = _drop_small_pieces(mesh, min_piece_fraction)
    if not mesh.is_watertight:
        raise RuntimeError("internal error: the density mesh is not watertight")
    if not mesh.is_winding_consistent:
        raise RuntimeError("internal error: the density mesh has inconsistent winding")
    return mesh


def _mesh_3d(d: np.ndarray, threshold: float, element_size: float, smooth_iterations: int) -> trimesh.Trimesh:
    from skimage.measure import marching_cubes
    from trimesh.smoothing import filter_taubin

    samples = _padded_samples(np.transpose(d, (1, 2, 0)), threshold)  # (nelz, nelx, nely) -> (x, y, z)
    verts, faces, _, _ = marching_cubes(samples, level=threshold, spacing=(element_size,) * 3,
                                        gradient_direction="ascent")
    # Padded sample p sits at the centre of element p - 1, i.e. at (p - 0.5) * element_size.
    verts -= 0.5 * element_size
    # skimage shares each edge vertex between the cells around it: no merging needed (and
    # process=False keeps distinct-but-close vertices apart).
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if smooth_iterations > 0:
        # trimesh alternates shrink and inflate steps: round up to end on an inflate step.
        steps = int(smooth_iterations) + int(smooth_iterations) % 2
        filter_taubin(mesh, lamb=_TAUBIN_LAMBDA, nu=_TAUBIN_NU, iterations=steps)
    return mesh


# Marching squares. Slots around a cell, counter-clockwise: c0 e0 c1 e1 c2 e2 c3 e3 with
# corners c0=(p,q) c1=(p+1,q) c2=(p+1,q+1) c3=(p,q+1) and edge ej between cj and c(j+1)%4.
def _square_polygons(case: int, centre_solid: bool) -> list[list[int]]:
    """Counter-clockwise polygons (lists of slots) of the solid part of a cell. Every polygon
    is convex; the two saddle cases are joined or split by the cell-centre value."""
    inside = [(case >> j) & 1 == 1 for j in range(4)]
    ring = []
    for j in range(4):
        if inside[j]:
            ring.append(2 * j)
        if inside[j] != inside[(j + 1) % 4]:
            ring.append(2 * j + 1)
    if case in (5, 10) and not centre_solid:
        a = 0 if case == 5 else 1  # the two solid corners are a and a + 2
        return [[2 * a, 2 * a + 1, (2 * a - 1) % 8], [2 * a + 4, 2 * a + 5, 2 * a + 3]]
    return [ring] if ring else []


def _mesh_2d(d: np.ndarray, threshold: float, element_size: float, thickness: float) -> trimesh.Trimesh:
    P = _padded_samples(d, threshold)
    NX, NY = P.shape
    solid = P > threshold
    es = element_size

    # Vertex ids: samples, then horizontal edges (p,q)-(p+1,q), then vertical edges (p,q)-(p,q+1).
    ns, nh = NX * NY, (NX - 1) * NY
    sid = np.arange(ns).reshape(NX, NY)
    hid = ns + np.arange(nh).reshape(NX - 1, NY)
    vid = ns + nh + np.arange(NX * (NY - 1)).reshape(NX, NY - 1)

    def crossing(a, b):
        den = b - a
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(den != 0, (threshold - a) / np.where(den != 0, den, 1.0), 0.5)
        return np.clip(f, 0.0, 1.0)

    pp, qq = np.meshgrid(np.arange(NX, dtype=np.float64), np.arange(NY, dtype=np.float64), indexing="ij")
    xy = np.concatenate([
        np.stack([pp - 0.5, qq - 0.5], -1).reshape(-1, 2),
        np.stack([pp[:-1] - 0.5 + crossing(P[:-1], P[1:]), qq[:-1] - 0.5], -1).reshape(-1, 2),
        np.stack([pp[:, :-1] - 0.5, qq[:, :-1] - 0.5 + crossing(P[:, :-1], P[:, 1:])], -1).reshape(-1, 2),
    ]) * es

    slots = [sid[:-1, :-1], hid[:, :-1], sid[1:, :-1], vid[1:, :], sid[1:, 1:], hid[:, 1:], sid[:-1, 1:], vid[:-1, :]]
    case = (solid[:-1, :-1] * 1 + solid[1:, :-1] * 2 + solid[1:, 1:] * 4 + solid[:-1, 1:] * 8).astype(np.int64)
    centre = (P[:-1, :-1] + P[1:, :-1] + P[1:, 1:] + P[:-1, 1:]) / 4 > threshold

    tris, segs = [], []
    for c in range(1, 16):
        for centre_solid in ((False, True) if c in (5, 10) else (True,)):
            sel = case == c
            if c in (5, 10):
                sel &= centre == centre_solid
            if not sel.any():
                continue
            for poly in _square_polygons(c, centre_solid):
                ids = np.stack([slots[s][sel] for s in poly], -1)  # (cells, len(poly))
                for k in range(1, len(poly) - 1):  # fan from the first slot (polygons are convex)
                    tris.append(ids[:, [0, k, k + 1]])
                for k in range(len(poly)):  # consecutive edge points: a contour segment
                    if poly[k] % 2 == 1 and poly[(k + 1) % len(poly)] % 2 == 1:
                        segs.append(ids[:, [k, (k + 1) % len(poly)]])
    T = np.concatenate(tris)
    S = np.concatenate(segs) if segs else np.zeros((0, 2), np.int64)

    n = len(xy)
    verts = np.concatenate([np.column_stack([xy, np.zeros(n)]), np.column_stack([xy, np.full(n, float(thickness))])])
    a, b = S[:, 0], S[:, 1]  # solid on the left of a -> b: walls face right (outward)
    faces = np.concatenate([
        T + n,  # top, counter-clockwise seen from +z
        T[:, ::-1],  # bottom
        np.column_stack([a, b, b + n]),
        np.column_stack([a, b + n, a + n]),
    ])
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    mesh.remove_unreferenced_vertices()
    return mesh


def density_to_mesh(density, *, threshold: float = 0.5, element_size: float = 1.0, smooth_iterations: int = 10,
                    thickness: float = 1.0, min_piece_fraction: float = 1e-3) -> trimesh.Trimesh:
    """A watertight, outward-oriented triangle mesh of the solid region {density >= threshold}.

    3D fields ``(nelz, nelx, nely)``: marching cubes through the element centres of the field
    padded with void (so parts touching the domain boundary are closed there), coordinates
    in the element grid (element (k, i, j) spans [i, i+1] x [j, j+1] x [k, k+1], times
    ``element_size``), then ``smooth_iterations`` Taubin steps (alternating shrink and
    inflate, as trimesh counts them; odd counts are rounded up): smooths the voxel staircase,
    keeps the connectivity and hence watertightness, and barely changes the volume.

    2D fields ``(nelx, nely)``: the marching-squares region extruded to z in
    [0, ``thickness``] (not scaled by ``element_size``); not smoothed, so the caps stay flat
    and the walls vertical.

    Disconnected pieces enclosing less than ``min_piece_fraction`` of the largest piece are
    dropped (0 keeps everything).

    Raises ``ValueError`` (an ``EmptyDesignError``) if no element reaches the threshold.
    """
    d = _as_field(density)
    _check_args(threshold, element_size)
    if smooth_iterations < 0:
        raise ValueError(f"smooth_iterations must be >= 0, got {smooth_iterations}")
    _require_solid(d, threshold)
    if d.ndim == 3:
        mesh = _mesh_3d(d, threshold, element_size, smooth_iterations)
    else:
        if not (thickness > 0):
            raise ValueError(f"thickness must be > 0, got {thickness}")
        mesh = _mesh_2d(d, threshold, element_size, thickness)
    return _finish(mesh, min_piece_fraction)


def mesh_volume_check(density, mesh: trimesh.Trimesh, threshold: float = 0.5, element_size: float = 1.0,
                      *, thickness: float = 1.0) -> float:
    """|mesh.volume - V| / V with V the solid volume the field implies: the number of elements
    with density >= threshold times element_size**3 (3D) or element_size**2 * thickness (2D)."""
    d = _as_field(density)
    count = int((d >= threshold).sum())
    if count == 0:
        raise EmptyDesignError(f"density field has no solid (no element >= {threshold:g}): no volume to compare")
    expected = count * (element_size ** 3 if d.ndim == 3 else element_size ** 2 * thickness)
    return abs(float(mesh.volume) - expected) / expected


def write_mesh(mesh: trimesh.Trimesh, path) -> Path:
    """Write ``mesh`` as binary STL (``.stl``) or glTF binary (``.glb``), atomically."""
    path = Path(path)
    kinds = {".stl": "stl", ".glb": "glb"}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"unsupported mesh format {path.suffix!r} for {path}: use .stl or .glb")
    with atomic_path(path) as tmp:
        data = mesh.export(file_type=kind)
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ----------------------------------------------------------------------------- pictures


def _render_2d(d: np.ndarray, size: int):
    from PIL import Image

    grey = np.round(255 * (1 - np.clip(d, 0, 1))).astype(np.uint8).T[::-1]  # rows = y, top row = max y
    nx, ny = d.shape
    scale = size / max(nx, ny)
    return Image.fromarray(grey, "L").resize((max(1, round(nx * scale)), max(1, round(ny * scale))),
                                            Image.Resampling.NEAREST)


def _view_axes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen right, screen up and the view direction (into the screen) of an isometric-ish
    camera above the front-right (+x, +y, +z) of the part, y up."""
    eye = np.array([1.0, 0.8, 1.3])
    f = -eye / np.linalg.norm(eye)
    right = np.cross(f, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, f)
    return right, up, f


def _render_3d(d: np.ndarray, size: int, threshold: float):
    from PIL import Image
    from scipy.ndimage import binary_erosion, gaussian_filter

    solid = np.transpose(d >= threshold, (1, 2, 0))  # (x, y, z)
    background = np.array([255, 255, 255], np.float64)
    img = np.empty((size, size, 3), np.float64)
    img[:] = background
    right, up, f = _view_axes()

    # Frame the whole domain box, so designs on the same grid are drawn at the same scale.
    dims = np.array(solid.shape, np.float64)
    corners = np.array([[x, y, z] for x in (0, dims[0]) for y in (0, dims[1]) for z in (0, dims[2])])
    cu, cv = corners @ right, corners @ up
    scale = 0.92 * size / max(cu.max() - cu.min(), cv.max() - cv.min())
    u0 = (cu.max() + cu.min()) / 2
    v0 = (cv.max() + cv.min()) / 2

    surface = solid & ~binary_erosion(np.pad(solid, 1), border_value=0)[1:-1, 1:-1, 1:-1]
    idx = np.argwhere(surface)
    if len(idx):
        centres = idx + 0.5
        # Outward normal: minus the gradient of the blurred solid indicator.
        blurred = gaussian_filter(np.pad(solid, 3).astype(np.float32), 1.2)
        p = idx + 3
        g = np.stack([
            blurred[p[:, 0] + 1, p[:, 1], p[:, 2]] - blurred[p[:, 0] - 1, p[:, 1], p[:, 2]],
            blurred[p[:, 0], p[:, 1] + 1, p[:, 2]] - blurred[p[:, 0], p[:, 1] - 1, p[:, 2]],
            blurred[p[:, 0], p[:, 1], p[:, 2] + 1] - blurred[p[:, 0], p[:, 1], p[:, 2] - 1],
        ], -1).astype(np.float64)
        norm = np.linalg.norm(g, axis=1, keepdims=True)
        normals = np.where(norm > 1e-6, -g / np.maximum(norm, 1e-12), -f)

        col = (centres @ right - u0) * scale + size / 2
        row = size / 2 - (centres @ up - v0) * scale
        depth = centres @ f

        # Splat each surface voxel as a disc of radius 0.8 element (a projected unit cube's
        # inscribed radius is ~0.7: neighbouring surface voxels leave no holes).
        R = math.ceil(0.8 * scale) + 1
        oy, ox = np.mgrid[-R:R + 1, -R:R + 1]
        ox, oy = ox.ravel(), oy.ravel()
        ci = np.floor(col).astype(np.int64)[:, None] + ox[None]
        ri = np.floor(row).astype(np.int64)[:, None] + oy[None]
        a = (ci + 0.5 - col[:, None]) / scale  # pixel centre - voxel centre, in elements
        b = (row[:, None] - ri - 0.5) / scale
        # Depth on each voxel's tangent plane (not its centre), so overlapping discs meet
        # along the surface instead of as fish scales.
        nf = np.minimum(normals @ f, -0.2)[:, None]  # visible normals face the camera
        zpix = depth[:, None] - np.clip((a * (normals @ right)[:, None] + b * (normals @ up)[:, None]) / nf, -1, 1)
        vox = np.broadcast_to(np.arange(len(idx))[:, None], ci.shape)
        ok = (a * a + b * b <= 0.64) & (ci >= 0) & (ci < size) & (ri >= 0) & (ri < size)
        pix, vox, zpix = (ri * size + ci)[ok], vox[ok], zpix[ok]
        zbuf = np.full(size * size, np.inf)
        np.minimum.at(zbuf, pix, zpix)  # per pixel, the nearest splat wins
        win = zpix == zbuf[pix]
        pix, vox = pix[win], vox[win]
        pix, keep = np.unique(pix, return_index=True)  # ties: one winner per pixel
        vox = vox[keep]
        dz = zbuf[pix]

        light = -0.2 * right + 0.5 * up - 0.85 * f  # from the upper left, in front
        light /= np.linalg.norm(light)
        n = normals[vox]
        diffuse = np.clip(n @ light, 0, 1)
        half = light - f
        half /= np.linalg.norm(half)
        spec = np.clip(n @ half, 0, 1) ** 32
        span = max(dz.max() - dz.min(), 1e-9)
        fog = (dz - dz.min()) / span  # 0 nearest .. 1 farthest
        base = np.array([125.0, 170.0, 225.0])
        shade = (0.35 + 0.65 * diffuse)[:, None] * base * (1 - 0.3 * fog)[:, None] + 60 * spec[:, None]

        flat = img.reshape(-1, 3)
        flat[pix] = shade
        # Dark outlines on the near side of depth jumps (silhouettes and occluding edges).
        zb = np.pad(zbuf.reshape(size, size), 1, constant_values=np.inf)
        near = zb[1:-1, 1:-1]
        with np.errstate(invalid="ignore"):
            outline = ((zb[:-2, 1:-1] - near > _OUTLINE_JUMP) | (zb[2:, 1:-1] - near > _OUTLINE_JUMP)
                       | (zb[1:-1, :-2] - near > _OUTLINE_JUMP) | (zb[1:-1, 2:] - near > _OUTLINE_JUMP))
        img[outline] *= 0.45
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def preview_png(density, path, *, size: int = 512, threshold: float = 0.5) -> Path:
    """Write a PNG picture of a design, atomically.

    2D: the densities as grey levels (black solid, white void, y up), nearest-neighbour
    upscaled so the longer side is ``size`` px. 3D: a ``size`` x ``size`` shaded render of
    the voxels with density >= ``threshold`` seen from above the front-right (orthographic,
    numpy only: surface voxels splatted into a depth buffer, Lambert + a little specular
    shading from blurred-indicator normals, depth fog and outlines at depth jumps)."""
    d = _as_field(density)
    if size < 8:
        raise ValueError(f"size must be >= 8 px, got {size}")
    image = _render_2d(d, size) if d.ndim == 2 else _render_3d(d, size, threshold)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def contact_sheet(pngs: Sequence[Path], labels: Sequence[str], path, *, columns: int = 6, tile: int = 256) -> Path:
    """Write one PNG with the images in a grid of ``columns`` (``tile`` x ``tile`` cells, each
    image fitted and centred on white) and a label under each, atomically.

    The sheet is ``min(columns, n) * tile`` wide and ``rows * (tile + LABEL_HEIGHT)`` high."""
    from PIL import Image, ImageDraw, ImageFont

    pngs, labels = list(pngs), list(labels)
    if not pngs:
        raise ValueError("contact_sheet needs at least one image")
    if len(pngs) != len(labels):
        raise ValueError(f"contact_sheet got {len(pngs)} images but {len(labels)} labels")
    if columns < 1 or tile < 16:
        raise ValueError(f"columns must be >= 1 and tile >= 16, got columns={columns}, tile={tile}")
    cols = min(columns, len(pngs))
    rows = math.ceil(len(pngs) / cols)
    cell_h = tile + LABEL_HEIGHT
    sheet = Image.new("RGB", (cols * tile, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for n, (png, label) in enumerate(zip(pngs, labels)):
        x0, y0 = (n % cols) * tile, (n // cols) * cell_h
        with Image.open(png) as im:
            im = im.convert("RGB")
            im.thumbnail((tile - 4, tile - 4), Image.Resampling.LANCZOS)
            sheet.paste(im, (x0 + (tile - im.width) // 2, y0 + (tile - im.height) // 2))
        draw.rectangle([x0, y0, x0 + tile - 1, y0 + cell_h - 1], outline=(225, 225, 225))
        text = str(label)
        while text and draw.textlength(text, font=font) > tile - 6:
            text = text[:-1]
        if text != str(label):
            text = text[:-3] + "..." if len(text) > 3 else text
        width = draw.textlength(text, font=font)
        top, bottom = draw.textbbox((0, 0), text or " ", font=font)[1::2]
        draw.text((x0 + (tile - width) / 2, y0 + tile + (LABEL_HEIGHT - (bottom - top)) / 2 - top), text,
                  fill="black", font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path

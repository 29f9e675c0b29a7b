"""Generative design by topology optimization (SIMP on structured grids, 2D and 3D).

``fem`` (element stiffness, matrix-free product), ``filters``, ``solvers`` (banded direct,
multigrid PCG), ``mma`` (Svanberg's MMA), ``optimize`` (the loop), ``problem`` (specs and the
catalog), ``mesh`` (meshes and previews), ``run`` (one design, sweeps), ``cli``.
"""

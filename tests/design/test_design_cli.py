"""genai design run / generate as a user runs them, and every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
import yaml

from genai.design.mesh import mesh_volume_check
from tests.conftest import no_traceback, run_cli


def test_top88_mode_writes_every_output(cli, tmp_path):
    out = tmp_path / "mbb"
    proc = cli("design", "run", "--problem", "mbb", "--nelx", "60", "--nely", "20", "--volfrac", "0.5",
               "--penal", "3", "--rmin", "1.5", "--filter", "sensitivity", "--optimizer", "oc", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compliance"] == pytest.approx(203.19, rel=1e-3) and metrics["iterations"] == 94
    assert metrics["volume_fraction"] == pytest.approx(0.5, abs=1e-3)
    density = np.load(out / "density.npz")["density"]
    assert density.shape == (60, 20)
    for name in ("design.stl", "design.glb"):
        mesh = trimesh.load(out / name, force="mesh")
        assert mesh.is_watertight
        assert mesh_volume_check(density, mesh, thickness=1.0) < 0.05
    assert (out / "preview.png").stat().st_size > 1000
    assert not [p for p in out.iterdir() if ".part" in p.name]


def _spec(tmp_path, **changes):
    base = {"domain": {"size": [40, 20], "resolution": [40, 20]},
            "loads": [{"point": [40, 10], "force": [0, -1]}],
            "supports": [{"face": "xmin"}], "volume_fraction": 0.4, "max_iterations": 30}
    base.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("changes, words", [
    ({"supports": []}, ["supports", "at least one support"]),
    ({"loads": [{"point": [55, 10], "force": [0, -1]}]}, ["loads[0].point", "outside the domain"]),
    ({"keep_solid": [{"box": {"min": [10, 0], "max": [20, 10]}}],
      "keep_empty": [{"box": {"min": [15, 5], "max": [30, 15]}}]}, ["keep_solid[0]", "keep_empty[0]", "overlap"]),
    ({"volume_fraction": 1.5}, ["volume_fraction", "less than 1"]),
    ({"volume_fraction": 0}, ["volume_fraction", "greater than 0"]),
    ({"domain": {"size": [40, 20], "resolution": [40, 10]}}, ["domain", "cubes"]),
])
def test_bad_specs_name_the_field(tmp_path, changes, words):
    proc = run_cli("design", "run", "--spec", str(_spec(tmp_path, **changes)), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr
    no_traceback(proc)
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_a_design_space_mesh_must_be_watertight(tmp_path):
    box = trimesh.creation.box(extents=[20, 10, 6])
    box.apply_translation([10, 5, 3])
    open_box = box.copy()
    open_box.update_faces(np.arange(len(open_box.faces)) > 1)  # two triangles removed: a hole
    open_box.export(tmp_path / "open.stl")
    spec = {"design_space": {"mesh": str(tmp_path / "open.stl"), "element_size": 1.0},
            "loads": [{"point": [20, 5, 3], "force": [0, -1, 0]}], "supports": [{"face": "xmin"}],
            "volume_fraction": 0.3}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = run_cli("design", "run", "--spec", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "not watertight" in proc.stderr and "design_space.mesh" in proc.stderr
    no_traceback(proc)


def test_generate_ranks_a_sweep_and_resumes(cli, tmp_path):
    spec = _spec(tmp_path, max_iterations=25)
    out = tmp_path / "sweep"
    proc = cli("design", "generate", str(spec), "-n", "3", "--vary", "volfrac=0.25:0.45", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    designs = summary["designs"]
    assert len(designs) == 3 and sorted(d["values"]["volfrac"] for d in designs) == [0.25, 0.35, 0.45]
    # lighter designs are less stiff: all three are on the mass-compliance front
    by_mass = sorted(designs, key=lambda d: d["mass"])
    assert [d["compliance"] for d in by_mass] == sorted((d["compliance"] for d in by_mass), reverse=True)
    assert len(summary["pareto_front"]) == 3
    for d in designs:
        folder = out / d["name"]
        assert {"density.npz", "design.stl", "design.glb", "preview.png", "metrics.json"} <= {p.name for p in folder.iterdir()}
    assert (out / "contact_sheet.png").exists()
    before = (out / designs[0]["name"] / "metrics.json").stat().st_mtime_ns
    again = cli("design", "generate", str(spec), "-n", "3", "--vary", "volfrac=0.25:0.45", "--out", str(out))
    assert again.returncode == 0
    assert (out / designs[0]["name"] / "metrics.json").stat().st_mtime_ns == before  # not redone


def test_bad_vary_is_one_line(tmp_path):
    proc = run_cli("design", "generate", "mbb", "--vary", "colour=1:2", "--out", str(tmp_path))
    assert proc.returncode == 2 and "--vary" in proc.stderr
    no_traceback(proc)

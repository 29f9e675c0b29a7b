"""genai design run / generate called in process through ``main(argv)``, and every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
import yaml

from genai.design.mesh import mesh_volume_check
from tests.test_cli import genai


def test_top88_mode_writes_every_output(capsys, tmp_path):
    """top88's options reach the optimizer (its published figures are tests/design/test_topopt.py's)."""
    out = tmp_path / "mbb"
    code, stdout, err = genai(capsys, "design", "run", "--problem", "mbb", "--nelx", "24", "--nely", "8", "--volfrac",
                              "0.5", "--penal", "3", "--rmin", "1.5", "--filter", "sensitivity", "--optimizer", "oc",
                              "--max-iterations", "12", "--out", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(stdout)["compliance"] == metrics["compliance"] and metrics["iterations"] == 12
    assert metrics["volume_fraction"] == pytest.approx(0.5, abs=1e-3)
    density = np.load(out / "density.npz")["density"]
    assert density.shape == (24, 8)
    for name in ("design.stl", "design.glb"):
        mesh = trimesh.load(out / name, force="mesh")
        assert mesh.is_watertight
        assert mesh_volume_check(density, mesh, thickness=1.0) < 0.05
    assert (out / "preview.png").stat().st_size > 500
    assert not [p for p in out.iterdir() if ".part" in p.name]


def _spec(tmp_path, **changes):
    base = {"domain": {"size": [24, 12], "resolution": [24, 12]},
            "loads": [{"point": [24, 6], "force": [0, -1]}],
            "supports": [{"face": "xmin"}], "volume_fraction": 0.4, "max_iterations": 30}
    base.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("changes, words", [
    ({"supports": []}, ["supports", "at least one support"]),
    ({"loads": [{"point": [55, 10], "force": [0, -1]}]}, ["loads[0].point", "outside the domain"]),
    ({"keep_solid": [{"box": {"min": [4, 0], "max": [12, 6]}}],
      "keep_empty": [{"box": {"min": [8, 3], "max": [20, 10]}}]}, ["keep_solid[0]", "keep_empty[0]", "overlap"]),
    ({"volume_fraction": 1.5}, ["volume_fraction", "less than 1"]),
    ({"volume_fraction": 0}, ["volume_fraction", "greater than 0"]),
    ({"domain": {"size": [24, 12], "resolution": [24, 6]}}, ["domain", "cubes"]),
])
def test_bad_specs_name_the_field(capsys, tmp_path, changes, words):
    code, _, err = genai(capsys, "design", "run", "--spec", _spec(tmp_path, **changes), "--out", tmp_path / "o")
    assert code == 2, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_a_design_space_mesh_must_be_watertight(capsys, tmp_path):
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
    code, _, err = genai(capsys, "design", "run", "--spec", path, "--out", tmp_path / "o")
    assert code == 2 and "not watertight" in err and "design_space.mesh" in err


def test_generate_ranks_a_sweep_and_resumes(capsys, tmp_path):
    spec = _spec(tmp_path, max_iterations=12)
    out = tmp_path / "sweep"
    code, _, err = genai(capsys, "design", "generate", spec, "-n", "3", "--vary", "volfrac=0.25:0.45", "--out", out)
    assert code == 0, err
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
    again = genai(capsys, "design", "generate", spec, "-n", "3", "--vary", "volfrac=0.25:0.45", "--out", out)
    assert again[0] == 0
    assert (out / designs[0]["name"] / "metrics.json").stat().st_mtime_ns == before  # not redone


@pytest.mark.parametrize("argv, message", [
    (["generate", "mbb", "--vary", "colour=1:2"], "--vary"),
    (["generate", "mbb", "-n", "0"], "argument -n: must be a positive integer, got 0"),
    (["run", "--problem", "mbb", "--volfrac", "1"], "argument --volfrac: must be in (0, 1), got 1"),
    (["train-generator", "d", "--widths", "8,12"], "argument --widths: expected two or more multiples of 8"),
])
def test_bad_arguments_are_one_line(capsys, tmp_path, argv, message):
    code, _, err = genai(capsys, "design", *argv, "--out", tmp_path / "o")
    assert code == 2 and message in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["run", "--problem", "mbb", "--nelx", "64", "--nely", "64", "--rmin", "100000"],
     "rmin: 100000 is over the domain's largest extent (64 elements)"),
    (["generate", "mbb", "--vary", "rmin=5000:6000"], "--vary rmin=5000:6000: 6000 is over the domain's largest "
                                                       "extent (60 elements)"),
    (["generate", "mbb", "--vary", "min_member_size=1:1000"], "1000 is over the domain's largest extent (60 in the "
                                                              "spec's units)"),
])
def test_a_filter_longer_than_the_domain_is_one_line_before_any_work(capsys, tmp_path, argv, message):
    code, out, err = genai(capsys, "design", *argv, "--out", tmp_path / "o")
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out
    assert not (tmp_path / "o").exists()


def test_propose_refuses_a_spec_whose_filter_is_longer_than_the_domain(capsys, tmp_path):
    spec = _spec(tmp_path, min_member_size=100)
    code, _, err = genai(capsys, "design", "propose", "--spec", spec, "--out", tmp_path / "o")
    assert code == 2 and "min_member_size: 100 is over the domain's largest extent (24 in the spec's units)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()

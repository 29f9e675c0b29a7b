"""The learned topology-optimization generator: random problems, input channels, D4 symmetry,
training (resumable), proposal + refinement, the shipped model and `genai design propose`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from genai.design import dataset as D
from genai.design import topogen as T
from genai.design.optimize import optimize
from genai.design.problem import discretize, load_spec
from genai.errors import Cancelled, InputError
from tests.test_cli import genai


def _spec(n=24, **changes) -> dict:
    spec = {"domain": {"size": [n, n], "resolution": [n, n]},
            "loads": [{"point": [n, n // 3], "force": [0.3, -0.8]}, {"point": [n // 2, n], "force": [-0.5, 0.1]}],
            "supports": [{"box": {"min": [0, 2], "max": [0, n - 4]}, "fix": ["x", "y"]},
                         {"point": [n - 5, 0], "fix": ["y"]}],
            "keep_empty": [{"box": {"min": [8, 8], "max": [13, 12]}}],
            "volume_fraction": 0.4, "rmin": 1.5, "filter": "density", "projection": False}
    spec.update(changes)
    return spec


def _mirror_x(spec: dict, n: int) -> dict:
    """The same problem mirrored across x = n/2: positions x -> n - x, force x components negated."""
    out = json.loads(json.dumps(spec))
    for ld in out["loads"]:
        ld["point"][0] = n - ld["point"][0]
        ld["force"][0] = -ld["force"][0]
    for s in out["supports"]:
        if "point" in s:
            s["point"][0] = n - s["point"][0]
        else:
            s["box"]["min"][0], s["box"]["max"][0] = n - s["box"]["max"][0], n - s["box"]["min"][0]
    for k in out["keep_empty"]:
        k["box"]["min"][0], k["box"]["max"][0] = n - k["box"]["max"][0], n - k["box"]["min"][0]
    return out


def _transpose(spec: dict) -> dict:
    """The same problem with x and y swapped (force components and fixed axes too)."""
    out = json.loads(json.dumps(spec))
    for ld in out["loads"]:
        ld["point"] = ld["point"][::-1]
        ld["force"] = ld["force"][::-1]
    for s in out["supports"]:
        if "point" in s:
            s["point"] = s["point"][::-1]
        else:
            s["box"] = {"min": s["box"]["min"][::-1], "max": s["box"]["max"][::-1]}
        s["fix"] = sorted({"x": "y", "y": "x"}[a] for a in s["fix"])
    for k in out["keep_empty"]:
        k["box"] = {"min": k["box"]["min"][::-1], "max": k["box"]["max"][::-1]}
    return out


def _features(spec: dict) -> np.ndarray:
    s = load_spec(spec)
    return D.features(discretize(s), s.volume_fraction)


def test_d4_turns_inputs_like_the_problem_itself():
    """The features of a mirrored / transposed problem are d4 of the original's (load components
    and fixed axes follow the grid), so the augmentation makes valid training pairs."""
    n = 24
    spec = _spec(n)
    base = _features(spec)
    density = np.random.default_rng(0).random((n, n))
    for k, changed in ((1, _mirror_x(spec, n)), (4, _transpose(spec)), (5, _transpose(_mirror_x(spec, n)))):
        expected, _ = D.d4(base, density, k)
        np.testing.assert_allclose(_features(changed), expected, atol=2e-5, err_msg=f"k={k}")
    # the eight elements are distinct and each has an inverse in the group
    outs = {D.d4(base, density, k)[1].tobytes() for k in range(8)}
    assert len(outs) == 8


def test_supports_must_hold_every_rigid_motion():
    def holds(supports):
        return D.holds_rigid_motions(discretize(load_spec(_spec(16, supports=supports, keep_empty=[]))))

    assert holds([{"face": "xmin"}])
    assert not holds([{"point": [0, 0]}])  # a pin: the part turns about it
    assert not holds([{"face": "xmin", "fix": ["x"]}])  # rollers along x = 0: it slides in y
    assert holds([{"face": "xmin", "fix": ["x"]}, {"point": [16, 0], "fix": ["y"]}])  # the MBB beam's


@pytest.mark.parametrize("family", D.FAMILIES)
def test_random_problems_of_each_family(family):
    rng = np.random.default_rng(3)
    for _ in range(5):
        spec = D.random_spec(rng, family, (32, 32))
        s = load_spec(spec)
        problem = discretize(s)
        assert D.holds_rigid_motions(problem)
        loaded = np.argwhere(problem.loads.abs().sum((0, -1)).numpy() > 0)
        on_boundary = (loaded == 0) | (loaded == 32)
        if family == "interior-loads":
            assert not on_boundary.any()
        else:
            assert on_boundary.any(1).all()
        fixed = np.argwhere(~problem.free.numpy().all(-1))
        assert (family == "unseen-supports") == (not ((fixed == 0) | (fixed == 32)).any())
        vf = s.volume_fraction
        assert (0.2 <= vf <= 0.6) == (family != "volfrac-outside")
        assert (len(s.keep_empty) >= 2) == (family == "keep-out")
    # a shard is a function of its number: the same problems when it is made again
    assert D.shard_specs(family, (32, 32), 0, 3, 2) == D.shard_specs(family, (32, 32), 0, 3, 2)


def test_warm_start_and_snapshots():
    s = load_spec(_spec(16, keep_empty=[]))
    problem = discretize(s)
    settings = D.simp_settings(0.4, max_iterations=12)
    cold = optimize(problem, settings, snapshots=(3, 12))
    assert set(cold.snapshots) == {3, 12} and cold.snapshots[3].shape == (16, 16)
    np.testing.assert_array_equal(cold.snapshots[12], cold.density)
    warm = optimize(problem, settings, start=cold.density)  # from a near-optimum: a lower compliance at once
    assert warm.history[0] < cold.history[0]
    with pytest.raises(InputError, match="shape"):
        optimize(problem, settings, start=np.zeros((8, 8)))


def test_fit_volume_meets_the_target_and_the_passive_regions():
    logits = torch.randn(32, 32, dtype=torch.float64) * 4
    solid = torch.zeros(32, 32, dtype=torch.bool)
    void = torch.zeros(32, 32, dtype=torch.bool)
    solid[:3] = True
    void[10:20, 10:20] = True
    x = T.fit_volume(logits, 0.35, solid, void)
    assert float(x.mean()) == pytest.approx(0.35, abs=1e-6)
    assert bool((x[solid] == 1).all()) and bool((x[void] == 0).all())


@pytest.fixture(scope="module")
def tiny_data():
    """Ten real SIMP solutions on 16x16 (the training family), made here."""
    specs = D.shard_specs("train", (16, 16), 7, 0, 10)
    samples = [D.solve_sample(s) for s in specs]
    return (np.stack([s.inputs for s in samples]), np.stack([s.density for s in samples]).astype(np.float32),
            samples)


def test_a_tiny_generator_trains_resumes_and_refines(tiny_data, tmp_path):
    x, y, samples = tiny_data
    assert x.shape == (10, len(D.CHANNELS), 16, 16) and y.shape == (10, 16, 16)
    cfg = T.TrainConfig(steps=30, batch_size=4, widths=(8, 16, 16, 16), learning_rate=3e-3)
    whole = T.train(x, y, tmp_path / "whole", cfg, model_id="tiny")
    # cancelled at step 12, then resumed: the very weights of the uninterrupted run
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        T.train(x, y, tmp_path / "resumed", cfg, model_id="tiny", cancel=lambda: next(calls) >= 12)
    assert torch.load(tmp_path / "resumed" / ".checkpoint.pt", weights_only=False)["step"] == 12
    resumed = T.train(x, y, tmp_path / "resumed", cfg, model_id="tiny")
    assert resumed.sha256 == whole.sha256
    assert not (tmp_path / "resumed" / ".checkpoint.pt").exists()
    manifest = yaml.safe_load((tmp_path / "whole" / "model.yaml").read_text())
    assert manifest["kind"] == "topology-generator" and manifest["training"]["samples"] == 10
    assert (tmp_path / "whole" / "loss.png").stat().st_size > 1000

    gen = T.TopologyGenerator.load(tmp_path / "whole")
    s = load_spec(samples[0].spec)
    problem = discretize(s)
    proposal, ms = gen.propose(problem, s.volume_fraction)
    assert proposal.shape == (16, 16) and proposal.mean() == pytest.approx(s.volume_fraction, abs=1e-5)
    settings = D.simp_settings(s.volume_fraction)
    raw = T.refine(problem, settings, proposal, 0)
    refined = T.refine(problem, settings, proposal, 10)
    assert T.compliance_of(problem, refined.density) < raw.compliance  # refinement improves the design
    assert refined.volume_fraction == pytest.approx(s.volume_fraction, abs=2e-3)


def test_a_changed_weights_file_is_refused(tiny_data, tmp_path):
    x, y, _ = tiny_data
    T.train(x, y, tmp_path / "m", T.TrainConfig(steps=2, batch_size=2, widths=(8, 8, 8, 8)), model_id="m")
    with open(tmp_path / "m" / "m.safetensors", "ab") as f:
        f.write(b"\0")
    with pytest.raises(Exception, match="sha256"):
        T.TopologyGenerator.load(tmp_path / "m")


# --------------------------------------------------------------------------- the shipped model


@pytest.mark.slow  # a full SIMP run to convergence (about a minute): make test-all
def test_shipped_model_on_the_mbb_beam_is_near_simp(cli, tmp_path):
    """`genai design propose` on the catalog's MBB beam (64 x 32, volume fraction 0.4, its
    sensitivity filter; a load on a roller node, which the training problems never have): the
    proposal and 10 SIMP iterations within 10% of the compliance of a full SIMP run (`design
    run`, to convergence). Measured: +6.4% (the raw proposal: 3.7x; +20 iterations: +1.8%)."""
    common = ["--problem", "mbb", "--nelx", "64", "--nely", "32", "--volfrac", "0.4"]
    full = tmp_path / "simp"
    proc = cli("design", "run", *common, "--no-mesh", "--out", str(full))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "proposed"
    proc = cli("design", "propose", *common, "--refine", "10", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    c_simp = json.loads((full / "metrics.json").read_text())["compliance"]
    assert m["compliance"] <= 1.10 * c_simp, (m["compliance"], c_simp)
    # proposal_ms is reported, not bounded: these machines are shared (speed is for benchmarks/)
    assert m["refine_iterations"] == 10 and m["model"] == "topogen-64" and m["proposal_ms"] > 0
    assert m["volume_fraction"] == pytest.approx(0.4, abs=2e-3)
    for name in ("proposal.png", "preview.png", "design.stl", "design.glb"):
        assert (out / name).stat().st_size > 500


@pytest.mark.parametrize("args, message", [
    (["--problem", "cantilever3d"], "3D"),
    (["--problem", "mbb", "--refine", "-1"], "--refine"),
    (["--problem", "mbb", "--model", "no-such-model"], "no-such-model"),
    (["--problem", "mbb", "--volfrac", "1.5"], "--volfrac"),
])
def test_propose_bad_input(capsys, tmp_path, args, message):
    code, _, err = genai(capsys, "design", "propose", *args, "--out", tmp_path / "o")
    assert code == 2 and message in err, err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_propose_with_the_shipped_model_writes_a_refined_design(capsys, tmp_path):
    """The command end to end in process with the shipped topogen-64 (its quality against a full
    SIMP run is the slow test above)."""
    out = tmp_path / "proposed"
    code, _, err = genai(capsys, "design", "propose", "--problem", "mbb", "--nelx", "64", "--nely", "32",
                         "--volfrac", "0.4", "--refine", "2", "--out", out)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["refine_iterations"] == 2 and m["model"] == "topogen-64" and np.isfinite(m["compliance"])
    assert m["volume_fraction"] == pytest.approx(0.4, abs=2e-3)
    for name in ("proposal.png", "preview.png", "design.stl", "design.glb"):
        assert (out / name).stat().st_size > 500

"""Design work as Ray tasks on a real local Ray: a sweep (the same designs as the in-process
sweep) and the learned generator's data set (the same samples as one process, resumable)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a real Ray: make test-all

from genai.design.problem import load_spec  # noqa: E402
from genai.design.run import generate, parse_vary, variants  # noqa: E402
from genai.design import dataset as D  # noqa: E402
from genai.errors import InputError  # noqa: E402
from pipelines.design import generate_on_ray  # noqa: E402
from pipelines.design_dataset import build, shard_path  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.makedirs(os.path.join(temp, "ray"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", _temp_dir=os.path.join(temp, "ray"))
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def test_sweep_on_ray_matches_the_local_sweep(local_ray, tmp_path):
    spec = load_spec({"domain": {"size": [32, 16], "resolution": [32, 16]},
                      "loads": [{"point": [32, 8], "force": [0, -1]}], "supports": [{"face": "xmin"}],
                      "volume_fraction": 0.4, "max_iterations": 20})
    points = variants(2, parse_vary(["volfrac=0.3:0.5"]))
    seen = []
    on_ray = generate_on_ray(spec, tmp_path / "ray", points, progress=seen.append)
    local = generate(spec, tmp_path / "local", points)
    assert seen[-1].done == seen[-1].total == 2
    by_name = {d["name"]: d for d in local["designs"]}
    for d in on_ray["designs"]:
        assert d["compliance"] == pytest.approx(by_name[d["name"]]["compliance"], rel=1e-9)
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["pareto_front"]


def test_design_dataset_on_ray_is_resumable_and_reproducible(local_ray, tmp_path):
    out = tmp_path / "data"
    seen = []
    first = build(out, shape=(16, 16), shards=2, shard_size=2, seed=5, progress=seen.append)
    assert first["made_now"] == 4 and seen[-1].done == 2
    data = D.read_shards(out)
    assert data["inputs"].shape == (4, len(D.CHANNELS), 16, 16) and data["snapshots"].shape == (4, 3, 16, 16)
    # the same sample as one process makes it
    spec = D.shard_specs("train", (16, 16), 5, 1, 2)[0]
    assert json.loads(str(data["specs"][2])) == spec
    assert float(data["compliance"][2]) == pytest.approx(D.solve_sample(spec).compliance, rel=1e-9)
    # a lost shard is made again, the other kept
    kept = shard_path(out, 0).stat().st_mtime_ns
    shard_path(out, 1).unlink()
    again = build(out, shape=(16, 16), shards=2, shard_size=2, seed=5)
    assert again["made_now"] == 2 and shard_path(out, 0).stat().st_mtime_ns == kept
    np.testing.assert_array_equal(D.read_shards(out)["density"], data["density"])
    with pytest.raises(InputError, match="other parameters"):
        build(out, shape=(16, 16), shards=2, shard_size=2, seed=6)

"""A design sweep as Ray tasks on a real local Ray: the same designs as the in-process sweep."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

ray = pytest.importorskip("ray")

from genai.design.problem import load_spec  # noqa: E402
from genai.design.run import generate, parse_vary, variants  # noqa: E402
from pipelines.design import generate_on_ray  # noqa: E402


@pytest.fixture
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

"""The Ray path on a real two-node Ray cluster (ray.cluster_utils.Cluster, on this machine)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import av
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from genai.video import RemasterConfig, probe, remaster  # noqa: E402
from pipelines.remaster import main as ray_main  # noqa: E402
from pipelines.remaster import remaster_on_ray  # noqa: E402
from tests.video.conftest import MODEL  # noqa: E402


def frame_hashes(path) -> list[str]:
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray(format="yuv420p").tobytes()).hexdigest() for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def two_node_cluster():
    """Two Ray nodes (1 CPU each) on this machine, in a temp dir of this test's own (short:
    Ray's socket paths have a length limit), no dashboard; always shut down."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    os.makedirs(os.path.join(temp, "ray"))  # where Ray writes the address of the current cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "temp_dir": os.path.join(temp, "ray")})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_on_two_nodes_gives_the_same_frames(two_node_cluster, bunny_small, tmp_path, pulled):
    pulled(MODEL)
    config = RemasterConfig(chunk_seconds=0.4, backend="torch", threads=1)
    local = remaster(bunny_small, tmp_path / "local.mp4", config)
    seen = []
    distributed = remaster_on_ray(bunny_small, tmp_path / "ray.mp4", config, workers=2, progress=seen.append)
    assert distributed.chunks == local.chunks >= 4
    assert seen[-1].done == seen[-1].total == 50
    a, b = frame_hashes(tmp_path / "local.mp4"), frame_hashes(tmp_path / "ray.mp4")
    assert len(a) == len(b) == 50 and a == b
    assert [s.codec for s in probe(tmp_path / "ray.mp4").others] == ["aac"]
    assert distributed.nodes == 2  # the chunks were spread over both nodes


def test_ray_command_line(two_node_cluster, bunny_small, tmp_path, pulled, capsys):
    pulled(MODEL)
    code = ray_main([str(bunny_small), "-o", str(tmp_path / "cli.mp4"), "-m", MODEL, "--preview", "0.5",
                     "--backend", "torch", "--chunk-seconds", "0.2"])
    assert code == 0
    assert probe(tmp_path / "cli.mp4").frames == 13
    assert "done: 13 frames" in capsys.readouterr().err

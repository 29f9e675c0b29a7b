"""Augmenting and degrading a folder on Ray Data, on a real local Ray: byte for byte the files
the single-process run writes, resumable the same way, a bad input named as it is there, and a
COCO set sent to ``genai synth augment``. One test, so that Ray starts once."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a real Ray: make test-all

from genai.errors import InputError  # noqa: E402
from genai.synth.augment import augment_folder  # noqa: E402
from pipelines.augment import augment_on_ray  # noqa: E402
from tests.pipelines.test_design_ray import local_ray  # noqa: E402, F401
from tests.synth.test_augment import make_imagefolder, write_coins_set  # noqa: E402


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ray_writes_the_same_files_as_one_process_resumes_and_names_bad_inputs(local_ray, tmp_path):
    src = make_imagefolder(tmp_path / "src")
    for options in ({"mode": "augment", "copies": 2, "preset": "classification", "hflip": True, "seed": 4},
                    {"mode": "degrade", "scale": 4, "seed": 4}):
        local, on_ray = tmp_path / f"{options['mode']}-local", tmp_path / f"{options['mode']}-ray"
        seen = []
        result = augment_on_ray(src, on_ray, progress=seen.append, **options)
        assert result == augment_folder(src, local, **options) and result.written > 0
        assert (seen[-1].done, seen[-1].total) == (5, 5)
        assert _tree(on_ray) == _tree(local), options["mode"]

        victim = sorted(on_ray.rglob("*.png"))[-1]
        victim.unlink()
        assert augment_on_ray(src, on_ray, **options).written == 1
        assert _tree(on_ray) == _tree(local), options["mode"]

    # truncated past its header: the driver's check lets it through, a worker finds it
    data = (src / "cat" / "chelsea.png").read_bytes()
    (src / "cat" / "broken.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="broken.png: truncated or corrupt"):
        augment_on_ray(src, tmp_path / "broken", copies=1)
    coco = write_coins_set(tmp_path / "coco")
    with pytest.raises(InputError, match=f"^{coco}: a COCO set, .*`genai synth augment`"):
        augment_on_ray(coco, tmp_path / "never")
    assert not (tmp_path / "never").exists()

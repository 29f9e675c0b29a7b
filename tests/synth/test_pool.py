"""A generator that learns from an unlabelled pool too: real Fashion-MNIST images (Debian's
dataset-fashion-mnist), a tiny network and a tiny pool, end to end through the commands
(pseudo-labels, run card, filtered sampling), resume after a stop, and every kind of bad pool."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genai.errors import Cancelled, InputError
from genai.synth.data import load_fashion_mnist, write_imagefolder
from genai.synth.diffusion import TrainConfig
from genai.synth.pool import POOL_CACHE, Pool, read_pool
from genai.synth.pseudo import CANDIDATES, PseudoConfig, choose_threshold
from genai.synth.training import PoolConfig, train
from tests.test_cli import genai

CLASSES = [0, 1, 7]  # T-shirt, trouser, sneaker: a few labeller steps tell them apart
TINY = ["--steps", "6", "--batch", "8", "--channels", "8,16", "--checkpoint-every", "3", "--labeller-steps", "20"]


@pytest.fixture(scope="module")
def fmnist():
    data = load_fashion_mnist("train")
    keep = np.flatnonzero(np.isin(data.labels, CLASSES))[:3000]
    sub = data.subset(keep)
    remap = {c: i for i, c in enumerate(CLASSES)}
    sub.labels = np.array([remap[int(y)] for y in sub.labels])
    sub.classes = [data.classes[c] for c in CLASSES]
    return sub


@pytest.fixture(scope="module")
def labelled(fmnist, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled") / "set"
    few = fmnist.per_class(6, seed=0)
    write_imagefolder(root, few.images, few.labels, few.classes, [f.replace("/", "_") for f in few.files])
    return root


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def pool_folder(fmnist, labelled, tmp_path_factory) -> Path:
    """40 unlabelled images in nested folders (not classes), two of them RGB at 56x56, plus a
    text file, a broken PNG and a copy of a labelled image."""
    root = tmp_path_factory.mktemp("pool") / "pool"
    imgs = fmnist.images[-40:, ..., 0]
    for i, px in enumerate(imgs):
        _png(root / f"batch{i % 3}" / "deeper" / f"u{i:03d}.png", px)
    for i in range(2):
        rgb = np.asarray(Image.fromarray(imgs[i]).convert("RGB").resize((56, 56)))
        _png(root / f"colour_{i}.jpg", rgb)
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    copy = next(labelled.rglob("*.png"))
    (root / "copy_of_labelled.png").write_bytes(copy.read_bytes())
    return root


def test_train_with_a_pool_then_sample_through_the_filter(labelled, pool_folder, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, "genai")
    run = tmp_path / "run"
    code, out, err = genai(capsys, "synth", "train", labelled, "--unlabelled", pool_folder, "--out", run, *TINY)
    assert code == 0, err
    info = json.loads((run / POOL_CACHE / "pool.json").read_text())
    assert info["images"] == 42 and info["files"] == 45  # 40 + 2 resized, not: a text file, a broken PNG, a copy
    assert (info["not_images"], info["unreadable"], info["labelled_copies"]) == (1, 1, 1)
    assert info["resized"] == 2 and info["converted"] == 2
    assert "left out of the pool" in caplog.text and "skipped 1 file(s) that are not images" in caplog.text
    assert "2 pool image(s) resized to 28x28 and 2 converted to grayscale" in caplog.text
    pseudo = json.loads((run / "pseudo.json").read_text())
    assert pseudo["pool"] == 42 and pseudo["threshold"] in CANDIDATES and "cross-validation" in pseudo["chosen_by"]
    assert pseudo["coverage"] == pseudo["confident"] / 42
    card = (run / "MODEL_CARD.md").read_text()
    for fact in (info["sha256"], "42 images", "pseudo-label coverage", "estimated pseudo-label accuracy"):
        assert fact in card
    meta = json.loads((run / "model.json").read_text())
    assert meta["pool"] == {"images": 42, "sha256": info["sha256"]} and meta["classifier"]["file"]

    out_dir = tmp_path / "samples"
    code, _, err = genai(capsys, "synth", "sample", run, "-n", "3", "--steps", "2", "--out", out_dir,
                         "--max-draws", "2", "--soft-labels")
    assert code == 0, err
    card = json.loads((out_dir / "dataset.json").read_text())
    f = card["filter"]
    assert f["drawn"] >= f["kept"] == sum(len(list((out_dir / c).glob("*.png"))) for c in card["classes"]
                                          if (out_dir / c).is_dir())
    assert f["rejected_rate"] == round(1 - f["kept"] / f["drawn"], 4) and "confidence filter kept" in caplog.text
    assert sorted(f["soft_labels"]) == sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*.png"))
    assert all(abs(sum(p) - 1) < 1e-3 for p in f["soft_labels"].values())

    code, _, err = genai(capsys, "synth", "sample", run, "-n", "2", "--steps", "2", "--out", tmp_path / "all",
                         "--no-filter")
    assert code == 0 and "filter" not in json.loads((tmp_path / "all" / "dataset.json").read_text())


def test_a_stopped_pool_run_resumes_to_the_same_weights(fmnist, tmp_path):
    from safetensors.torch import load_file

    few = fmnist.per_class(4, seed=1)
    pool = Pool.from_array(fmnist.images[-30:])
    cfg = TrainConfig(steps=6, batch_size=8, channels=(8, 16), checkpoint_every=2)
    pool_cfg = PoolConfig(pseudo=PseudoConfig(steps=5, folds=2))
    train(few, tmp_path / "whole", cfg, pool=pool, pool_cfg=pool_cfg)
    seen = []

    def stop_in_training(p) -> None:
        seen.append(p.stage)

    def cancel() -> bool:
        return seen.count("train") >= 3

    with pytest.raises(Cancelled):
        train(few, tmp_path / "part", cfg, pool=pool, pool_cfg=pool_cfg, progress=stop_in_training, cancel=cancel)
    assert "labeller" in seen and not (tmp_path / "part" / "generator.safetensors").exists()
    train(few, tmp_path / "part", cfg, pool=pool, pool_cfg=pool_cfg)  # reuses the pseudo-labels and the checkpoint
    a, b = load_file(tmp_path / "whole" / "generator.safetensors"), load_file(tmp_path / "part" / "generator.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    with pytest.raises(InputError, match="other pool"):  # another pool in the same run folder
        train(few, tmp_path / "part", cfg, pool=Pool.from_array(fmnist.images[-31:-1]), pool_cfg=pool_cfg)


def test_the_threshold_is_the_lowest_that_keeps_the_target_accuracy():
    conf = np.array([0.55] * 10 + [0.75] * 10 + [0.92] * 10)
    right = np.array([False] * 10 + [True] * 8 + [False] * 2 + [True] * 10)
    t, acc, why, table = choose_threshold(conf, right, 0.9)
    assert t == 0.6 and acc == 0.9 and "lowest" in why  # >= 0.6 keeps 18 of 20 right
    assert choose_threshold(conf, right, 0.99)[0] == 0.8  # only the 0.92s are all right
    assert choose_threshold(np.full(10, 0.3), np.ones(10, bool), 0.9)[1] is None


@pytest.mark.parametrize("case", ["empty", "is-labelled", "inside-labelled", "mostly-bad", "missing"])
def test_a_bad_pool_is_one_line_and_exit_2(case, labelled, tmp_path, capsys):
    pool = tmp_path / "pool"
    pool.mkdir()
    if case == "is-labelled":
        pool = labelled
    elif case == "inside-labelled":
        pool = next(p for p in labelled.iterdir() if p.is_dir())
    elif case == "mostly-bad":
        for i in range(3):
            (pool / f"f{i}.txt").write_text("x")
        _png(pool / "one.png", np.zeros((28, 28), np.uint8))
    elif case == "missing":
        pool = tmp_path / "nowhere"
    run = tmp_path / "run"
    code, out, err = genai(capsys, "synth", "train", labelled, "--unlabelled", pool, "--out", run, *TINY)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(pool) in lines[0], err
    expect = {"empty": "has no images", "is-labelled": "is the labelled set", "inside-labelled": "inside the labelled",
              "mostly-bad": "more bad files than images", "missing": "not a folder"}[case]
    assert expect in lines[0]
    assert not (run / "generator.safetensors").exists() and not (run / POOL_CACHE / "pool.u8").exists()


def test_the_pool_is_read_once_and_streamed(labelled, pool_folder, tmp_path, monkeypatch):
    from genai.synth.data import load_imagefolder

    like = load_imagefolder(labelled)
    first = read_pool(pool_folder, like, tmp_path)
    assert isinstance(first.images, np.memmap) and first.images.dtype == np.uint8
    import genai.images

    monkeypatch.setattr(genai.images, "read_image", lambda *a, **k: pytest.fail("decoded again"))
    again = read_pool(pool_folder, like, tmp_path)
    assert again.info == first.info and np.array_equal(np.asarray(again.images), np.asarray(first.images))


def test_evaluate_flags_copies_of_pool_images(labelled, pool_folder, fmnist, tmp_path, capsys):
    """Samples that copy pool images fail the memorisation gate once the pool is named."""
    fake = tmp_path / "synthetic"
    few = fmnist.per_class(2, seed=5)
    copies = fmnist.images[-40:][: len(few)]  # the pool's first images, under any label
    write_imagefolder(fake, copies, few.labels, few.classes, [f"s{i}" for i in range(len(few))])
    code, out, _ = genai(capsys, "synth", "evaluate", labelled, fake, "--steps", "5")
    assert "memorised_rate_pool" not in out
    code, out, _ = genai(capsys, "synth", "evaluate", labelled, fake, "--steps", "5", "--unlabelled", pool_folder)
    assert code == 1 and "memorised_rate_pool 1.0000" in out and "near-copy of a pool image" in out
    assert "memorisation FAIL" in out

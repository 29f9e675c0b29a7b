"""The diffusion generator on real Fashion-MNIST images (Debian's dataset-fashion-mnist):
training, resume, sampling, cards, variants, and the commands with every kind of bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genai.errors import Cancelled, InputError
from genai.synth.data import LabelledImages, load_fashion_mnist, load_imagefolder, write_imagefolder
from genai.synth.diffusion import GeneratorConfig, SampleConfig, SynthGenerator, TrainConfig, sample_folder, variants_folder
from genai.synth.training import train
from tests.test_cli import genai

TINY = TrainConfig(steps=12, batch_size=8, channels=(8, 16), checkpoint_every=4)


@pytest.fixture(scope="module")
def fmnist():
    return load_fashion_mnist("train")


@pytest.fixture(scope="module")
def small(fmnist):
    """Three real images of each of the ten classes."""
    return fmnist.per_class(3, seed=1)


@pytest.fixture(scope="module")
def small_folder(small, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "fmnist"
    write_imagefolder(root, small.images, small.labels, small.classes, [f.replace("/", "_") for f in small.files])
    return root


@pytest.fixture(scope="module")
def tiny_run(small, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(small, run, TINY)
    return run


def gen_classes(run: Path) -> list[str]:
    return json.loads((run / "model.json").read_text())["classes"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "generator.safetensors")


def test_run_folder_and_model_card(tiny_run, small):
    meta = json.loads((tiny_run / "model.json").read_text())
    assert meta["classes"] == small.classes and meta["size"] == [28, 28] and meta["channels"] == 1
    assert meta["unet"]["sample_size"] == 32  # 28 padded to 32
    assert meta["unet"]["num_class_embeds"] == 11  # ten classes and the null label
    assert meta["weights_sha256"] == hashlib.sha256((tiny_run / "generator.safetensors").read_bytes()).hexdigest()
    card = (tiny_run / "MODEL_CARD.md").read_text()
    for fact in (small.sha256, "Ankle_boot", "| steps | 12 ", "| seed | 0 |", meta["weights_sha256"]):
        assert fact in card
    with Image.open(tiny_run / "loss.png") as im:
        assert im.size == (640, 360)


def test_resume_after_cancel_gives_the_same_weights(small, tmp_path, tiny_run):
    calls = []

    def cancel_at_six() -> bool:
        return len(calls) >= 6

    with pytest.raises(Cancelled):
        train(small, tmp_path / "r", TINY, progress=calls.append, cancel=cancel_at_six)
    assert (tmp_path / "r" / "checkpoint.pt").exists() and not (tmp_path / "r" / "generator.safetensors").exists()
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["step"] == 6
    resumed_from = []
    train(small, tmp_path / "r", TINY, progress=resumed_from.append)
    assert resumed_from[0].done == 7  # it went on from step 6, not from the start
    a, b = _weights(tiny_run), _weights(tmp_path / "r")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_with_other_settings_is_refused(small, tiny_run):
    with pytest.raises(InputError, match="other config"):
        train(small, tiny_run, TrainConfig(steps=13, batch_size=8, channels=(8, 16), checkpoint_every=4))


def test_samples_have_shapes_labels_and_a_card(tiny_run, tmp_path):
    out = tmp_path / "samples"
    calls = []
    sample_folder(tiny_run, out, SampleConfig(per_class={"Trouser": 3, "Bag": 2}, steps=4), progress=calls.append)
    data = load_imagefolder(out)  # classes in the generator's order, from dataset.json
    assert data.images.shape == (5, 28, 28, 1) and data.classes == gen_classes(tiny_run)
    assert data.counts()["Bag"] == 2 and data.counts()["Trouser"] == 3 and data.counts()["Coat"] == 0
    assert [data.classes[i] for i in data.labels] == [Path(f).parts[0] for f in data.files]
    card = json.loads((out / "dataset.json").read_text())
    assert card["weights_sha256"] == json.loads((tiny_run / "model.json").read_text())["weights_sha256"]
    assert card["class_counts"]["Trouser"] == 3 and card["class_counts"]["Coat"] == 0
    assert card["parameters"] == {"guidance": 2.0, "steps": 4, "sampler": "dpmsolver++", "seed": 0}
    assert card["classes"] == json.loads((tiny_run / "model.json").read_text())["classes"]
    assert "keep them out of any test" in (out / "DATASET_CARD.md").read_text()
    assert calls[-1].done == calls[-1].total == 5
    assert not list(tmp_path.glob(".*genai-work"))
    # every image is fixed by its seed (its file name): any one can be remade alone
    gen = SynthGenerator(config=GeneratorConfig(run=tiny_run))
    again = gen.sample([gen.classes.index("Trouser")], seeds=[1], steps=4)
    assert np.array_equal(again[0, ..., 0], np.asarray(Image.open(out / "Trouser" / "00000001.png")))


def test_sampling_resumes_where_it_stopped(tiny_run, tmp_path):
    cfg = SampleConfig(per_class=2, steps=3, batch_size=6)
    whole = sample_folder(tiny_run, tmp_path / "whole", cfg)
    batches = []
    with pytest.raises(Cancelled):
        sample_folder(tiny_run, tmp_path / "cut", cfg, progress=batches.append, cancel=lambda: len(batches) >= 1)
    work = tmp_path / ".cut.genai-work"
    assert len(list(work.rglob("*.png"))) == 6 and not (tmp_path / "cut").exists()
    with pytest.raises(InputError, match="holds an unfinished run with other parameters"):
        sample_folder(tiny_run, tmp_path / "cut", SampleConfig(per_class=2, steps=3, batch_size=6, guidance=3.0))
    progress = []
    cut = sample_folder(tiny_run, tmp_path / "cut", cfg, progress=progress.append)
    assert progress[0].done == 12  # the first batch was not made again
    files = sorted(p.relative_to(whole) for p in whole.rglob("*.png"))
    assert files == sorted(p.relative_to(cut) for p in cut.rglob("*.png")) and len(files) == 20
    assert all((whole / f).read_bytes() == (cut / f).read_bytes() for f in files)


def test_variants_keep_labels_and_stay_close_at_low_strength(tiny_run, small, tmp_path):
    out = variants_folder(small.subset(np.arange(4)), tiny_run, tmp_path / "v", copies=2, strength=0.2, steps=10)
    made = load_imagefolder(out)
    assert len(made) == 8
    sources = {Path(f).stem: small.labels[i] for i, f in enumerate(small.files[:4])}
    for f, label in zip(made.files, made.labels, strict=True):
        assert small.classes[sources[Path(f).stem.rsplit("_v", 1)[0]]] == made.classes[label]
    gen = SynthGenerator(config=GeneratorConfig(run=tiny_run))
    img, lab = small.images[:4], small.labels[:4]
    near = gen.variants(img, lab, seeds=[0, 1, 2, 3], strength=0.2, steps=10)
    far = gen.variants(img, lab, seeds=[0, 1, 2, 3], strength=1.0, steps=10)
    diff = lambda x: np.abs(x.astype(int) - img.astype(int)).mean()  # noqa: E731
    assert diff(near) < 0.5 * diff(far)


@pytest.mark.slow  # ~100 s idle, ~3 min on a busy machine: make test-all
def test_the_label_steers_the_generator(fmnist, tmp_path):
    """Trained for a minute on two classes (16x16), samples carry their class: a classifier trained on
    real images agrees with the label of >= 90% of them (measured: 100%; an unconditioned model: ~50%)."""
    from genai.synth.quality import evaluate

    idx = np.flatnonzero(np.isin(fmnist.labels, [1, 8]))[:400]  # Trouser, Bag
    small16 = np.stack([np.asarray(Image.fromarray(fmnist.images[i, ..., 0]).resize((16, 16), Image.Resampling.LANCZOS))
                        for i in idx])[..., None]
    two = LabelledImages(small16, (fmnist.labels[idx] == 8).astype(np.int64), ["Trouser", "Bag"],
                         [str(i) for i in idx], sha256="fmnist-trouser-bag-16")
    real = two.per_class(20, seed=0)
    run = tmp_path / "two"
    train(real, run, TrainConfig(steps=400, batch_size=32, channels=(16, 32), learning_rate=1e-3, warmup_steps=20))
    sample_folder(run, tmp_path / "s", SampleConfig(per_class=20, guidance=3.0, steps=15))
    synth = load_imagefolder(tmp_path / "s")
    assert synth.classes == ["Trouser", "Bag"]  # the generator's order (dataset.json), not sorted
    report = evaluate(real, synth, reference=two, steps=150)
    assert report["label_fidelity"] >= 0.9, report
    assert report["memorised_rate"] <= 0.1 and report["class_counts"] == {"Trouser": 20, "Bag": 20}


# --------------------------------------------------------------------------- the commands


def test_train_and_sample_commands(small_folder, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "samples"
    code, _, err = genai(capsys, "synth", "train", small_folder, "--out", run, "--steps", "2", "--batch", "4",
                         "--channels", "8,16")
    assert code == 0 and (run / "generator.safetensors").exists(), err
    code, _, err = genai(capsys, "synth", "sample", run, "-n", "1", "--steps", "2", "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(p.name for p in small_folder.iterdir())


@pytest.mark.slow  # three trainings: minutes on a busy machine (make test-all)
def test_ctrl_c_stops_train_and_the_rerun_resumes_to_the_same_weights(small_folder, small, tmp_path, capsys):
    """Ctrl-C (a real SIGINT to this process) stops at the next step with the state saved; the rerun
    ends with the very weights of an uninterrupted run."""
    run = tmp_path / "run"
    args = ["synth", "train", small_folder, "--out", run, "--steps", "60", "--batch", "8", "--channels", "8,16",
            "--checkpoint-every", "5"]

    def interrupt() -> None:
        deadline = time.monotonic() + 300
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:  # step 5 is done: it runs
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)  # the run stops at its next step, far before step 60

    killer = threading.Thread(target=interrupt)
    killer.start()
    code, _, err = genai(capsys, *args)
    killer.join()
    assert code == 130, err
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 5 <= step < 60
    assert genai(capsys, *args)[0] == 0
    reference = tmp_path / "reference"
    assert genai(capsys, *[reference if a == run else a for a in args])[0] == 0
    a, b = _weights(reference), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "samples"
    code, _, err = genai(capsys, "synth", "sample", run, "-n", "1", "--steps", "2", "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(p.name for p in small_folder.iterdir())


def _bad(tmp_path: Path, **classes) -> Path:
    root = tmp_path / "bad"
    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for i, img in enumerate(images):
            if isinstance(img, bytes):
                (root / name / f"{i}.png").write_bytes(img)
            else:
                Image.fromarray(img).save(root / name / f"{i}.png")
    return root


GRAY = np.full((28, 28), 128, np.uint8)
_buf = io.BytesIO()
Image.fromarray(load_fashion_mnist("test").images[0, ..., 0]).save(_buf, format="PNG")
REAL_PNG = _buf.getvalue()


@pytest.mark.parametrize("case, message", [
    ("empty", "Sandal: empty class folder"),
    ("one-class", "needs at least two class folders"),
    ("unreadable", "Bag/1.png: not an image"),
    ("truncated", "Bag/0.png: truncated or corrupt image"),
    ("sizes", "Bag/1.png: 32x32 pixels, but Bag/0.png is 28x28"),
    ("modes", "Coat/0.png: colour image in a grayscale set"),
])
def test_bad_training_data_is_one_line(tmp_path, case, message, capsys):
    png = tmp_path / "x.png"
    Image.fromarray(np.asarray(Image.open(io.BytesIO(REAL_PNG)))).save(png)
    truncated = png.read_bytes()[: png.stat().st_size // 2]
    data = {
        "empty": dict(Bag=[GRAY], Sandal=[]),
        "one-class": dict(Bag=[GRAY, GRAY]),
        "unreadable": dict(Bag=[GRAY, b"this is not a picture"], Coat=[GRAY]),
        "truncated": dict(Bag=[truncated], Coat=[GRAY]),
        "sizes": dict(Bag=[GRAY, np.zeros((32, 32), np.uint8)], Coat=[GRAY]),
        "modes": dict(Bag=[GRAY], Coat=[np.zeros((28, 28, 3), np.uint8)]),
    }[case]
    root = _bad(tmp_path, **data)
    code, _, err = genai(capsys, "synth", "train", root, "--out", tmp_path / "run", "--steps", "2")
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "run").exists()


def test_bad_sampling_requests(tiny_run, small, tmp_path, capsys):
    code, _, err = genai(capsys, "synth", "sample", tiny_run, "--class", "Tractor=3", "--out", tmp_path / "s")
    assert code == 2 and "unknown class 'Tractor'" in err
    unfinished = tmp_path / "unfinished"
    with pytest.raises(Cancelled):
        train(small, unfinished, TINY, cancel=lambda: True)
    code, _, err = genai(capsys, "synth", "sample", unfinished, "--out", tmp_path / "s")
    assert code == 2 and "is not finished (rerun genai synth train to resume)" in err
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _, err = genai(capsys, "synth", "sample", tiny_run, "--out", existing)
    assert code == 2 and "exists (use --overwrite" in err
    assert not (tmp_path / "s").exists()
    assert not os.listdir(existing)
    (existing / "keep.txt").write_text("the old set")
    code, _, err = genai(capsys, "synth", "sample", tiny_run, "--class", "Tractor=1", "--overwrite", "--out", existing)
    assert code == 2 and (existing / "keep.txt").exists()  # a bad request never costs the old set

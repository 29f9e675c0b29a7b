"""The quality gates against closed forms and real Fashion-MNIST images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genai.synth import quality as Q
from genai.synth.data import load_fashion_mnist, write_imagefolder
from tests.test_cli import genai


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b = np.array([0.0, 1.0, -1.0]), np.array([0.5, 1.0, 0.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5])
    a = rng.normal(mu_a, sd_a, size=(200_000, 3))
    b = rng.normal(mu_b, sd_b, size=(200_000, 3))
    # independent components: ||mu_a - mu_b||^2 + sum (sd_a - sd_b)^2
    expected = ((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum()
    assert Q.frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert Q.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_and_precision_recall_separate_equal_from_shifted_sets():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    far = rng.normal(size=(600, 8)) + 10.0
    same, _ = Q.kernel_inception_distance(a, b)
    shifted, _ = Q.kernel_inception_distance(a, far)
    assert abs(same) < 0.05 < shifted
    assert Q.precision_recall(a, a) == (1.0, 1.0)
    p, r = Q.precision_recall(a, b)
    assert p > 0.8 and r > 0.8
    assert Q.precision_recall(a, far) == (0.0, 0.0)


@pytest.fixture(scope="module")
def fmnist():
    return load_fashion_mnist("train")


def test_memorisation_flags_copies_not_new_images(fmnist):
    training = fmnist.per_class(10, seed=0)
    copies = training.images[:20]
    others = fmnist.per_class(2, seed=99).images  # other real images of the same classes
    assert (Q.memorisation(copies, training.images) < 1 / 3).all()
    ratios = Q.memorisation(others, training.images)
    assert (ratios >= 1 / 3).mean() > 0.9


def test_evaluate_command_fails_the_gate_on_copies(fmnist, tmp_path, capsys):
    real = fmnist.per_class(3, seed=0)
    names = [f.replace("/", "_") for f in real.files]
    write_imagefolder(tmp_path / "real", real.images, real.labels, real.classes, names)
    write_imagefolder(tmp_path / "copies", real.images, real.labels, real.classes, names)
    code, out, err = genai(capsys, "synth", "evaluate", tmp_path / "real", tmp_path / "copies", "--steps", "5")
    assert code == 1, err
    assert "not Inception" in out and "memorisation FAIL" in out
    assert "near-copy of a training image" in out
    other = fmnist.per_class(3, seed=7)
    write_imagefolder(tmp_path / "other", other.images, other.labels, other.classes)
    code, out, err = genai(capsys, "synth", "evaluate", tmp_path / "real", tmp_path / "other", "--steps", "5",
                           "--json")
    assert code in (0, 1), err
    report = json.loads(out)
    assert report["memorised_rate"] < 0.1 and report["gates"]["class_balance"]
    assert report["synthetic_images"] == 30 and report["class_counts"]["Bag"] == 3


def test_evaluate_refuses_sets_of_other_classes(fmnist, tmp_path, capsys):
    real = fmnist.per_class(2, seed=0)
    write_imagefolder(tmp_path / "real", real.images, real.labels, real.classes)
    write_imagefolder(tmp_path / "three", real.images[:6], np.array([0, 0, 1, 1, 2, 2]), ["a", "b", "c"])
    code, _, err = genai(capsys, "synth", "evaluate", tmp_path / "real", tmp_path / "three")
    assert code == 2 and "are not the real set's" in err

"""Augmentation keeps labels on the pixels; Real-ESRGAN degradations; folders in and out, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from skimage.filters import threshold_otsu
from torchvision.transforms import v2

from genai.errors import Cancelled, InputError
from genai.images import Image, read_image, write_image
from genai.synth.augment import (
    DegradationConfig, DegradationStage, FolderOptions, augment_folder, augment_sample, blur_kernel, degrade, outputs,
    sinc_kernel,
)
from genai.synth.cli_augment import register

H, W = 480, 640
HORSE, SPECK = 7, 3  # labels


def make_imagefolder(root: Path) -> Path:
    """Five real photographs (one gray, one JPEG) in three class folders, at half size."""
    files = {"cat/chelsea.png": "chelsea", "cat/astronaut.jpg": "astronaut", "object/coffee.png": "coffee",
             "object/rocket.png": "rocket", "gray/camera.png": "camera"}
    for rel, name in files.items():
        a = getattr(skimage.data, name)()
        a = cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)
        write_image(Image(a[:, :, None] if a.ndim == 2 else a), root / rel)
    return root


def _tight_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


@pytest.fixture(scope="module")
def scene():
    """A horse (skimage's silhouette, textured with a real photograph, bright on black) with its
    mask, tight box and its four extreme pixels as keypoints; plus a 6 px speck on the right edge."""
    horse = cv2.resize((~skimage.data.horse()).astype(np.uint8), (200, 164), interpolation=cv2.INTER_NEAREST) > 0
    masks = np.zeros((2, H, W), bool)
    masks[0, 158:322, 220:420] = horse
    masks[1, 20:26, W - 6:] = True
    texture = cv2.resize(skimage.data.chelsea(), (W, H))
    image = np.where(masks[0][:, :, None], 128 + texture // 2, 0).astype(np.uint8)
    rows, cols = np.nonzero(masks[0])
    extremes = [np.argmin(cols), np.argmax(cols), np.argmin(rows), np.argmax(rows)]
    keypoints = np.zeros((2, 4, 2), np.float32)
    keypoints[0] = np.stack([cols[extremes], rows[extremes]], axis=1)
    keypoints[1] = [W - 6, 20]
    target = {"boxes": np.stack([_tight_box(m) for m in masks]), "labels": np.array([HORSE, SPECK]),
              "masks": masks, "keypoints": keypoints}
    return image, target


def _only_horse(target: dict) -> dict:
    return {k: v[:1] for k, v in target.items()}


@pytest.mark.parametrize("preset", ["detection", "classification"])
def test_boxes_masks_and_keypoints_follow_the_pixels(scene, preset):
    image, target = scene
    kept = 0
    for seed in range(6):
        out, t = augment_sample(image, _only_horse(target), preset=preset, seed=seed)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"]) == len(t["keypoints"]) <= 1
        if not len(t["boxes"]):
            continue
        kept += 1
        mask, box = t["masks"][0], t["boxes"][0]
        gray = out.max(axis=2)
        bright = gray > threshold_otsu(gray)
        np.testing.assert_allclose(_tight_box(bright), _tight_box(mask), atol=2, err_msg=f"seed {seed}")
        if preset == "detection":  # no rotation: the box stays the tight box of the object
            np.testing.assert_allclose(box, _tight_box(mask), atol=1, err_msg=f"seed {seed}")
        else:  # rotated: the box around the rotated box holds the object
            assert (box[:2] <= _tight_box(mask)[:2] + 1).all() and (box[2:] >= _tight_box(mask)[2:] - 1).all()
        for x, y in np.rint(t["keypoints"][0]).astype(int):
            if 0 <= x < W and 0 <= y < H:
                assert mask[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any(), f"seed {seed}: keypoint {x, y}"
    assert kept >= 5


def test_hflip_moves_box_mask_and_keypoints_exactly(scene):
    image, target = scene
    out, t = augment_sample(image, target, preset=v2.RandomHorizontalFlip(p=1.0), seed=0)
    np.testing.assert_array_equal(out, image[:, ::-1])
    x0, y0, x1, y1 = target["boxes"].T
    np.testing.assert_array_equal(t["boxes"], np.stack([W - x1, y0, W - x0, y1], axis=1))
    np.testing.assert_array_equal(t["masks"], target["masks"][:, :, ::-1])
    np.testing.assert_array_equal(t["keypoints"][..., 0], W - 1 - target["keypoints"][..., 0])
    np.testing.assert_array_equal(t["labels"], target["labels"])


def test_sanitize_drops_boxes_with_their_labels_masks_and_keypoints(scene):
    image, target = scene
    _, t = augment_sample(image, target, preset=v2.CenterCrop((H, W // 2)), seed=0)  # the speck is cut off
    assert t["labels"].tolist() == [HORSE]
    assert t["masks"].shape == (1, H, W // 2) and t["keypoints"].shape == (1, 4, 2)
    np.testing.assert_allclose(t["boxes"][0], _tight_box(t["masks"][0]), atol=1)
    dropped = 0
    for seed in range(8):  # the detection preset's shift pushes the speck out about half the time
        _, t = augment_sample(image, target, preset="detection", seed=seed)
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"]) == len(t["keypoints"])
        assert HORSE in t["labels"]
        dropped += SPECK not in t["labels"]
    assert 0 < dropped < 8


def test_augmentation_is_deterministic_by_seed_and_leaves_torch_rng_alone(scene):
    image, target = scene
    state = torch.get_rng_state()
    a, ta = augment_sample(image, target, preset="detection", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b, tb = augment_sample(image, target, preset="detection", seed=3)
    c, _ = augment_sample(image, target, preset="detection", seed=4)
    np.testing.assert_array_equal(a, b)
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k])
    assert not np.array_equal(a, c)


def test_gaussian_kernels_match_opencv():
    g = cv2.getGaussianKernel(21, 2.0)
    np.testing.assert_allclose(blur_kernel("iso", 21, 2.0), g @ g.T, atol=1e-7)
    gx, gy = cv2.getGaussianKernel(21, 1.0), cv2.getGaussianKernel(21, 3.0)
    aniso = blur_kernel("aniso", 21, 1.0, 3.0, theta=0.0)
    np.testing.assert_allclose(aniso, gy @ gx.T, atol=1e-7)  # sigma_x along columns
    np.testing.assert_allclose(blur_kernel("aniso", 21, 1.0, 3.0, theta=np.pi / 2), aniso.T, atol=1e-7)
    np.testing.assert_allclose(blur_kernel("generalized_aniso", 21, 1.0, 3.0, 0.3, beta=1.0),
                               blur_kernel("aniso", 21, 1.0, 3.0, 0.3), atol=1e-9)


def test_sinc_kernel_is_a_low_pass_at_its_cutoff():
    k = sinc_kernel(np.pi / 2, 21)
    response = np.abs(np.fft.fft2(k, (256, 256)))  # frequency (i, j) is 2 pi (i, j) / 256 rad/px
    assert response[0, 0] == pytest.approx(1.0)
    assert response[0, 26] > 0.9 and response[26, 0] > 0.9  # 0.2 pi, below the cutoff
    assert response[0, 102] < 0.1 and response[72, 72] < 0.1  # 0.8 pi (and 0.8 pi diagonally), above it


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "camera"])
def test_degrade_gives_a_plausible_low_resolution_image(name):
    hr = getattr(skimage.data, name)()
    hr = hr[:, :, None] if hr.ndim == 2 else hr
    hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
    lr = degrade(hr, scale=4, seed=0)
    assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, hr.shape[2]) and lr.dtype == np.uint8
    plain = cv2.resize(hr, (lr.shape[1], lr.shape[0]), interpolation=cv2.INTER_CUBIC).reshape(lr.shape)
    psnr = cv2.PSNR(lr, plain)
    assert 15 < psnr < 35, psnr  # blurred, noisy and compressed, but the same picture
    np.testing.assert_array_equal(degrade(hr, scale=4, seed=0), lr)
    assert not np.array_equal(degrade(hr, scale=4, seed=1), lr)


def test_degrade_without_noise_or_blur_is_close_to_a_resize():
    """With the random parts turned down, what is left is resizing (bilinear or bicubic without
    antialiasing alias, as in Real-ESRGAN) and JPEG at quality 95."""
    quiet = DegradationStage(kernel_prob=(1, 0, 0, 0, 0, 0), sinc_prob=0.0, blur_sigma=(0.2, 0.2),
                             resize_prob=(0, 0, 1), gaussian_noise_prob=1.0, noise_range=(0, 0),
                             jpeg_range=(95, 95))
    config = DegradationConfig(first=quiet, second=quiet, second_blur_prob=0.0, final_sinc_prob=0.0)
    hr = skimage.data.astronaut()
    lr = degrade(hr, scale=4, seed=0, config=config)
    plain = cv2.resize(hr, (128, 128), interpolation=cv2.INTER_AREA)
    assert cv2.PSNR(lr, plain) > 25
    assert cv2.PSNR(degrade(hr, scale=4, seed=0), plain) < cv2.PSNR(lr, plain) - 3


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_augment_folder_writes_copies_next_to_originals_and_resumes(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    seen = []
    result = augment_folder(src, tmp_path / "out", copies=2, seed=1, progress=seen.append)
    files = _tree(tmp_path / "out")
    rels = sorted(_tree(src))
    assert sorted(files) == sorted(o for rel in rels for o in outputs(rel, FolderOptions(copies=2)))
    assert (result.images, result.written) == (5, 15)
    assert (seen[-1].done, seen[-1].total, seen[-1].stage) == (5, 5, "augment")
    for rel in rels:
        assert files[rel] == (src / rel).read_bytes()
        stem = rel.rsplit(".", 1)[0]
        copy = read_image(tmp_path / "out" / f"{stem}_aug1.png").pixels
        assert copy.shape == read_image(src / rel).pixels.shape
    assert files["cat/chelsea_aug0.png"] != files["cat/chelsea_aug1.png"]

    victim = tmp_path / "out" / "object/coffee_aug1.png"
    victim.unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.*")}
    again = augment_folder(src, tmp_path / "out", copies=2, seed=1)
    assert again.written == 1
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert _tree(tmp_path / "out") == files  # the same bytes again: deterministic by seed and path
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files left


def test_degrade_folder_writes_hr_lr_pairs(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    result = augment_folder(src, tmp_path / "out", mode="degrade", scale=4, seed=2)
    assert (result.images, result.written) == (5, 10)
    for rel in _tree(src):
        png = rel.rsplit(".", 1)[0] + ".png"
        hr = read_image(tmp_path / "out" / "hr" / png).pixels
        lr = read_image(tmp_path / "out" / "lr" / png).pixels
        original = read_image(src / rel).pixels
        np.testing.assert_array_equal(hr, original[: hr.shape[0], : hr.shape[1]])
        assert hr.shape[0] % 4 == hr.shape[1] % 4 == 0 and original.shape[0] - hr.shape[0] < 4
        assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, hr.shape[2])


def test_an_unreadable_image_is_named(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    (src / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="broken.png") as err:
        augment_folder(src, tmp_path / "out", copies=1)
    assert "\n" not in str(err.value)


def test_bad_folders_and_cancel(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    with pytest.raises(InputError, match="inside the input"):
        augment_folder(src, src / "augmented")
    write_image(Image(skimage.data.coffee()), src / "cat" / "chelsea.jpg")
    with pytest.raises(InputError, match="chelsea_aug0.png"):
        augment_folder(src, tmp_path / "out")
    (src / "cat" / "chelsea.jpg").unlink()
    with pytest.raises(Cancelled):
        augment_folder(src, tmp_path / "out", cancel=lambda: True)
    assert not (tmp_path / "out").exists()


def test_cli_augment_and_degrade(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["augment", str(src), "--out", str(tmp_path / "aug"), "--copies", "1",
                              "--preset", "detection", "--seed", "3", "--no-keep-originals"])
    assert args.handler(args) == 0
    assert sorted(_tree(tmp_path / "aug")) == sorted(r.rsplit(".", 1)[0] + "_aug0.png" for r in _tree(src))
    args = parser.parse_args(["degrade", str(src), "--out", str(tmp_path / "pairs"), "--scale", "2"])
    assert args.handler(args) == 0
    lr = read_image(tmp_path / "pairs" / "lr" / "gray" / "camera.png").pixels
    assert lr.shape == (128, 128, 1)
    args = parser.parse_args(["augment", str(src), "--out", str(tmp_path / "x"), "--preset", "segmentation"])
    with pytest.raises(InputError, match="segmentation"):
        args.handler(args)

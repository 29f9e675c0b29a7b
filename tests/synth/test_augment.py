"""Augmentation keeps labels on the pixels; Real-ESRGAN degradations; folders in and out, resumable;
COCO/YOLO sets in and out, read back with pycocotools."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from pycocotools.coco import COCO
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from torchvision.transforms import v2

from genai.errors import Cancelled, InputError
from genai.images import Image, read_image, write_image
from genai.synth.augment import FolderOptions, augment_dataset, augment_folder, augment_sample, outputs
from genai.synth.degrade import DegradationConfig, DegradationStage, blur_kernel, degrade, sinc_kernel
from genai.cli import Parser, add_common_arguments
from genai.commands.synth_augment import register
from genai.synth.formats import Annotation, Dataset, Sample, read_dataset, read_yolo, write_coco, write_yolo

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


def test_classification_flips_only_with_hflip(scene):
    """The horse's leftmost point (keypoint 0) ends up right of its rightmost one only when flipped
    (on a quarter-size scene, without its mask: this is about the transform, not the pixels)."""
    image, target = scene
    small = np.ascontiguousarray(image[::4, ::4])
    horse = {"boxes": target["boxes"][:1] / 4, "labels": target["labels"][:1], "keypoints": target["keypoints"][:1] / 4}

    def flips(hflip: bool | None) -> int:
        moved = [augment_sample(small, horse, preset="classification", hflip=hflip, seed=seed)[1]["keypoints"][0]
                 for seed in range(8)]
        return sum(int(k[0, 0] > k[1, 0]) for k in moved)

    assert flips(None) == 0  # off by default for classification
    assert 0 < flips(True) < 8


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


def test_an_unreadable_last_image_is_named_before_anything_is_written(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    broken = src / "zebra" / "zz.png"  # the last file in order
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match=f"^{broken}: ") as err:
        augment_folder(src, tmp_path / "out", copies=1)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "out").rglob("*.*"))


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
    parser = Parser()
    add_common_arguments(parser)
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
    args = parser.parse_args(["augment", str(src), "--out", str(tmp_path / "x"), "--to", "coco"])
    with pytest.raises(InputError, match="--to is for COCO/YOLO sets"):
        args.handler(args)

    one = tmp_path / "one" / "cat"  # --hflip reaches augment_folder
    one.mkdir(parents=True)
    (one / "chelsea.png").write_bytes((src / "cat" / "chelsea.png").read_bytes())
    args = parser.parse_args(["augment", str(one.parent), "--out", str(tmp_path / "flipped"), "--copies", "2",
                              "--hflip"])
    assert args.handler(args) == 0
    augment_folder(one.parent, tmp_path / "flips", copies=2, hflip=True)
    augment_folder(one.parent, tmp_path / "plain", copies=2)
    assert _tree(tmp_path / "flipped") == _tree(tmp_path / "flips") != _tree(tmp_path / "plain")


# ------------------------------------------------------------------------- COCO / YOLO sets

COIN, UNUSED, CUP, BOX = 3, 5, 7, 9
CATEGORIES = [{"id": COIN, "name": "coin"}, {"id": UNUSED, "name": "unused"}, {"id": CUP, "name": "cup"},
              {"id": BOX, "name": "box"}]


def write_coins_set(root: Path, *, keypoints: bool = False) -> Path:
    """A COCO folder of two real photos: coins() (gray PNG) with its single coins segmented by
    Otsu's threshold (with their centroids as keypoints), and coffee() (JPEG) with its bright
    cup and saucer, also by Otsu, and a box-only object."""
    coins = skimage.data.coins()
    binary = ndimage.binary_fill_holes(ndimage.binary_opening(coins > threshold_otsu(coins), iterations=2))
    regions = label(binary)
    coin_anns = []
    for r in regionprops(regions):
        if r.solidity > 0.95 and r.area > 500:
            a = Annotation.from_mask(COIN, regions == r.label)
            if keypoints:
                a.keypoints = [float(r.centroid[1]), float(r.centroid[0]), 2]
            coin_anns.append(a)
    coffee = cv2.resize(skimage.data.coffee(), None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(coffee, cv2.COLOR_RGB2GRAY)
    bright = label(ndimage.binary_opening(gray > threshold_otsu(gray), iterations=2))
    cup = bright == max(regionprops(bright), key=lambda r: r.area).label
    write_image(Image(coins[:, :, None]), root / "images" / "coins.png")
    write_image(Image(coffee), root / "images" / "coffee.jpg")
    samples = [Sample("coins.png", coins.shape[1], coins.shape[0], coin_anns),
               Sample("coffee.jpg", coffee.shape[1], coffee.shape[0],
                      [Annotation.from_mask(CUP, cup), Annotation(BOX, (20.0, 100.0, 40.0, 30.0))])]
    write_coco(Dataset(CATEGORIES, samples), root / "images", root / "annotations.json")
    return root


def _tight_xywh(mask: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = _tight_box(mask).tolist()
    return [x0, y0, x1 - x0, y1 - y0]


def test_augment_coco_set_keeps_masks_boxes_and_categories(tmp_path):
    src = write_coins_set(tmp_path / "coco")
    seen = []
    dataset, dropped = augment_dataset(src, tmp_path / "aug", copies=2, seed=5, progress=seen.append)
    assert (seen[-1].done, seen[-1].total) == (2, 2)
    coco = COCO(str(tmp_path / "aug" / "annotations.json"))
    originals = COCO(str(src / "annotations.json"))
    assert coco.loadCats(coco.getCatIds()) == CATEGORIES
    images = coco.loadImgs(coco.getImgIds())
    assert sorted(im["file_name"] for im in images) == sorted(
        ["coins.png", "coins_aug0.png", "coins_aug1.png", "coffee.jpg", "coffee_aug0.png", "coffee_aug1.png"])
    assert sorted(os.listdir(tmp_path / "aug" / "images")) == sorted(im["file_name"] for im in images)
    for name in ("coins.png", "coffee.jpg"):  # the originals, byte for byte
        assert (tmp_path / "aug" / "images" / name).read_bytes() == (src / "images" / name).read_bytes()

    n_original = {im["file_name"]: len(originals.getAnnIds(imgIds=im["id"])) for im in originals.loadImgs(
        originals.getImgIds())}
    moved = kept = 0
    for im in images:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
        stem = im["file_name"].split("_aug")[0].split(".")[0]
        original = n_original[f"{stem}.png" if stem == "coins" else f"{stem}.jpg"]
        assert len(anns) <= original
        pixels = read_image(tmp_path / "aug" / "images" / im["file_name"]).pixels.max(axis=2)
        assert pixels.shape == (im["height"], im["width"])
        for ann in anns:
            if ann["category_id"] == BOX:
                x, y, w, h = ann["bbox"]
                assert "segmentation" not in ann and w > 0 and h > 0
                assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
                continue
            assert ann["category_id"] == (COIN if stem == "coins" else CUP)
            mask = coco.annToMask(ann).astype(bool)
            np.testing.assert_allclose(ann["bbox"], _tight_xywh(mask), atol=1)
            # the objects are brighter than what is around them: the mask is still on them
            assert pixels[mask].mean() > pixels[~mask].mean() + 20, (im["file_name"], ann["id"])
        if "_aug" in im["file_name"]:
            kept += len(anns)
            moved += im["file_name"].startswith("coins") and any(
                a["bbox"] != o["bbox"] for a, o in zip(anns, originals.loadAnns(originals.getAnnIds(imgIds=[1]))))
    assert moved and kept + dropped == 2 * sum(n_original.values())
    assert len(dataset.samples) == 6

    again, _ = augment_dataset(src, tmp_path / "again", copies=2, seed=5)
    assert again == dataset
    for name in os.listdir(tmp_path / "aug" / "images"):
        assert (tmp_path / "again" / "images" / name).read_bytes() == (tmp_path / "aug" / "images" / name).read_bytes()


def test_augment_yolo_set_and_convert_on_the_way(tmp_path):
    src = write_yolo(read_dataset(write_coins_set(tmp_path / "coco")), tmp_path / "yolo", segments=True)
    parser = Parser()
    add_common_arguments(parser)
    register(parser.add_subparsers())
    args = parser.parse_args(["augment", str(src), "--out", str(tmp_path / "aug"), "--copies", "1", "--seed", "2"])
    assert args.handler(args) == 0
    back, source = read_yolo(tmp_path / "aug"), read_yolo(src)
    assert back.categories == source.categories == [{"id": i, "name": c["name"]} for i, c in enumerate(CATEGORIES)]
    assert sorted(s.file_name for s in back.samples) == ["coffee.jpg", "coffee_aug0.png", "coins.png",
                                                         "coins_aug0.png"]
    classes = {s.file_name: sorted(a.category_id for a in s.annotations) for s in back.samples}
    assert set(classes["coins_aug0.png"]) == {0} and len(classes["coins_aug0.png"]) > 10
    assert set(classes["coffee_aug0.png"]) <= {2, 3} and classes["coffee.jpg"] == [2, 3]
    for s in back.samples:
        for a in s.annotations:  # polygons in, polygons out: the box is the outline's
            np.testing.assert_allclose(a.bbox, _tight_xywh(a.mask), atol=1)

    args = parser.parse_args(["augment", str(src), "--out", str(tmp_path / "coco-aug"), "--copies", "1",
                              "--seed", "2", "--to", "coco"])
    assert args.handler(args) == 0
    coco = COCO(str(tmp_path / "coco-aug" / "annotations.json"))
    assert len(coco.getImgIds()) == 4 and sorted(coco.getCatIds()) == [0, 1, 2, 3]


def test_keypoints_follow_their_objects_and_flips_are_refused(tmp_path):
    src = write_coins_set(tmp_path / "coco", keypoints=True)
    with pytest.raises(InputError, match="keypoints.*--no-hflip"):
        augment_dataset(src, tmp_path / "aug", copies=2)
    augment_dataset(src, tmp_path / "aug", copies=2, hflip=False, seed=1)
    coco = COCO(str(tmp_path / "aug" / "annotations.json"))
    visible = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        if ann["category_id"] != COIN:
            continue
        x, y, v = ann["keypoints"]
        if v:
            visible += 1
            mask = coco.annToMask(ann)
            assert mask[round(y), round(x)], ann["id"]  # a round coin's centre is inside it
    assert visible > 30


def test_bad_set_is_named_and_nothing_is_written(tmp_path):
    src = write_coins_set(tmp_path / "coco")
    doc = json.loads((src / "annotations.json").read_text())
    doc["annotations"][-1]["bbox"] = [230.0, 100.0, 40.0, 30.0]  # the box-only object, past the 240 px edge
    (src / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=f"^{src / 'annotations.json'}: annotation .* lies outside"):
        augment_dataset(src, tmp_path / "aug")
    assert not (tmp_path / "aug").exists() and not [n for n in os.listdir(tmp_path) if ".part" in n]
    with pytest.raises(InputError, match="use `genai synth augment`|augmented with their labels"):
        augment_folder(src, tmp_path / "folder")

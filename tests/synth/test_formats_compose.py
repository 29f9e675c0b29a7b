"""COCO/YOLO formats and copy-paste compositing, on real photos from skimage.data.

Cut-outs are real pixels: coins from ``coins()`` segmented by Otsu's threshold, and the cat
of ``chelsea()`` inside an ellipse. pycocotools is the independent reader of our COCO files.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import yaml
from PIL import Image as PILImage
from pycocotools.coco import COCO
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from genai.errors import Cancelled, GenaiError, InputError
from genai.images import Image, write_image
from genai.cli import Parser, add_common_arguments
from genai.commands.synth_detection import register
from genai.synth.compose import Cutout, Placement, compose_dataset, iter_compose, load_cutouts, paste
from genai.synth.formats import (
    Annotation, Dataset, Sample, read_coco, read_dataset, read_yolo, write_coco, write_dataset, write_yolo,
)

COIN, UNUSED, CAT = 3, 5, 7
CATEGORIES = [{"id": COIN, "name": "coin"}, {"id": UNUSED, "name": "unused", "supercategory": "none"},
              {"id": CAT, "name": "cat"}]


def tight_box(mask: np.ndarray) -> list[float]:
    """The reference tight box, computed independently of genai's mask_bbox."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def no_part_folders(folder: Path) -> bool:
    return not [n for n in os.listdir(folder) if ".part" in n]


@pytest.fixture(scope="module")
def coins() -> list[tuple[np.ndarray, np.ndarray]]:
    """The four largest coins of skimage's coins photo: (RGB crop, bool mask). Touching coins
    make one region that is far from convex: those are left out."""
    gray = skimage.data.coins()
    binary = ndimage.binary_fill_holes(ndimage.binary_opening(gray > threshold_otsu(gray), iterations=2))
    labels = label(binary)
    single = [r for r in regionprops(labels) if r.solidity > 0.95]
    out = []
    for r in sorted(single, key=lambda r: r.area, reverse=True)[:4]:
        y0, x0, y1, x1 = r.bbox
        rgb = np.repeat(gray[y0:y1, x0:x1, None], 3, axis=2)
        out.append((np.ascontiguousarray(rgb), labels[y0:y1, x0:x1] == r.label))
    return out


@pytest.fixture(scope="module")
def cat() -> tuple[np.ndarray, np.ndarray]:
    """The cat of chelsea() (downscaled by 2) inside an ellipse."""
    rgb = cv2.resize(skimage.data.chelsea(), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (115, 75), (70, 60), 0, 0, 360, 1, -1)
    return rgb, mask.astype(bool)


@pytest.fixture(scope="module")
def backgrounds() -> list[np.ndarray]:
    photos = [skimage.data.coffee(), skimage.data.rocket(), skimage.data.astronaut()]
    return [cv2.resize(p, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA) for p in photos]


def composed(objects: list[Cutout], backgrounds: list[np.ndarray], n: int, **options
             ) -> tuple[list[np.ndarray], Dataset]:
    """``n`` composites in memory, as iter_compose yields them, with CATEGORIES."""
    images, samples = [], []
    for image, sample, _ in iter_compose(objects, backgrounds, n, **options):
        images.append(image)
        samples.append(sample)
    return images, Dataset(CATEGORIES, samples)


def cutout(rgb: np.ndarray, mask: np.ndarray, category_id: int) -> Cutout:
    return Cutout(rgb, mask.astype(np.float32), category_id)


@pytest.fixture(scope="module")
def objects(coins, cat) -> list[Cutout]:
    return [cutout(rgb, m, COIN) for rgb, m in coins] + [cutout(*cat, CAT)]


@pytest.fixture
def folders(tmp_path, coins, cat, backgrounds) -> tuple[Path, Path]:
    """On disk: coins as RGBA PNGs, the cat as JPEG + _mask.png, the backgrounds as JPEGs."""
    objs, bgs = tmp_path / "objects", tmp_path / "backgrounds"
    for i, (rgb, m) in enumerate(coins):
        rgba = np.dstack([rgb, np.where(m, 255, 0).astype(np.uint8)])
        write_image(Image(rgba), objs / "coin" / f"coin{i}.png")
    write_image(Image(cat[0]), objs / "cat" / "chelsea.jpg")
    write_image(Image(np.where(cat[1], 255, 0).astype(np.uint8)[:, :, None]), objs / "cat" / "chelsea_mask.png")
    for i, bg in enumerate(backgrounds):
        write_image(Image(bg), bgs / f"bg{i}.jpg")
    return objs, bgs


@pytest.fixture
def coco_set(tmp_path, objects, backgrounds) -> tuple[Dataset, Path, Path]:
    """A composed set with both categories, an unused category and a box-only annotation."""
    images, dataset = composed(objects, backgrounds, 4, objects_per_image=(2, 4), seed=1)
    dataset.samples[0].annotations.append(Annotation(COIN, (5.5, 6.0, 20.0, 10.0)))
    images_dir = tmp_path / "coco" / "images"
    for image, s in zip(images, dataset.samples):
        write_image(Image(image), images_dir / s.file_name)
    return dataset, images_dir, write_coco(dataset, images_dir, tmp_path / "coco" / "annotations.json")


def test_coco_is_read_by_pycocotools_exactly(coco_set, backgrounds):
    dataset, images_dir, path = coco_set
    used = {a.category_id for s in dataset.samples for a in s.annotations if a.mask is not None}
    assert used == {COIN, CAT}  # the check below covers both categories
    raw = json.loads(path.read_text())
    assert all(isinstance(a["segmentation"]["counts"], str) for a in raw["annotations"] if "segmentation" in a)
    assert [a["id"] for a in raw["annotations"]] == list(range(1, len(raw["annotations"]) + 1))

    coco = COCO(str(path))
    assert sorted(coco.getCatIds()) == [COIN, UNUSED, CAT]  # kept as given, the empty one too
    assert coco.loadCats(UNUSED)[0] == CATEGORIES[1]
    assert coco.getImgIds() == [1, 2, 3, 4]
    for image_id, sample in enumerate(dataset.samples, start=1):
        info = coco.loadImgs(image_id)[0]
        with PILImage.open(images_dir / info["file_name"]) as im:
            assert (info["width"], info["height"]) == im.size == (sample.width, sample.height)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(sample.annotations)
        for ann, ours in zip(anns, sample.annotations):
            assert ann["category_id"] == ours.category_id and ann["iscrowd"] == 0
            if ours.mask is None:
                assert ann["bbox"] == [5.5, 6.0, 20.0, 10.0] and ann["area"] == 200.0
                continue
            assert np.array_equal(coco.annToMask(ann).astype(bool), ours.mask)
            assert ann["bbox"] == tight_box(ours.mask)
            assert ann["area"] == ours.mask.sum() > 0

    assert read_coco(path, images_dir) == dataset


def test_coco_leaves_out_zero_area_and_keeps_corner_pixels(tmp_path, backgrounds):
    h, w = backgrounds[0].shape[:2]
    write_image(Image(backgrounds[0]), tmp_path / "images" / "a.jpg")
    corner = np.zeros((h, w), bool)
    corner[h - 1, w - 1] = True  # one pixel: its tight box ends at the image's border
    sample = Sample("a.jpg", w, h, [Annotation(COIN, (0.0, 0.0, 5.0, 5.0), np.zeros((h, w), bool)),
                                    Annotation(COIN, (w + 5.0, 0.0, 10.0, 10.0)),
                                    Annotation.from_mask(CAT, corner)])
    path = write_coco(Dataset(CATEGORIES, [sample]), tmp_path / "images", tmp_path / "a.json")
    anns = json.loads(path.read_text())["annotations"]
    assert [(a["id"], a["category_id"], a["bbox"], a["area"]) for a in anns] == [(1, CAT, [w - 1, h - 1, 1, 1], 1)]


def test_yolo_round_trip(tmp_path, coco_set):
    dataset, images_dir, path = coco_set
    on_disk = read_coco(path, images_dir)  # samples know their image files
    out = write_yolo(on_disk, tmp_path / "yolo")
    assert no_part_folders(tmp_path)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "coin", 1: "unused", 2: "cat"} and data["path"] == str(out.resolve())
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        Path(s.file_name).with_suffix(".txt").name for s in dataset.samples]

    back = read_yolo(out)
    index = {COIN: 0, UNUSED: 1, CAT: 2}
    for ours, theirs in zip(dataset.samples, back.samples):
        assert (theirs.file_name, theirs.width, theirs.height) == (ours.file_name, ours.width, ours.height)
        assert [index[a.category_id] for a in ours.annotations] == [a.category_id for a in theirs.annotations]
        for a, b in zip(ours.annotations, theirs.annotations):
            np.testing.assert_allclose(b.bbox, a.bbox, atol=1.0)

    # polygons: a mask in one piece comes back as nearly the same mask and the same box
    segmented = read_yolo(write_yolo(on_disk, tmp_path / "yolo-seg", segments=True))
    checked = 0
    for ours, theirs in zip(dataset.samples, segmented.samples):
        for a, b in zip(ours.annotations, theirs.annotations):
            if a.mask is not None and label(a.mask).max() == 1:
                iou = (a.mask & b.mask).sum() / (a.mask | b.mask).sum()
                assert iou > 0.9
                np.testing.assert_allclose(b.bbox, a.bbox, atol=1.0)
                checked += 1
    assert checked


def test_later_objects_hide_earlier_ones(coins, cat, backgrounds):
    bg = backgrounds[0]
    height, width = bg.shape[:2]
    (rgb_a, mask_a), (rgb_b, mask_b) = coins[0], coins[1]
    first, second = cutout(rgb_a, mask_a, COIN), cutout(rgb_b, mask_b, CAT)
    ha, wa = mask_a.shape
    hb, wb = mask_b.shape
    xb, yb = 20 + wa // 2, 35  # the second coin covers the right part of the first
    image, anns, dropped = paste(bg, [Placement(first, 20, 30), Placement(second, xb, yb),
                                      Placement(first, width - wa // 3, 5, flip=True)])
    expect_b = np.zeros((height, width), bool)
    expect_b[yb:yb + hb, xb:xb + wb] = mask_b
    expect_a = np.zeros((height, width), bool)
    expect_a[30:30 + ha, 20:20 + wa] = mask_a
    expect_a &= ~expect_b
    assert dropped == 0 and [a.category_id for a in anns] == [COIN, CAT, COIN]
    assert np.array_equal(anns[0].mask, expect_a) and np.array_equal(anns[1].mask, expect_b)
    assert list(anns[0].bbox) == tight_box(expect_a)
    assert anns[0].bbox[2] < tight_box(mask_a)[2]  # the visible box shrank
    assert np.array_equal(image[expect_b], rgb_b[mask_b])  # the top object's own pixels
    assert np.array_equal(image[~(anns[0].mask | anns[1].mask | anns[2].mask)],
                          bg[~(anns[0].mask | anns[1].mask | anns[2].mask)])
    # the third (flipped) coin sticks out on the right: clipped, its box ends at the border
    expect_c = np.zeros((height, width + wa), bool)
    expect_c[5:5 + ha, width - wa // 3:width - wa // 3 + wa] = mask_a[:, ::-1]
    assert np.array_equal(anns[2].mask, expect_c[:, :width])
    assert anns[2].bbox[0] + anns[2].bbox[2] == width

    # a small coin under the cat: fully hidden, dropped from the labels and counted
    big = cutout(*cat, CAT)
    image, anns, dropped = paste(bg, [Placement(first, 105, 65, scale=0.4), Placement(big, 0, 0)])
    assert dropped == 1 and [a.category_id for a in anns] == [CAT]


def test_compose_is_deterministic_and_blending_keeps_masks(objects, backgrounds):
    one, one_set = composed(objects, backgrounds, 3, seed=7, objects_per_image=(3, 5))
    again, again_set = composed(objects, backgrounds, 3, seed=7, objects_per_image=(3, 5))
    _, other_set = composed(objects, backgrounds, 3, seed=8, objects_per_image=(3, 5))
    blended, blended_set = composed(objects, backgrounds, 3, seed=7, objects_per_image=(3, 5), blend_sigma=2.0)
    assert all(np.array_equal(a, b) for a, b in zip(one, again)) and one_set == again_set
    assert one_set != other_set
    assert blended_set == one_set
    assert not all(np.array_equal(a, b) for a, b in zip(one, blended))
    for image, sample in zip(one, one_set.samples):
        assert (sample.height, sample.width) == image.shape[:2]
        masks = np.stack([a.mask for a in sample.annotations])
        assert masks.sum(axis=0).max() == 1  # every pixel belongs to at most one object
        assert all(list(a.bbox) == tight_box(a.mask) for a in sample.annotations)


COCO_DOC = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 10]}],
            "categories": [{"id": 3, "name": "coin"}]}


@pytest.mark.parametrize("change, reason", [
    (lambda d: d["annotations"][0].update(bbox=[60, 10, 20, 10]), "annotation 1 (image 1): box [60, 10, 20, 10] "
                                                                   "lies outside the 64x48 image"),
    (lambda d: d["annotations"][0].update(bbox=[10, 10, -2, 10]), "negative width or height"),
    (lambda d: d["annotations"][0].update(category_id=9), "annotation 1 (image 1): unknown category id 9"),
    (lambda d: d["images"][0].pop("file_name"), "image 1 has no file_name"),
    (lambda d: d["images"][0].update(file_name="../a.jpg"), "image 1: file_name '../a.jpg' must be a path inside"),
    (lambda d: d["images"][0].update(width=-64), "image 1: width -64 is not a positive integer"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation id 1"),
    (lambda d: d["categories"].append({"id": 3, "name": "again"}), "duplicate category id 3"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [48, 64], "counts": "not rle"}),
     "segmentation cannot be decoded"),
    (lambda d: d["annotations"][0].update(keypoints=[1, 2, float("nan")]), "keypoints are not"),
    (None, "not valid JSON"),
])
def test_bad_coco_is_one_line_naming_the_file(tmp_path, change, reason):
    doc = json.loads(json.dumps(COCO_DOC))
    path = tmp_path / "annotations.json"
    if change is None:
        path.write_text(json.dumps(doc)[:-5])
    else:
        change(doc)
        path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_coco(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message


def test_coco_box_within_a_pixel_is_clipped(tmp_path):
    doc = json.loads(json.dumps(COCO_DOC))
    doc["annotations"][0]["bbox"] = [-0.5, 0, 64.9, 48.5]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(doc))
    assert read_coco(path).samples[0].annotations[0].bbox == (0.0, 0.0, 64.0, 48.0)


def test_coco_size_must_match_the_image_file(tmp_path, backgrounds):
    write_image(Image(backgrounds[0]), tmp_path / "a.jpg")
    h, w = backgrounds[0].shape[:2]
    doc = json.loads(json.dumps(COCO_DOC))
    doc["images"][0].update(width=h, height=w)  # swapped
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=f"image 1 \\(a.jpg\\) is {h}x{w} here but the file is {w}x{h}"):
        read_coco(path, tmp_path)


@pytest.mark.parametrize("line, reason", [
    ("0 0.5 abc 0.1 0.1", "not numbers"),
    ("5 0.5 0.5 0.1 0.1", "class 5 is not in data.yaml's names (0-0)"),
    ("0 1.2 0.5 0.2 0.2", "lies outside [0, 1]"),
    ("0 0.5 0.5 0.2", "expected 4 (a box) or x y pairs (a polygon)"),
])
def test_bad_yolo_line_names_file_and_line(tmp_path, backgrounds, line, reason):
    h, w = backgrounds[0].shape[:2]
    write_image(Image(backgrounds[0]), tmp_path / "src" / "a.jpg")
    sample = Sample("a.jpg", w, h, [Annotation(0, (10.0, 10.0, 30.0, 20.0))], path=tmp_path / "src" / "a.jpg")
    out = write_yolo(Dataset([{"id": 0, "name": "thing"}], [sample]), tmp_path / "yolo")
    labels = out / "labels" / "a.txt"
    labels.write_text(labels.read_text() + line + "\n")
    with pytest.raises(InputError) as err:
        read_yolo(out)
    message = str(err.value)
    assert message.startswith(f"{labels}: line 2: ") and reason in message and "\n" not in message


def test_bad_cutouts_name_the_file(tmp_path, cat, coins):
    rgb, mask = coins[0]
    cases = {
        "no-mask.jpg": lambda p: write_image(Image(rgb), p),
        "transparent.png": lambda p: write_image(Image(np.dstack([rgb, np.zeros_like(rgb[:, :, 0])])), p),
        "broken.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n not really"),
    }
    reasons = {"no-mask.jpg": "no transparency and no no-mask_mask.png", "transparent.png": "the mask is empty",
               "broken.png": ""}
    for name, make in cases.items():
        folder = tmp_path / name / "coin"
        folder.mkdir(parents=True)
        make(folder / name)
        with pytest.raises(InputError) as err:
            load_cutouts(tmp_path / name)
        assert str(err.value).startswith(f"{folder / name}: ") and reasons[name] in str(err.value)

    folder = tmp_path / "empty-mask" / "cat"
    write_image(Image(cat[0]), folder / "chelsea.jpg")
    write_image(Image(np.zeros(cat[1].shape + (1,), np.uint8)), folder / "chelsea_mask.png")
    with pytest.raises(InputError, match="chelsea_mask.png: the mask is empty"):
        load_cutouts(tmp_path / "empty-mask")


def test_load_cutouts_reads_both_kinds(folders, coins, cat):
    cutouts, categories = load_cutouts(folders[0])
    assert categories == [{"id": 1, "name": "cat"}, {"id": 2, "name": "coin"}]
    assert [c.category_id for c in cutouts] == [1, 2, 2, 2, 2]
    assert np.array_equal(cutouts[1].alpha > 0.5, coins[0][1])  # RGBA alpha, cropped to the coin
    ys, xs = np.nonzero(cat[1])
    assert np.array_equal(cutouts[0].alpha > 0.5, cat[1][ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def parser() -> argparse.ArgumentParser:
    p = Parser()
    add_common_arguments(p)
    register(p.add_subparsers())
    return p


def test_cli_compose_and_convert(tmp_path, folders):
    objs, bgs = folders
    out = tmp_path / "set"
    argv = ["compose", "--objects", str(objs), "--backgrounds", str(bgs), "-n", "3", "--format", "coco",
            "--seed", "2", "--objects-per-image", "2:3", "--scale", "0.5:1", "--out", str(out)]
    args = parser().parse_args(argv)
    assert args.handler(args) == 0
    assert no_part_folders(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "images"]
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getImgIds()) == 3 and len(list((out / "images").iterdir())) == 3
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"cat", "coin"}

    args = parser().parse_args(argv)
    with pytest.raises(GenaiError, match="not empty"):
        args.handler(args)  # refuses to replace a finished set
    args = parser().parse_args([*argv[:-2], "--format", "yolo", "--overwrite", "--out", str(out)])
    assert args.handler(args) == 0 and (out / "data.yaml").is_file() and not (out / "annotations.json").exists()
    assert no_part_folders(tmp_path)

    args = parser().parse_args(["convert", str(out), "--to", "coco", "--out", str(tmp_path / "back")])
    assert args.handler(args) == 0
    assert len(COCO(str(tmp_path / "back" / "annotations.json")).getImgIds()) == 3

    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"id": 1}], "annotations": [], "categories": []}')
    args = parser().parse_args(["convert", str(bad), "--to", "yolo", "--out", str(tmp_path / "never")])
    with pytest.raises(InputError, match=f"^{bad}: image 1 has no file_name$"):
        args.handler(args)
    assert not (tmp_path / "never").exists()


def test_cancelled_compose_leaves_nothing(tmp_path, folders):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        compose_dataset(*folders, tmp_path / "set", 5, fmt="yolo", cancel=cancel)
    assert not (tmp_path / "set").exists() and no_part_folders(tmp_path)


def test_same_stems_to_yolo_name_both_files(tmp_path, backgrounds):
    """``a.jpg`` and ``a.png`` would share labels/a.txt: one line naming both, and no folder."""
    h, w = backgrounds[0].shape[:2]
    for name in ("a.jpg", "a.png"):
        write_image(Image(backgrounds[0]), tmp_path / "coco" / "images" / name)
    samples = [Sample(name, w, h, [Annotation(COIN, (1.0, 2.0, 30.0, 20.0))]) for name in ("a.jpg", "a.png")]
    write_coco(Dataset(CATEGORIES, samples), tmp_path / "coco" / "images", tmp_path / "coco" / "annotations.json")
    args = parser().parse_args(["convert", str(tmp_path / "coco"), "--to", "yolo", "--out", str(tmp_path / "yolo")])
    with pytest.raises(InputError) as err:
        args.handler(args)
    images, message = tmp_path / "coco" / "images", str(err.value)
    assert message.startswith(f"{images / 'a.jpg'} and {images / 'a.png'}: ") and "labels/a.txt" in message
    assert not (tmp_path / "yolo").exists() and no_part_folders(tmp_path)
    write_dataset(read_dataset(tmp_path / "coco"), tmp_path / "fine", "coco")  # COCO has no such limit


def test_pillow_bomb_check_and_bad_yaml_names_are_input_errors(tmp_path, backgrounds, monkeypatch):
    """Pillow's DecompressionBombError is not an OSError; names keyed by strings and ints do not sort."""
    h, w = backgrounds[0].shape[:2]
    write_image(Image(backgrounds[0]), tmp_path / "images" / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}], "annotations": [],
           "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # as if another library had set a limit
    with pytest.raises(InputError, match=f"^{tmp_path / 'images' / 'a.png'}: cannot be read .*decompression bomb"):
        read_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("names: {0: thing, x: other}\n")
    with pytest.raises(InputError, match="'names' must be a list"):
        read_yolo(tmp_path)

"""The dataset builders (imagefolder, canvas, coco, ade20k), their checkers and `droppos data`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from droppos.cli import main as droppos_main
from droppos.tools.data.ade20k import build_ade20k, validate_ade20k
from droppos.tools.data.canvas import CanvasConfig, canvas_rng, fill_holes, iter_canvases, make_canvas
from droppos.tools.data.coco import build_coco, coco_paths, validate_coco
from droppos.tools.data.idx import CLASSES, DEFAULT_SOURCE, DataError, write_idx
from droppos.tools.data.imagefolder import build_imagefolder

HAVE_FMNIST = (DEFAULT_SOURCE / "train-images-idx3-ubyte.gz").is_file()
SMALL = CanvasConfig(size=64, min_items=2, max_items=4)


def fake_items(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 grey blobs (ellipses with a textured fill) and labels cycling over 0..9."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(10, 18, 2)
        ry, rx = rng.uniform(5, 13, 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        images[i][inside] = rng.integers(60, 256, int(inside.sum()))
    return images, (np.arange(n) % 10).astype(np.uint8)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tiny Fashion-MNIST look-alike in IDX files: 80 train, 40 t10k items."""
    root = tmp_path_factory.mktemp("fmnist")
    for prefix, n, seed in (("train", 80, 0), ("t10k", 40, 1)):
        images, labels = fake_items(n, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_layout_and_counts(tmp_path, source):
    manifest = build_imagefolder(tmp_path / "ds", source, size=32, train_per_class=3, val_per_class=2, seed=0, show_progress=False)
    assert manifest["kind"] == "imagefolder" and manifest["counts"] == {"train": 30, "val": 20}
    assert manifest["classes"] == list(CLASSES)
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (tmp_path / "ds" / split).iterdir()) == sorted(CLASSES)
        for c in CLASSES:
            files = sorted((tmp_path / "ds" / split / c).glob("*.png"))
            assert len(files) == n
            im = Image.open(files[0])
            assert im.mode == "RGB" and im.size == (32, 32)
    # file names are source indices, and the label of index i is i % 10 in the fake source
    for p in (tmp_path / "ds" / "train").rglob("*.png"):
        assert CLASSES[int(p.stem) % 10] == p.parent.name
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text()) == manifest


def test_imagefolder_is_deterministic(tmp_path, source):
    kw = dict(size=32, train_per_class=4, val_per_class=2, show_progress=False)
    build_imagefolder(tmp_path / "a", source, seed=3, **kw)
    build_imagefolder(tmp_path / "b", source, seed=3, **kw)
    build_imagefolder(tmp_path / "c", source, seed=4, **kw)
    a, b, c = (tree_digest(tmp_path / n) for n in "abc")
    assert a == b  # same seed: byte-identical files
    assert set(a) != set(c)  # another seed draws other items


def test_imagefolder_pad_mode_and_all_items(tmp_path, source):
    build_imagefolder(tmp_path / "ds", source, size=36, mode="pad", seed=0, show_progress=False)
    files = list((tmp_path / "ds" / "train").rglob("*.png"))
    assert len(files) == 80
    arr = np.asarray(Image.open(files[0]))
    assert arr.shape == (36, 36, 3) and arr[:4].max() == 0 and arr[-4:].max() == 0  # black border
    with pytest.raises(ValueError, match="smaller than the 28 px"):
        build_imagefolder(tmp_path / "x", source, size=16, mode="pad", show_progress=False)


def test_output_folder_rules(tmp_path, source, capsys):
    out = tmp_path / "ds"
    kw = dict(size=16, train_per_class=1, val_per_class=1, show_progress=False)
    build_imagefolder(out, source, **kw)
    before = tree_digest(out)
    build_imagefolder(out, source, **kw)  # same request: left alone
    assert "nothing to do" in capsys.readouterr().out and tree_digest(out) == before
    with pytest.raises(DataError, match=r"ds: holds a imagefolder dataset built with other settings; pass --overwrite"):
        build_imagefolder(out, source, seed=1, **kw)
    build_imagefolder(out, source, seed=1, overwrite=True, **kw)
    assert json.loads((out / "dataset.json").read_text())["seed"] == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"mine: folder is not empty and was not made by `droppos data`"):
        build_imagefolder(foreign, source, overwrite=True, **kw)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*partial*"))  # no staging folder left behind


# ---------------------------------------------------------------- canvas


def test_canvas_invariants(source):
    from droppos.tools.data.idx import load_fashion_mnist

    images, labels = load_fashion_mnist(source, "train")
    for i, scene in enumerate(iter_canvases(images, labels, 20, seed=0, split="train", cfg=SMALL)):
        k = len(scene.classes)
        assert 1 <= k <= SMALL.max_items and scene.masks.shape == (k, 64, 64)
        assert scene.masks.sum(0).max() <= 1  # visible masks are disjoint
        np.testing.assert_array_equal(scene.masks.any(0), scene.image.any(-1))  # and cover every lit pixel
        for mask in scene.masks:
            assert mask.sum() >= SMALL.min_pixels
            np.testing.assert_array_equal(fill_holes(mask), mask)  # hole-free
        np.testing.assert_array_equal(scene.classes, labels[scene.sources])
        label = scene.label_map()
        assert label.max() <= len(CLASSES) and set(np.unique(label)) <= {0, *(scene.classes + 1)}


def test_canvas_is_deterministic_per_index(source):
    from droppos.tools.data.idx import load_fashion_mnist

    images, labels = load_fashion_mnist(source, "train")
    a = make_canvas(images, labels, canvas_rng(7, "train", 5), SMALL)
    b = list(iter_canvases(images, labels, 6, seed=7, split="train", cfg=SMALL))[5]
    c = make_canvas(images, labels, canvas_rng(7, "val", 5), SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, c.image)


def test_canvas_config_validation():
    with pytest.raises(ValueError, match="min_items <= max_items"):
        CanvasConfig(min_items=4, max_items=2).validate()
    with pytest.raises(ValueError, match="too small"):
        CanvasConfig(size=16).validate()


# ---------------------------------------------------------------- coco


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("coco") / "coco"
    build_coco(out, source, train_images=12, val_images=5, seed=0, canvas=SMALL, show_progress=False)
    return out


def test_coco_layout_and_fields(coco_root):
    for split, n in (("train", 12), ("val", 5)):
        json_path, image_dir = coco_paths(coco_root, split)
        data = json.loads(json_path.read_text())
        assert [c["id"] for c in data["categories"]] == list(range(1, 11))
        assert [c["name"] for c in data["categories"]] == list(CLASSES)
        assert len(data["images"]) == n and len(list(image_dir.glob("*.png"))) == n
        for img in data["images"]:
            assert Image.open(image_dir / img["file_name"]).size == (img["width"], img["height"]) == (64, 64)
        for ann in data["annotations"]:
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 10
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
            x, y, w, h = ann["bbox"]
            assert w > 1 and h > 1 and 0 <= x and x + w <= 64 and 0 <= y and y + h <= 64
        rep = validate_coco(json_path, image_dir)
        assert rep.errors == [] and rep.usable_annotations == len(data["annotations"]) > n


def test_coco_polygons_are_valid_for_shapely(coco_root):
    geometry = pytest.importorskip("shapely.geometry")
    for split in ("train", "val"):
        data = json.loads(coco_paths(coco_root, split)[0].read_text())
        for ann in data["annotations"]:
            for poly in ann["segmentation"]:
                assert geometry.Polygon(np.asarray(poly).reshape(-1, 2)).is_valid


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own numpy-2 notice
def test_coco_loads_in_pycocotools_and_masks_match_the_scene(coco_root, source):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    from droppos.tools.data.idx import load_fashion_mnist

    json_path, image_dir = coco_paths(coco_root, "train")
    coco = COCO(str(json_path))
    images, labels = load_fashion_mnist(source, "train")
    scenes = list(iter_canvases(images, labels, 12, seed=0, split="train", cfg=SMALL))
    for img_id, scene in zip(sorted(coco.getImgIds()), scenes):
        np.testing.assert_array_equal(np.asarray(Image.open(image_dir / coco.imgs[img_id]["file_name"])), scene.image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert [a["category_id"] - 1 for a in anns] == scene.classes.tolist()
        for ann, mask in zip(anns, scene.masks):
            got = coco.annToMask(ann).astype(bool)
            iou = (got & mask).sum() / (got | mask).sum()
            assert iou == 1.0  # polygons are exact
            assert ann["area"] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_coco_is_deterministic(tmp_path, source, coco_root):
    build_coco(tmp_path / "again", source, train_images=12, val_images=5, seed=0, canvas=SMALL, show_progress=False)
    assert tree_digest(tmp_path / "again") == tree_digest(coco_root)


def test_validate_coco_reports_bad_input(tmp_path, coco_root):
    json_path, image_dir = coco_paths(coco_root, "val")
    data = json.loads(json_path.read_text())
    anns = data["annotations"]
    anns[0]["iscrowd"] = 1
    anns[1]["bbox"][2] = 1.0  # 1 px wide: degenerate
    anns[2]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # two points: no polygon
    img_ids = {a["image_id"] for a in anns}
    data["images"].append({"id": 999, "file_name": data["images"][0]["file_name"], "height": 64, "width": 64})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    rep = validate_coco(bad, image_dir)
    assert (rep.crowd, rep.degenerate_boxes, rep.invalid_segmentations) == (1, 1, 1)
    assert rep.images_without_annotations == 1 + sum(1 for i in data["images"][:-1] if i["id"] not in img_ids)
    assert rep.usable_annotations == len(anns) - 3 and rep.errors == []
    assert "1 degenerate boxes, 1 invalid polygons, 1 crowd regions" in rep.summary()

    # a missing image file is an error naming it
    missing = tmp_path / "images"
    shutil.copytree(image_dir, missing)
    (missing / data["images"][1]["file_name"]).unlink()
    with pytest.raises(DataError, match=rf"{data['images'][1]['file_name']}: image listed in bad.json is missing"):
        validate_coco(bad, missing)
    assert validate_coco(bad, missing, raise_on_error=False).missing_images == [data["images"][1]["file_name"]]

    # no annotations at all, unknown references, not JSON
    data["annotations"] = []
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad.json: no annotations at all"):
        validate_coco(bad, image_dir)
    data["annotations"] = [dict(anns[3], image_id=12345)]
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad.json: annotation \d+ refers to unknown image id 12345"):
        validate_coco(bad, image_dir)
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad.json: not a readable JSON file"):
        validate_coco(bad, image_dir)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"bad.json: not a COCO instances file \(missing list\(s\) annotations, categories\)"):
        validate_coco(bad, image_dir)


# ---------------------------------------------------------------- ade20k


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("ade") / "ade20k"
    build_ade20k(out, source, train_images=12, val_images=5, seed=0, canvas=SMALL, show_progress=False)
    return out


def test_ade20k_layout_labels_and_agreement_with_coco(ade_root, coco_root):
    for folder, prefix, n in (("training", "ADE_train", 12), ("validation", "ADE_val", 5)):
        imgs = sorted((ade_root / "images" / folder).glob("*.jpg"))
        lbls = sorted((ade_root / "annotations" / folder).glob("*.png"))
        assert len(imgs) == len(lbls) == n and imgs[0].name == f"{prefix}_00000001.jpg"
        for p in lbls:
            lb = Image.open(p)
            assert lb.mode == "L" and lb.size == (64, 64)
            assert np.asarray(lb).max() <= len(CLASSES)
    # same seed: the label map is the COCO masks painted with category ids (1..10)
    json_path, _ = coco_paths(coco_root, "train")
    data = json.loads(json_path.read_text())
    from droppos.tools.data.polygons import rasterize_polygons

    for img in data["images"]:
        painted = np.zeros((64, 64), np.uint8)
        for ann in (a for a in data["annotations"] if a["image_id"] == img["id"]):
            painted[rasterize_polygons(ann["segmentation"], 64, 64)] = ann["category_id"]
        label = np.asarray(Image.open(ade_root / "annotations" / "training" / f"ADE_train_{img['id']:08d}.png"))
        np.testing.assert_array_equal(label, painted)
    rep = validate_ade20k(ade_root)
    assert rep.errors == [] and rep.images == {"training": 12, "validation": 5}


def test_validate_ade20k_errors_name_the_file(tmp_path, ade_root):
    root = tmp_path / "ade"
    shutil.copytree(ade_root, root)
    lbl_dir = root / "annotations" / "training"
    Image.fromarray(np.full((64, 64), 11, np.uint8)).save(lbl_dir / "ADE_train_00000001.png")
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(lbl_dir / "ADE_train_00000002.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(lbl_dir / "ADE_train_00000003.png")
    (lbl_dir / "ADE_train_00000004.png").unlink()
    rep = validate_ade20k(root, raise_on_error=False)
    errors = "\n".join(rep.errors)
    assert "ADE_train_00000001.png: label values [11] outside 0..10" in errors
    assert "ADE_train_00000002.png: label size (64, 32) differs from image ADE_train_00000002.jpg size (64, 64)" in errors
    assert "ADE_train_00000003.png: label must be a single-channel 8-bit PNG, got mode RGB" in errors
    assert "ADE_train_00000004.jpg: no label" in errors
    assert len(rep.errors) == 4
    with pytest.raises(DataError, match=r"ADE_train_00000001.png: label values \[11\].*\(\+3 more errors\)"):
        validate_ade20k(root)
    assert validate_ade20k(root, num_classes=11, raise_on_error=False).errors[0].endswith("size (64, 64)")
    shutil.rmtree(root / "annotations" / "validation")
    with pytest.raises(DataError, match=r"annotations/validation: split folder missing"):
        validate_ade20k(root, splits=("validation",))


# ---------------------------------------------------------------- droppos data


def test_cli_all_and_bad_source(tmp_path, source, capsys):
    argv = ["data", "all", "--out", str(tmp_path / "d"), "--source", str(source), "--no-progress",
            "--size", "16", "--train-per-class", "2", "--val-per-class", "1",
            "--canvas", "64", "--train-images", "4", "--val-images", "2"]  # fmt: skip
    assert droppos_main(argv) == 0
    out = capsys.readouterr().out
    assert "imagefolder:" in out and "coco:" in out and "ade20k:" in out
    assert json.loads((tmp_path / "d" / "fmnist" / "dataset.json").read_text())["counts"] == {"train": 20, "val": 10}
    assert (tmp_path / "d" / "coco" / "annotations" / "instances_val2017.json").is_file()
    assert len(list((tmp_path / "d" / "ade20k" / "images" / "validation").iterdir())) == 2
    assert droppos_main(["data", "coco", "--out", str(tmp_path / "e"), "--source", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none: Fashion-MNIST folder not found" in err and "apt-get install dataset-fashion-mnist" in err


@pytest.mark.skipif(not HAVE_FMNIST, reason=f"Fashion-MNIST not installed in {DEFAULT_SOURCE}")
def test_real_fashion_mnist_canvas_invariants():
    from droppos.tools.data.idx import load_fashion_mnist

    images, labels = load_fashion_mnist(DEFAULT_SOURCE, "t10k")
    for scene in iter_canvases(images, labels, 30, seed=0, split="val", cfg=CanvasConfig()):
        assert scene.masks.sum(0).max() <= 1
        np.testing.assert_array_equal(scene.masks.any(0), scene.image.any(-1))
        for mask in scene.masks:
            np.testing.assert_array_equal(fill_holes(mask), mask)


@pytest.mark.skipif(not HAVE_FMNIST, reason=f"Fashion-MNIST not installed in {DEFAULT_SOURCE}")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_real_fashion_mnist_scenes(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    out = tmp_path / "coco"
    build_coco(out, DEFAULT_SOURCE, train_images=3, val_images=3, seed=0, show_progress=False)
    json_path, image_dir = coco_paths(out, "val")
    assert validate_coco(json_path, image_dir).errors == []
    coco = COCO(str(json_path))
    assert len(coco.getAnnIds()) >= 3
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert coco.annToMask(ann).sum() == ann["area"] > 0
        assert len(ann["segmentation"]) >= 1 and all(len(p) >= 6 for p in ann["segmentation"])

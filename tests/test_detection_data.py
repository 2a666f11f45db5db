"""Datasets of the detection runs: checks before training and detectron2 registration."""

from __future__ import annotations

import json
import shutil

import pytest
from detection_helpers import build_tiny_coco

pytest.importorskip("detectron2.data", reason="detectron2 is not installed")
pytestmark = pytest.mark.detectron2


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return build_tiny_coco(tmp_path_factory.mktemp("data") / "coco", train=3, val=2)


@pytest.fixture
def copy(coco, tmp_path):
    """A private copy of the tiny dataset that a test may damage."""
    return shutil.copytree(coco, tmp_path / "coco")


def edit_json(root, split, fn):
    path = root / "annotations" / f"instances_{split}2017.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_the_embedded_dataset_passes(coco):
    from droppos.transfer.detection.datasets import check_datasets

    lines = check_datasets("fmnist_coco", coco, num_classes=10)
    assert len(lines) == 2 and "3 images" in lines[0] and "0 errors" in lines[1]


def test_missing_folder_and_missing_image_are_errors(copy, tmp_path):
    from droppos.transfer.detection.datasets import DatasetError, check_datasets

    with pytest.raises(DatasetError, match="dataset folder not found.*droppos data coco"):
        check_datasets("fmnist_coco", tmp_path / "nowhere")
    (copy / "val2017" / "000000000002.png").unlink()
    with pytest.raises(DatasetError, match="000000000002.png: image listed in instances_val2017.json is missing"):
        check_datasets("fmnist_coco", copy)


def test_no_annotations_is_an_error(copy):
    from droppos.transfer.detection.datasets import DatasetError, check_datasets

    edit_json(copy, "train", lambda d: d.update(annotations=[]))
    with pytest.raises(DatasetError, match="instances_train2017.json: no annotations"):
        check_datasets("fmnist_coco", copy)


def test_only_unusable_annotations_is_an_error(copy):
    from droppos.transfer.detection.datasets import DatasetError, check_datasets

    def crowd_everything(d):
        for a in d["annotations"]:
            a["iscrowd"] = 1

    edit_json(copy, "val", crowd_everything)
    with pytest.raises(DatasetError, match="instances_val2017.json: no usable annotation"):
        check_datasets("fmnist_coco", copy)


def test_degenerate_boxes_and_crowd_are_counted_skips(copy):
    from droppos.transfer.detection.datasets import check_datasets

    def damage(d):
        d["annotations"][0]["bbox"][2] = 0.5
        d["annotations"][1]["iscrowd"] = 1

    edit_json(copy, "train", damage)
    line = check_datasets("fmnist_coco", copy)[0]
    assert "1 degenerate boxes" in line and "1 crowd regions" in line and "0 errors" in line


def test_class_count_must_match_the_config(coco):
    from droppos.transfer.detection.datasets import DatasetError, check_datasets

    with pytest.raises(DatasetError, match="10 categories but the config has model.roi_heads.num_classes=80"):
        check_datasets("fmnist_coco", coco, num_classes=80)


def test_registration_replaces_detectron2s_builtin_coco(coco):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from droppos.transfer.detection.datasets import register_datasets

    assert "coco_2017_train" in DatasetCatalog.list()  # detectron2's own, under $DETECTRON2_DATASETS
    assert register_datasets("coco_2017", coco) == ["coco_2017_train", "coco_2017_val"]
    assert MetadataCatalog.get("coco_2017_val").json_file == str(coco / "annotations" / "instances_val2017.json")
    dicts = DatasetCatalog.get("coco_2017_train")
    assert len(dicts) == 3 and all(r["annotations"] for r in dicts)
    assert MetadataCatalog.get("coco_2017_train").thing_classes[0] == "t-shirt_top"


def test_root_defaults_to_detectron2_datasets(tmp_path):
    from droppos.transfer.detection.datasets import dataset_id, resolve_root

    assert resolve_root("", {"DETECTRON2_DATASETS": str(tmp_path)}) == tmp_path / "coco"
    assert str(resolve_root("", {})) == "datasets/coco"
    assert resolve_root(tmp_path / "x") == tmp_path / "x"
    assert dataset_id("coco_2017") == "coco" and dataset_id("fmnist_coco") == "fmnist"

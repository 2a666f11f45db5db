"""Released layouts through the real engines: k-NN, a detection and a segmentation iteration each.

DINO (full checkpoint), MoCo v3 (12-head ViT-S), DINOv2 (layer scale folded) and Hugging Face
files, built from random weights, go through ``droppos classify knn``, ``droppos detect`` (detectron2
ViTDet) and ``droppos segment`` (mmseg UperNet) with the same backbone flags, and each run records
the backbone's name and a clean load report.
"""

from __future__ import annotations

import json

import pytest
from detection_helpers import FMNIST, TINY, build_tiny_coco
from imagefolders import make_colour_imagefolder
from layout_files import write_dino_full, write_dinov2_timm, write_hf, write_mocov3
from segmentation_helpers import build_tiny_dataset, tiny_run_options

from droppos.cli import main

pytest.importorskip("detectron2.modeling.backbone.vit")
pytest.importorskip("mmseg")
pytestmark = [pytest.mark.slow, pytest.mark.detectron2, pytest.mark.mmseg]

DEPTH = 4
# (writer, file name, width, heads)
LAYOUTS = {
    "dino": (write_dino_full, "checkpoint.pth", 384, 6),
    "mocov3": (write_mocov3, "vit-s-300ep.pth.tar", 384, 12),
    "dinov2": (write_dinov2_timm, "model.safetensors", 384, 6),
    "hf": (write_hf, "hf_vit.safetensors", 192, 3),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return {"imgs": make_colour_imagefolder(root / "imgs"), "coco": build_tiny_coco(root / "coco"),
            "ade": build_tiny_dataset(root / "ade")}


def _detect_overrides(width: int, heads: int) -> list[str]:
    keep = [o for o in TINY if not o.startswith(("model.backbone.net.embed_dim", "model.backbone.net.depth",
                                                  "model.backbone.net.num_heads", "model.backbone.net.window_block"))]
    return keep + [f"model.backbone.net.embed_dim={width}", f"model.backbone.net.depth={DEPTH}",
                   f"model.backbone.net.num_heads={heads}", "model.backbone.net.window_block_indexes.global_blocks=[3]",
                   "dataloader.train.total_batch_size=2", "train.max_iter=1", "train.checkpointer.period=1"]


def _segment_overrides(width: int, heads: int) -> list[str]:
    return tiny_run_options(1, **{"model.backbone.embed_dims": width, "model.backbone.num_layers": DEPTH,
                                  "model.backbone.num_heads": heads, "model.backbone.patch_size": 8,
                                  "model.neck.rescales": [2, 1, 0.5, 0.25], "model.neck.embed_dim": width,
                                  "model.decode_head.in_channels": [width] * 4,
                                  "model.auxiliary_head.in_channels": width})


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_runs_knn_detection_and_segmentation(tmp_path, data, layout):
    writer, name, width, heads = LAYOUTS[layout]
    src = tmp_path / name
    writer(src, depth=DEPTH)
    bb = ["--backbone", str(src), "--name", layout]

    assert main(["classify", "knn", *bb, "--data", str(data["imgs"]), "--output", str(tmp_path / "knn"), "--k", "3",
                 "--batch-size", "16", "--workers", "0"]) == 0
    assert main(["detect", "--config-file", FMNIST, *bb, "--output", str(tmp_path / "det"), "--data", str(data["coco"]),
                 *_detect_overrides(width, heads)]) == 0
    assert main(["segment", "--config", "upernet_vit_fmnist", *bb, "--output", str(tmp_path / "seg"),
                 "--data", str(data["ade"]), "--cfg-options", *_segment_overrides(width, heads)]) == 0
    for run in ("knn", "det", "seg"):
        record = json.loads((tmp_path / run / "metrics.json").read_text())
        assert record["backbone"]["id"] == layout and record["backbone"]["sha256"]
        if run != "knn":
            assert record["load_report"]["ok"] and not record["load_report"]["missing"]

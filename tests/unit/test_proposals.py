"""Proposal backends behind the registry: superpixel (weight-free) and gt (pycocotools)."""
import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from ovseg.proposals import PROPOSAL_REGISTRY, ImageContext, Proposals, build_proposals, register_proposals


def test_registry_has_the_cpu_backends_and_accepts_new_ones():
    assert {"gt", "superpixel"} <= set(PROPOSAL_REGISTRY)

    class Whole:
        name = "whole"

        def __call__(self, image, context):
            return Proposals(torch.ones(1, *image.shape[:2], dtype=torch.bool), torch.ones(1))

    register_proposals("whole", Whole)
    try:
        props = build_proposals("whole")(np.zeros((4, 5, 3), np.uint8), ImageContext())
        assert props.masks.shape == (1, 4, 5)
    finally:
        PROPOSAL_REGISTRY.pop("whole")
    with pytest.raises(KeyError, match="unknown proposal backend"):
        build_proposals("nope")


def test_superpixels_separate_two_flat_regions():
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, 40:] = (250, 10, 10)  # left black, right red
    props = build_proposals("superpixel", scales=[100.0], sigma=0.0)(image, ImageContext())
    assert len(props) == 2
    halves = {tuple(m.any(0).nonzero().flatten()[[0, -1]].tolist()) for m in props.masks}
    assert halves == {(0, 39), (40, 79)}


def test_superpixels_on_a_real_photo_are_full_resolution_and_deduplicated():
    image = skimage.data.coffee()
    gen = build_proposals("superpixel", max_proposals=20)
    props = gen(image, ImageContext())
    assert 5 <= len(props) <= 20
    assert props.masks.shape[1:] == image.shape[:2] and props.masks.dtype == torch.bool
    area = props.masks.flatten(1).float().mean(1)
    assert bool((area >= 0.01).all()) and bool((area <= 0.95).all())
    flat = props.masks.flatten(1).float()
    inter = flat @ flat.T
    iou = inter / (flat.sum(1)[:, None] + flat.sum(1)[None] - inter)
    assert float((iou - torch.eye(len(props))).max()) <= 0.9 + 1e-6


def test_uniform_image_has_no_proposals():
    props = build_proposals("superpixel")(np.full((50, 50, 3), 7, np.uint8), ImageContext())
    assert len(props) == 0 and props.masks.shape == (0, 50, 50)


def _instances() -> dict:
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((2, 3), np.uint8), ((1, 3), (2, 3)))))
    rle["counts"] = rle["counts"].decode()
    return {
        "images": [{"id": 7, "file_name": "a.jpg", "height": 6, "width": 8}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentation": [[0, 0, 4, 0, 4, 2, 0, 2]]},  # polygon
            {"id": 2, "image_id": 7, "category_id": 2, "iscrowd": 0, "segmentation": rle},
            {"id": 3, "image_id": 7, "category_id": 2, "iscrowd": 1, "segmentation": rle},
        ],
    }


def test_gt_instances_decode_polygons_and_rle_and_skip_crowd():
    gen = build_proposals("gt", instances=_instances())
    props = gen(np.zeros((6, 8, 3), np.uint8), ImageContext(key="a", image_id=7))
    assert len(props) == 2
    rle_mask = props.masks[1]
    assert rle_mask.sum() == 6 and rle_mask[1:3, 2:5].all()
    assert props.masks[0][0, 0] and not props.masks[0][5, 7]
    by_name = gen(np.zeros((6, 8, 3), np.uint8), ImageContext(key="a", file_name="dir/a.jpg"))
    assert torch.equal(by_name.masks, props.masks)
    assert len(gen(np.zeros((6, 8, 3), np.uint8), ImageContext(key="b", image_id=99))) == 0


def test_gt_masks_follow_a_resized_image():
    props = build_proposals("gt", instances=_instances())(np.zeros((12, 16, 3), np.uint8), ImageContext(image_id=7))
    assert props.masks.shape == (2, 12, 16) and props.masks[1].sum() == 24


def test_gt_panoptic_png(tmp_path):
    ids = np.zeros((4, 4), np.int64)
    ids[:2] = 300  # R = 300 % 256 = 44, G = 1
    ids[2:] = 5
    png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(png).save(tmp_path / "p.png")
    panoptic = {"images": [{"id": 1, "file_name": "p.jpg", "height": 4, "width": 4}],
                "annotations": [{"image_id": 1, "file_name": "p.png",
                                 "segments_info": [{"id": 300, "category_id": 1}, {"id": 5, "category_id": 2}]}]}
    props = build_proposals("gt", panoptic=json.loads(json.dumps(panoptic)), panoptic_root=str(tmp_path))(
        np.zeros((4, 4, 3), np.uint8), ImageContext(image_id=1))
    assert [int(m.sum()) for m in props.masks] == [8, 8] and props.masks[0][:2].all()


def test_one_selection_rule_ranks_dedups_and_cuts():
    from ovseg.proposals.filtering import select_proposals

    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, :2] = True  # a duplicate of 0
    masks[2, 2:] = True
    masks[3, :, :1] = True
    scores = torch.tensor([0.5, 0.9, 0.7, 0.1])
    assert select_proposals(masks, scores).tolist() == [1, 2, 0, 3]
    assert select_proposals(masks, scores, iou_threshold=0.9).tolist() == [1, 2, 3]
    assert select_proposals(masks, scores, iou_threshold=0.9, max_keep=2).tolist() == [1, 2]
    assert select_proposals(masks, scores, keep=torch.tensor([True, False, True, True]), max_keep=2).tolist() == [2, 0]


def test_backend_options_may_not_restate_the_top_k_knob():
    from pipelines.config.load import ConfigError, load_config
    from pipelines.mine.config import MineConfig

    with pytest.raises(ConfigError, match="proposals.options.max_proposals"):
        load_config(MineConfig, "conf/smoke/mine.yaml", ["proposals.options.max_proposals=8"])

"""Pair precision/recall against ground truth, on hand-made pair shards of the world corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ovseg.crops import masked_crops
from pipelines.pairs.format import PairMeta, pair_key, pair_sample
from pipelines.pairs.writer import ShardWriter, encode_jpeg, encode_png
from pipelines.pairs.quality import GroundTruth, mining_quality, pair_mask, read_pairs
from pipelines.world.generate import generate_split, image_id_of, make_sample


def _write_pairs(folder: Path, pairs: list[tuple[int, str, np.ndarray]], size: int = 64) -> None:
    """pairs-000000.tar written through the pair format's writer (committed)."""
    with ShardWriter(str(folder), 0) as writer:
        for k, (image_id, noun, mask) in enumerate(pairs):
            mc = masked_crops(torch.zeros(3, *mask.shape), torch.from_numpy(mask)[None], size)
            meta = PairMeta(noun=noun, score=0.5, runner_up_noun=None, runner_up_score=None, margin=None,
                            caption=None, image_key=f"i{image_id}", image_id=image_id,
                            source_url=None, box=mc.boxes[0].tolist(), area=int(mask.sum()),
                            image_size=list(mask.shape), proposal_backend="gt", proposal_index=k,
                            proposal_score=1.0, unit=0, clip_model="none")
            crop = np.zeros((size, size, 3), np.uint8)
            writer.write(pair_sample(key=pair_key(0, f"i{image_id}", k), jpg=encode_jpeg(crop),
                                     png=encode_png(mc.masks[0, 0].numpy().astype(np.uint8) * 255), meta=meta))
        writer.commit({"unit": 0})


def test_gt_pairs_are_precise_and_wrong_nouns_are_not(tmp_path):
    generate_split(tmp_path / "w", seed=0, split="train", n=6, formats=("coco",))
    ann = tmp_path / "w/coco/annotations"
    gt = GroundTruth(ann / "instances_train.json", ann / "captions_train.json")
    good, bad = [], []
    for i in range(6):
        scene, _ = make_sample(0, "train", i)
        iid = image_id_of("train", i)
        for inst in scene.instances:
            good.append((iid, inst.category.name, inst.mask))
        bad.append((iid, "zebra", scene.instances[0].mask))
        bad.append((iid, scene.things[0].category.name, ~scene.things[0].mask))
    _write_pairs(tmp_path / "good", good)
    _write_pairs(tmp_path / "bad", bad)
    back = list(read_pairs(tmp_path / "good"))
    assert len(back) == len(good)
    for p, (_, _, mask) in zip(back, good):
        rebuilt = pair_mask(p)
        iou = (rebuilt & mask).sum() / (rebuilt | mask).sum()
        assert iou > 0.8  # nearest-neighbour resize round trip through the 64 px crop mask
    ids = {image_id_of("train", i) for i in range(6)}
    q = mining_quality(tmp_path / "good", gt, image_ids=ids)
    assert q["precision"] == 1.0 and q["pairs"] == len(good)
    assert q["recall"] == 1.0 and q["opportunities"] > 0  # every named present category is found
    qb = mining_quality(tmp_path / "bad", gt, image_ids=ids)
    assert qb["precision"] == 0.0 and qb["recall"] == 0.0
    assert qb["wrong_reasons"]["noun_not_a_category"] == 6
    assert qb["wrong_reasons"]["mask_iou_below_threshold"] == 6


def test_named_present_uses_plurals(tmp_path):
    inst = {"images": [{"id": 1, "height": 4, "width": 4, "file_name": "a.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": {"size": [4, 4], "counts": "04<"}},
                            {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0,
                             "segmentation": {"size": [4, 4], "counts": "04<"}}],
            "categories": [{"id": 1, "name": "leaf"}, {"id": 2, "name": "fish"}]}
    caps = {"images": inst["images"], "annotations": [{"id": 1, "image_id": 1, "caption": "Two leaves."}]}
    (tmp_path / "i.json").write_text(json.dumps(inst))
    (tmp_path / "c.json").write_text(json.dumps(caps))
    gt = GroundTruth(tmp_path / "i.json", tmp_path / "c.json")
    assert gt.named_present(1) == {"leaf"}

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


def _coco_corpus(tmp_path: Path, name: str, words: dict[str, str], *, kinds: bool = True) -> GroundTruth:
    """A 3-image COCO-style corpus (person, dog, grass) whose captions name them with ``words``."""
    cats = [{"id": 1, "name": "person", "isthing": 1}, {"id": 2, "name": "dog", "isthing": 1},
            {"id": 3, "name": "grass", "isthing": 0}]
    if not kinds:
        cats = [{k: v for k, v in c.items() if k != "isthing"} for c in cats]
    images, anns, caps = [], [], []
    for iid in (1, 2, 3):
        images.append({"id": iid, "height": 8, "width": 8, "file_name": f"{iid}.jpg"})
        for cid, (x0, x1) in zip((1, 2, 3), ((0, 3), (3, 5), (5, 8))):
            anns.append({"id": 10 * iid + cid, "image_id": iid, "category_id": cid, "iscrowd": 0,
                         "segmentation": [[x0, 0, x1, 0, x1, 8, x0, 8]]})
        caps.append({"id": iid, "image_id": iid,
                     "caption": f"Two {words['person']}s walking a {words['dog']} on the {words['grass']}."})
    (tmp_path / f"{name}_i.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (tmp_path / f"{name}_c.json").write_text(json.dumps({"images": images, "annotations": caps}))
    from pipelines.pairs.quality import coco_synonyms

    return GroundTruth(tmp_path / f"{name}_i.json", tmp_path / f"{name}_c.json", synonyms=coco_synonyms())


def _strip(x0: int, x1: int) -> np.ndarray:
    m = np.zeros((8, 8), bool)
    m[:, x0:x1] = True
    return m


def test_synonyms_report_the_same_precision_as_category_names(tmp_path):
    """COCO's synonym map: "man"/"puppy"/"lawn"-style captions and nouns score as the category names do."""
    from pipelines.pairs.quality import coco_synonyms

    names = {"person": "person", "dog": "dog", "grass": "grass"}
    synonyms = {"person": "woman", "dog": "puppy", "grass": "grass"}
    results = {}
    for label, words in (("names", names), ("synonyms", synonyms)):
        gt = _coco_corpus(tmp_path, label, words)
        # image 1: all right; image 2: the dog's mask is the person's (wrong); image 3: person only
        pairs = [(1, words["person"], _strip(0, 3)), (1, words["dog"], _strip(3, 5)), (1, words["grass"], _strip(5, 8)),
                 (2, words["person"], _strip(0, 3)), (2, words["dog"], _strip(0, 3)), (3, words["person"], _strip(0, 3))]
        _write_pairs(tmp_path / label, pairs)
        results[label] = mining_quality(tmp_path / label, gt, image_ids={1, 2, 3})
    a, b = results["names"], results["synonyms"]
    assert a["precision"] == b["precision"] == 5 / 6
    assert a["recall"] == b["recall"] == 5 / 9 and a["opportunities"] == b["opportunities"] == 9
    assert a["precision_by_kind"] == b["precision_by_kind"]
    assert b["precision_by_kind"]["thing"] == {"pairs": 5, "precision": 4 / 5}
    assert b["precision_by_kind"]["stuff"] == {"pairs": 1, "precision": 1.0}
    # without the map the same synonym corpus reads as wrong: the check can fail
    plain = GroundTruth(tmp_path / "synonyms_i.json", tmp_path / "synonyms_c.json")
    q = mining_quality(tmp_path / "synonyms", plain, image_ids={1, 2, 3})
    assert q["precision"] == 1 / 6 and q["wrong_reasons"]["noun_not_a_category"] == 5
    # the shipped map covers COCO's 80 + 91 names and names only categories of it
    data = json.loads((Path(__import__("pipelines.pairs", fromlist=["x"]).__file__).parent
                       / "coco_synonyms.json").read_text())
    assert len(data["things"]) == 80 and len(data["stuff"]) == 91
    assert set(coco_synonyms().values()) <= set(data["things"]) | set(data["stuff"])


def test_kinds_come_from_the_annotation_file(tmp_path):
    gt = _coco_corpus(tmp_path, "nokind", {"person": "man", "dog": "dog", "grass": "grass"}, kinds=False)
    _write_pairs(tmp_path / "p", [(1, "man", _strip(0, 3))])
    q = mining_quality(tmp_path / "p", gt, image_ids={1})
    assert q["precision_by_kind"] == {"all": {"pairs": 1, "precision": 1.0}}
    assert gt.category_of("men") == "person" and gt.category_of("dogs") == "dog"  # lemmas, then synonyms
    assert gt.category_of("zebra") is None

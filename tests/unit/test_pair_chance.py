"""Chance baselines and replayed strategies from a candidates file, on a hand-made world."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from ovseg.matching import MatchParams
from pipelines.pairs.format import CANDIDATES_NAME, PairMeta, mask_to_rle, pair_key, pair_sample
from pipelines.pairs.quality import GroundTruth, candidate_truth, chance_precision, mining_quality, strategy_quality
from pipelines.pairs.writer import ShardWriter, encode_jpeg, encode_png
from pipelines.world.generate import generate_split, image_id_of, make_sample

OPEN = dict(min_score=-1.0, min_margin=-2.0, min_area=0, min_area_frac=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("w")
    generate_split(root, seed=0, split="train", n=5, formats=("coco",))
    ann = root / "coco/annotations"
    return GroundTruth(ann / "instances_train.json", ann / "captions_train.json")


def _mine_by_hand(folder, sims_of) -> list[dict]:
    """Candidates = every instance of each image; nouns = its category names; sim from ``sims_of(truth)``;
    pairs = best mask per noun (what ``best_mask`` with thresholds off writes)."""
    records = []
    with ShardWriter(str(folder), 0) as writer:
        for i in range(5):
            scene, _ = make_sample(0, "train", i)
            iid = image_id_of("train", i)
            masks = [inst.mask for inst in scene.instances]
            nouns = sorted({inst.category.name for inst in scene.instances})
            rec = {"image_key": f"i{iid}", "image_id": iid, "image_size": list(masks[0].shape), "nouns": nouns,
                   "proposal_index": list(range(len(masks))), "areas": [int(m.sum()) for m in masks],
                   "masks": [mask_to_rle(m) for m in masks]}
            truth = np.array([[inst.category.name == n for inst in scene.instances] for n in nouns])
            rec["sim"] = sims_of(truth, i).tolist()
            records.append(rec)
            for k, noun in enumerate(nouns):
                j = int(np.argmax(rec["sim"][k]))
                ys, xs = np.nonzero(masks[j])
                box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
                crop = masks[j][box[1]:box[3], box[0]:box[2]].astype(np.uint8) * 255
                meta = PairMeta(noun=noun, score=0.5, runner_up_noun=None, runner_up_score=None, margin=None,
                                caption=None, image_key=f"i{iid}", image_id=iid, source_url=None, box=box,
                                area=int(masks[j].sum()), image_size=rec["image_size"], proposal_backend="gt",
                                proposal_index=j, proposal_score=1.0, unit=0, clip_model="none")
                writer.write(pair_sample(key=pair_key(0, f"i{iid}", k), jpg=encode_jpeg(np.zeros((8, 8, 3), np.uint8)),
                                         png=encode_png(crop), meta=meta))
        lines = "".join(json.dumps(r) + "\n" for r in records).encode()
        writer.add_side_file(CANDIDATES_NAME.format(0), gzip.compress(lines))
        writer.commit({"unit": 0})
    return records


def test_chance_is_the_mean_fraction_of_right_candidates(world, tmp_path):
    records = _mine_by_hand(tmp_path / "oracle", lambda truth, i: truth.astype(float))
    expected = []
    for rec in records:
        truth = candidate_truth(rec, world)
        assert truth.shape == (len(rec["nouns"]), len(rec["masks"])) and truth.any(1).all()
        expected += [truth[k].mean() for k in range(len(rec["nouns"]))]
    c = chance_precision(tmp_path / "oracle", world)
    assert c["pairs"] == len(expected) and c["precision"] == pytest.approx(np.mean(expected))
    assert 0 < c["precision"] < 0.6
    q = mining_quality(tmp_path / "oracle", world)
    assert q["precision"] == 1.0 > c["precision"]  # an oracle scorer beats chance


def test_replayed_strategies_judge_like_the_shards_and_a_blind_scorer_sits_at_chance(world, tmp_path):
    rng = np.random.default_rng(0)
    _mine_by_hand(tmp_path / "oracle", lambda truth, i: truth.astype(float))
    _mine_by_hand(tmp_path / "blind", lambda truth, i: rng.random(truth.shape))
    ids = {image_id_of("train", i) for i in range(5)}
    params = [MatchParams(strategy=s, **OPEN) for s in ("best_mask", "one_to_one", "dual_softmax")]
    for row in strategy_quality(tmp_path / "oracle", world, params, image_ids=ids):
        assert row["precision"] == 1.0 and row["precision"] > row["chance"]
        assert row["recall"] == 1.0
    [blind] = strategy_quality(tmp_path / "blind", world, params[:1], image_ids=ids)
    assert blind["precision"] == pytest.approx(mining_quality(tmp_path / "blind", world)["precision"])
    assert blind["chance"] == pytest.approx(chance_precision(tmp_path / "blind", world)["precision"])
    assert blind["by_kind"]["thing"]["pairs"] + blind["by_kind"]["stuff"]["pairs"] == blind["pairs"]


def test_no_candidates_file_is_a_clear_error(world, tmp_path):
    with ShardWriter(str(tmp_path / "plain"), 0) as writer:
        writer.commit({"unit": 0})
    with pytest.raises(FileNotFoundError, match="output.candidates=true"):
        chance_precision(tmp_path / "plain", world)

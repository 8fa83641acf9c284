"""Mined pairs against ground truth: pair precision and recall for corpora with COCO instances.

A pair (mask, noun) is *correct* when the noun is a category name of the annotation file and the
pair's mask has IoU ≥ ``iou_threshold`` with an annotated instance of that category in the same
image. The mask is rebuilt from the shard: the crop-aligned mask PNG resized back into ``box``
(nearest neighbour, so a few boundary pixels may move; IoU 0.5 is far from that).

Recall counts (image, category) *opportunities*: the category is annotated in the image and named
by at least one of its captions (word match on the singular or plural). An opportunity is found
when at least one correct pair exists for it.

Generic over COCO instance files; the world corpus is one user (``bench/world.py``), any corpus
whose images carry instance annotations can use it (e.g. a mining run report).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import fsspec
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pipelines.pairs.format import PairMeta, iter_committed
from pipelines.records import SkipSample

from pipelines.world.categories import CATEGORIES  # TODO(issue 15): the world passes its vocabulary in

__all__ = ["MinedPair", "read_pairs", "pair_mask", "GroundTruth", "decode_segmentation", "mining_quality"]

log = logging.getLogger(__name__)
_WORLD_PLURALS = {c.name: c.plural for c in CATEGORIES}


@dataclass(kw_only=True)
class MinedPair:
    """One pair read back from a ``pairs-*.tar`` shard."""

    key: str  # the sample key
    meta: PairMeta  # the pair's json (noun, image_id, box, image_size, score, ...)
    mask: np.ndarray  # bool [S, S], crop-aligned

    @property
    def noun(self) -> str:
        return self.meta.noun


def read_pairs(folder: str | Path, storage_options: dict | None = None) -> Iterator[MinedPair]:
    """All pairs of the committed shards in ``folder`` (in unit order, then tar order)."""
    skips: Counter = Counter()
    for s in iter_committed(str(folder), skips, storage_options):
        try:
            meta = PairMeta.from_json(s.get("json", b""))
        except SkipSample as err:
            log.warning("pair %s skipped: %s", s["__key__"], err)
            continue
        mask = np.asarray(Image.open(io.BytesIO(s["png"])).convert("L")) > 127
        yield MinedPair(key=s["__key__"], meta=meta, mask=mask)


def pair_mask(pair: MinedPair) -> np.ndarray:
    """The pair's mask in source-image pixels: bool [H, W] (``meta.image_size``); exact from ``mask_rle``
    when the json has it, else the crop-aligned PNG resized back into ``box``."""
    if pair.meta.mask_rle:
        from pipelines.pairs.format import rle_to_mask

        return rle_to_mask(pair.meta.mask_rle)
    h, w = pair.meta.image_size
    x0, y0, x1, y1 = pair.meta.box
    full = np.zeros((h, w), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return full
    crop = Image.fromarray(pair.mask.astype(np.uint8) * 255).resize((x1 - x0, y1 - y0), Image.NEAREST)
    full[y0:y1, x0:x1] = np.asarray(crop) > 127
    return full


class GroundTruth:
    """COCO instances (+ optional captions) indexed by image id."""

    def __init__(self, instances_json: str | Path, captions_json: str | Path | None = None,
                 storage_options: dict | None = None) -> None:
        def load(url: str | Path) -> dict:
            with fsspec.open(str(url), "rb", **(storage_options or {})) as f:
                return json.loads(f.read())

        inst = load(instances_json)
        self.names = {c["id"]: c["name"] for c in inst["categories"]}
        self.sizes = {im["id"]: (im["height"], im["width"]) for im in inst["images"]}
        self.anns: dict[int, list[dict]] = defaultdict(list)
        for a in inst["annotations"]:
            self.anns[a["image_id"]].append(a)
        self.captions: dict[int, list[str]] = defaultdict(list)
        if captions_json is not None:
            for a in load(captions_json)["annotations"]:
                self.captions[a["image_id"]].append(a["caption"])
        self._masks: dict[int, list[tuple[str, np.ndarray]]] = {}

    def instances(self, image_id: int) -> list[tuple[str, np.ndarray]]:
        """``[(category name, bool mask [H, W])]`` of one image (decoded once, cached)."""
        if image_id not in self._masks:
            h, w = self.sizes[image_id]
            self._masks[image_id] = [(self.names[a["category_id"]], decode_segmentation(a["segmentation"], h, w))
                                     for a in self.anns.get(image_id, [])]
        return self._masks[image_id]

    def named_present(self, image_id: int) -> set[str]:
        """Categories annotated in the image and named (singular or plural word) in a caption."""
        present = {self.names[a["category_id"]] for a in self.anns.get(image_id, [])}
        text = " ".join(self.captions.get(image_id, [])).lower()
        words = set(re.findall(r"[a-z]+", text))
        return {n for n in present if n in words or _WORLD_PLURALS.get(n, n + "s") in words}

    def judge(self, noun: str, image_id: int, mask: np.ndarray, *, iou_threshold: float = 0.5) -> str | None:
        """``None`` when (``mask`` [H, W] bool in image pixels, ``noun``) is right, else why it is wrong."""
        if noun not in set(self.names.values()):
            return "noun_not_a_category"
        insts = [m for n, m in self.instances(image_id) if n == noun]
        if not insts:
            return "category_absent_from_image"
        if max(_iou(mask, m) for m in insts) < iou_threshold:
            return "mask_iou_below_threshold"
        return None


def decode_segmentation(seg: list | dict, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) → bool mask ``[H, W]``."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
    return mask_utils.decode(rle).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter / union) if union else 0.0


def mining_quality(pairs_folder: str | Path, gt: GroundTruth, iou_threshold: float = 0.5, *,
                   image_ids: set[int] | None = None, min_margin: float | None = None,
                   storage_options: dict | None = None) -> dict:
    """Precision / recall of the pairs in ``pairs_folder`` against ``gt``.

    Args:
        image_ids: the images that were mined (recall denominator); None = every image with pairs
            or annotations in ``gt``.
        min_margin: only count pairs whose recorded ``margin`` (lead over the runner-up noun on the
            same mask; None when the image has one noun) is at least this: the precision/recall of
            a stricter matching threshold, read off the same shards.

    Returns:
        ``{"pairs", "correct", "precision", "recall", "opportunities", "found",
        "precision_by_kind": {...}, "wrong_reasons": {...}, "pairs_per_noun": {...},
        "correct_per_noun": {...}}``.
    """
    correct = 0
    n_pairs = 0
    found: set[tuple[int, str]] = set()
    reasons: Counter = Counter()
    per_noun: Counter = Counter()
    per_noun_ok: Counter = Counter()
    mined_ids: set[int] = set()
    for pair in read_pairs(pairs_folder, storage_options):
        margin = pair.meta.margin
        if min_margin is not None and margin is not None and margin < min_margin:
            continue
        image_id = int(pair.meta.image_id)
        mined_ids.add(image_id)
        n_pairs += 1
        per_noun[pair.noun] += 1
        wrong = gt.judge(pair.noun, image_id, pair_mask(pair), iou_threshold=iou_threshold)
        if wrong is None:
            correct += 1
            per_noun_ok[pair.noun] += 1
            found.add((image_id, pair.noun))
        else:
            reasons[wrong] += 1
    ids = image_ids if image_ids is not None else (mined_ids | set(gt.anns))
    opportunities = {(i, n) for i in ids for n in gt.named_present(i)}
    kinds = {c.name: c.kind for c in CATEGORIES}
    by_kind = {}
    for kind in ("thing", "stuff"):
        tot = sum(v for n, v in per_noun.items() if kinds.get(n) == kind)
        ok = sum(v for n, v in per_noun_ok.items() if kinds.get(n) == kind)
        by_kind[kind] = {"pairs": tot, "precision": ok / tot if tot else float("nan")}
    return {
        "pairs": n_pairs, "correct": correct, "precision": correct / n_pairs if n_pairs else float("nan"),
        "opportunities": len(opportunities), "found": len(found & opportunities),
        "recall": len(found & opportunities) / len(opportunities) if opportunities else float("nan"),
        "precision_by_kind": by_kind, "wrong_reasons": dict(reasons),
        "pairs_per_noun": dict(per_noun.most_common()),
        "correct_per_noun": {n: per_noun_ok[n] for n in per_noun},
    }


# ----------------------------------------------------------------------------- against chance, per strategy
# Read from the candidates files (``output.candidates=true``): every mined image's candidate masks,
# nouns and similarity matrix. From them, the precision of a random choice among the same candidate
# masks is exact (the mean fraction of right candidates), and any matching strategy or threshold can
# be replayed on the same similarities without mining again.


def read_candidates(folder: str | Path, storage_options: dict | None = None) -> Iterator[tuple[int, dict]]:
    """``(unit, image record)`` of every committed unit's candidates file, in unit order.

    Raises:
        FileNotFoundError: a committed unit has no candidates file (mined without ``output.candidates``).
    """
    import gzip

    from pipelines.pairs.format import CANDIDATES_NAME, committed_indices, list_names

    folder = str(folder).rstrip("/")
    for unit in committed_indices(list_names(folder, storage_options)):
        url = f"{folder}/{CANDIDATES_NAME.format(unit)}"
        try:
            with fsspec.open(url, "rb", **(storage_options or {})) as f:
                text = gzip.decompress(f.read()).decode("utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{url}: mine with output.candidates=true for chance baselines") from None
        for line in text.splitlines():
            if line.strip():
                yield unit, json.loads(line)


def candidate_truth(record: dict, gt: GroundTruth, iou_threshold: float = 0.5) -> np.ndarray:
    """``[K,N]`` bool: noun k with candidate mask n is a correct pair (mask IoU ≥ ``iou_threshold`` with an
    instance of the noun's category in the image)."""
    from pipelines.pairs.format import rle_to_mask

    nouns, rles = record["nouns"], record["masks"]
    truth = np.zeros((len(nouns), len(rles)), dtype=bool)
    image_id = record["image_id"]
    insts = gt.instances(int(image_id)) if image_id is not None and int(image_id) in gt.sizes else []
    if not insts or not rles:
        return truth
    cand = np.stack([rle_to_mask(r) for r in rles]).reshape(len(rles), -1).astype(np.float32)  # [N,P]
    inst = np.stack([m for _, m in insts]).reshape(len(insts), -1).astype(np.float32)  # [G,P]
    inter = inst @ cand.T  # [G,N]
    union = inst.sum(1)[:, None] + cand.sum(1)[None] - inter
    ok = (inter / np.maximum(union, 1)) >= iou_threshold
    names = [n for n, _ in insts]
    for k, noun in enumerate(nouns):
        rows = [g for g, n in enumerate(names) if n == noun]
        if rows:
            truth[k] = ok[rows].any(0)
    return truth


def _world_kinds() -> dict[str, str]:
    return {c.name: c.kind for c in CATEGORIES}


def chance_precision(pairs_folder: str | Path, gt: GroundTruth, iou_threshold: float = 0.5, *,
                     min_margin: float | None = None, kinds: dict[str, str] | None = None,
                     storage_options: dict | None = None) -> dict:
    """Precision of a random choice among the same candidate masks, for the pairs in ``pairs_folder``.

    For every pair (noun, image) the expected correctness of a uniformly random candidate mask of
    that image is the fraction of its candidates that are right for the noun; the chance precision
    is its mean over the same pairs ``mining_quality`` judges (same ``min_margin`` filter).

    Returns:
        ``{"pairs", "precision", "precision_by_kind": {kind: {"pairs", "precision"}}}``.
    """
    kinds = kinds or _world_kinds()
    truth: dict[tuple[int, str], tuple[list[str], np.ndarray]] = {}
    for unit, record in read_candidates(pairs_folder, storage_options):
        truth[(unit, record["image_key"])] = (record["nouns"], candidate_truth(record, gt, iou_threshold))
    total, per_kind = [], defaultdict(list)
    for pair in read_pairs(pairs_folder, storage_options):
        margin = pair.meta.margin
        if min_margin is not None and margin is not None and margin < min_margin:
            continue
        nouns, t = truth[(pair.meta.unit, pair.meta.image_key)]
        frac = float(t[nouns.index(pair.noun)].mean()) if t.shape[1] else 0.0
        total.append(frac)
        per_kind[kinds.get(pair.noun, "other")].append(frac)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"pairs": len(total), "precision": mean(total),
            "precision_by_kind": {k: {"pairs": len(per_kind[k]), "precision": mean(per_kind[k])}
                                  for k in ("thing", "stuff")}}


def strategy_quality(pairs_folder: str | Path, gt: GroundTruth, params_list: list, *, iou_threshold: float = 0.5,
                     image_ids: set[int] | None = None, kinds: dict[str, str] | None = None,
                     storage_options: dict | None = None) -> list[dict]:
    """Replay matching with each of ``params_list`` (:class:`ovseg.matching.MatchParams`) on the stored
    similarities and judge the pairs it would make, each beside the chance precision of the same pairs.

    Returns:
        one dict per params: ``{"params", "pairs", "precision", "recall", "chance",
        "by_kind": {kind: {"pairs", "precision", "chance", "recall"}}}``; recall counts (image, category)
        opportunities as :func:`mining_quality` does, per kind too.
    """
    import dataclasses as _dc

    import torch

    from ovseg.matching import match_pairs

    kinds = kinds or _world_kinds()
    images = []
    for _, record in read_candidates(pairs_folder, storage_options):
        if not record["nouns"] or not record["masks"]:
            continue
        images.append((record, torch.tensor(record["sim"], dtype=torch.float32),
                       torch.tensor(record["areas"]), candidate_truth(record, gt, iou_threshold)))
    ids = image_ids if image_ids is not None else {int(r["image_id"]) for r, *_ in images}
    opportunities = {(i, n) for i in ids for n in gt.named_present(i)}
    out = []
    for params in params_list:
        judged = {k: {"ok": 0, "n": 0, "chance": 0.0, "found": set()} for k in ("all", "thing", "stuff")}
        for record, sim, areas, truth in images:
            h, w = record["image_size"]
            pairs, _ = match_pairs(sim, record["nouns"], areas, params=params, image_area=h * w)
            for p in pairs:
                ok = bool(truth[p.noun_index, p.mask_index])
                chance = float(truth[p.noun_index].mean())
                for k in ("all", kinds.get(p.noun, "other")):
                    if k not in judged:
                        continue
                    judged[k]["ok"] += ok
                    judged[k]["n"] += 1
                    judged[k]["chance"] += chance
                    if ok:
                        judged[k]["found"].add((int(record["image_id"]), p.noun))

        def summary(j: dict, opp: set) -> dict:
            n = j["n"]
            return {"pairs": n, "precision": j["ok"] / n if n else float("nan"),
                    "chance": j["chance"] / n if n else float("nan"),
                    "recall": len(j["found"] & opp) / len(opp) if opp else float("nan")}

        row = summary(judged["all"], opportunities)
        row["by_kind"] = {k: summary(judged[k], {o for o in opportunities if kinds.get(o[1]) == k})
                          for k in ("thing", "stuff")}
        row["params"] = _dc.asdict(params)
        out.append(row)
    return out

"""Mined pairs against ground truth: pair precision and recall for corpora with COCO instances.

A pair (mask, noun) is *correct* when the noun names a category of the annotation file and the
pair's mask has IoU ≥ ``iou_threshold`` with an annotated instance of that category in the same
image. A noun names a category when it is the category's name, or its lemma is (spaCy's
lemmatiser, as the miner uses), or a synonym map sends it there (``"man" → "person"``;
:func:`coco_synonyms` ships one for COCO's 80 thing and 91 stuff names). The mask is rebuilt from
the shard: the crop-aligned mask PNG resized back into ``box`` (nearest neighbour, so a few
boundary pixels may move; IoU 0.5 is far from that).

Recall counts (image, category) *opportunities*: the category is annotated in the image and named
by at least one of its captions (a word, its regular plural or its lemma, alone or as a phrase, is
the name or one of its synonyms). An opportunity is found when at least one correct pair exists for it.

Kinds come from the annotation file: a category's ``kind`` field, else COCO's ``isthing``
(1 → "thing", 0 → "stuff"), else "all". Generic over COCO instance files: a corpus brings its own
vocabulary (the world's bench passes its plurals as synonyms).
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterator

import fsspec
import numpy as np
import torch
from PIL import Image

from ovseg.masks import decode_segmentation, mask_iou
from pipelines.pairs.format import PairMeta, iter_committed
from pipelines.records import SkipSample

__all__ = ["MinedPair", "read_pairs", "pair_mask", "GroundTruth", "coco_synonyms", "mining_quality"]

log = logging.getLogger(__name__)

# texts -> per text [(lower-case word, lemma)]; ovseg.text.NounExtractor.word_lemmas is the default
Lemmatizer = Callable[[Sequence[str]], list[list[tuple[str, str]]]]


@lru_cache(maxsize=1)
def coco_synonyms() -> dict[str, str]:
    """The shipped synonym map of COCO's 80 thing and 91 stuff names: ``{noun: category name}``."""
    text = resources.files("pipelines.pairs").joinpath("coco_synonyms.json").read_text()
    return dict(json.loads(text)["synonyms"])

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
    """COCO instances (+ optional captions) indexed by image id, with the file's vocabulary.

    Args:
        instances_json: COCO instances file (fsspec URL).
        captions_json: COCO captions file, for recall's opportunities (None = no opportunities).
        storage_options: fsspec options of both files.
        synonyms: ``{noun: category name}``; entries naming no category of the file are ignored,
            and a category's own name always wins over a synonym.
        lemmatizer: texts → ``[(word, lemma)]`` per text; None = spaCy through
            :class:`ovseg.text.NounExtractor` (loaded on first use).
    """

    def __init__(self, instances_json: str | Path, captions_json: str | Path | None = None,
                 storage_options: dict | None = None, *, synonyms: Mapping[str, str] | None = None,
                 lemmatizer: Lemmatizer | None = None) -> None:
        def load(url: str | Path) -> dict:
            with fsspec.open(str(url), "rb", **(storage_options or {})) as f:
                return json.loads(f.read())

        inst = load(instances_json)
        self.names = {c["id"]: c["name"] for c in inst["categories"]}
        self.kinds = {c["name"]: _kind(c) for c in inst["categories"]}  # category name -> kind
        self.sizes = {im["id"]: (im["height"], im["width"]) for im in inst["images"]}
        self.anns: dict[int, list[dict]] = defaultdict(list)
        for a in inst["annotations"]:
            self.anns[a["image_id"]].append(a)
        self.captions: dict[int, list[str]] = defaultdict(list)
        if captions_json is not None:
            for a in load(captions_json)["annotations"]:
                self.captions[a["image_id"]].append(a["caption"])
        # every written form (lower case, words split on spaces) -> category name; names win
        self.vocabulary: dict[str, str] = {k.lower(): v for k, v in (synonyms or {}).items() if v in self.kinds}
        self.vocabulary.update({n.lower(): n for n in self.kinds})
        self._forms: dict[str, list[tuple[str, ...]]] = defaultdict(list)  # category -> its forms as words
        for form, name in self.vocabulary.items():
            *head, last = form.replace("-", " ").split()  # "wall-brick": the words wall, brick
            # the lemma covers plurals, the regular plural covers what the tagger takes for a name
            # ("Umbrellas and a crown." has the PROPN "Umbrellas", which spaCy does not lemmatise)
            self._forms[name] += [(*head, last + end) for end in ("", "s", "es")]
        self._lemmatizer = lemmatizer
        self._masks: dict[int, list[tuple[str, np.ndarray]]] = {}
        self._named: dict[int, set[str]] = {}
        self._noun_category: dict[str, str | None] = {}

    def lemmas(self, texts: Sequence[str]) -> list[list[tuple[str, str]]]:
        """``[(word, lemma)]`` per text, through the lemmatiser (spaCy unless one was given)."""
        if self._lemmatizer is None:
            self._lemmatizer = _spacy_lemmatizer()
        return self._lemmatizer(list(texts))

    def category_of(self, noun: str) -> str | None:
        """The category a (mined) noun names: itself, its lemma, or its synonym; None when none."""
        key = " ".join(noun.lower().split())
        if key in self.vocabulary:
            return self.vocabulary[key]
        if key not in self._noun_category:
            words = self.lemmas([key])[0]
            lemma = " ".join([w for w, _ in words[:-1]] + [words[-1][1]]) if words else key
            self._noun_category[key] = self.vocabulary.get(lemma)
        return self._noun_category[key]

    def instances(self, image_id: int) -> list[tuple[str, np.ndarray]]:
        """``[(category name, bool mask [H, W])]`` of one image (decoded once, cached)."""
        if image_id not in self._masks:
            h, w = self.sizes[image_id]
            self._masks[image_id] = [(self.names[a["category_id"]], decode_segmentation(a["segmentation"], h, w))
                                     for a in self.anns.get(image_id, [])]
        return self._masks[image_id]

    def named_present(self, image_id: int) -> set[str]:
        """Categories annotated in the image and named (a word, lemma or synonym) in a caption."""
        return self.named_present_in([image_id])[image_id]

    def named_present_in(self, image_ids: Sequence[int]) -> dict[int, set[str]]:
        """:meth:`named_present` of many images, their captions lemmatised in one batch."""
        todo = [i for i in dict.fromkeys(image_ids) if i not in self._named]
        texts = [(i, c) for i in todo for c in self.captions.get(i, [])]
        words: dict[int, list[list[str]]] = defaultdict(list)  # image -> [caption words, caption lemmas]
        for (i, _), pairs in zip(texts, self.lemmas([c for _, c in texts]) if texts else []):
            words[i] += [[w for w, _ in pairs], [lem for _, lem in pairs]]
        for i in todo:
            present = {self.names[a["category_id"]] for a in self.anns.get(i, [])}
            self._named[i] = {n for n in present
                              if any(_contains(seq, form) for seq in words[i] for form in self._forms[n])}
        return {i: self._named[i] for i in image_ids}

    def judge(self, noun: str, image_id: int, mask: np.ndarray, *, iou_threshold: float = 0.5) -> str | None:
        """``None`` when (``mask`` [H, W] bool in image pixels, ``noun``) is right, else why it is wrong."""
        category = self.category_of(noun)
        if category is None:
            return "noun_not_a_category"
        insts = [m for n, m in self.instances(image_id) if n == category]
        if not insts:
            return "category_absent_from_image"
        ious = mask_iou(torch.from_numpy(mask).reshape(1, -1), torch.from_numpy(np.stack(insts)).reshape(len(insts), -1))
        if float(ious.max()) < iou_threshold:
            return "mask_iou_below_threshold"
        return None


@lru_cache(maxsize=1)
def _spacy_lemmatizer() -> Lemmatizer:
    """The default lemmatiser: the miner's spaCy pipeline (loaded once per process)."""
    from ovseg.text import NounExtractor

    return NounExtractor().word_lemmas


def _kind(category: dict) -> str:
    """A COCO category's kind: its ``kind`` field, else ``isthing`` (thing / stuff), else "all"."""
    if category.get("kind"):
        return str(category["kind"])
    if "isthing" in category:
        return "thing" if int(category["isthing"]) else "stuff"
    return "all"


def _contains(seq: list[str], form: tuple[str, ...]) -> bool:
    """Is ``form`` a contiguous run of ``seq``."""
    n = len(form)
    return any(tuple(seq[k: k + n]) == form for k in range(len(seq) - n + 1)) if n else False


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
        "correct_per_noun": {...}}``; ``precision_by_kind`` has one row per kind of the
        annotation file (pairs whose noun names a category of that kind).
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
            found.add((image_id, gt.category_of(pair.noun)))
        else:
            reasons[wrong] += 1
    ids = image_ids if image_ids is not None else (mined_ids | set(gt.anns))
    opportunities = {(i, n) for i, named in gt.named_present_in(sorted(ids)).items() for n in named}
    noun_kind = {n: gt.kinds[c] for n in per_noun if (c := gt.category_of(n)) is not None}
    by_kind = {}
    for kind in dict.fromkeys(gt.kinds.values()):  # the file's kinds, in the order of its categories
        tot = sum(v for n, v in per_noun.items() if noun_kind.get(n) == kind)
        ok = sum(v for n, v in per_noun_ok.items() if noun_kind.get(n) == kind)
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
        category = gt.category_of(noun)
        rows = [g for g, n in enumerate(names) if n == category]
        if rows:
            truth[k] = ok[rows].any(0)
    return truth


def _kind_of(gt: GroundTruth, noun: str) -> str:
    """The kind of the category ``noun`` names ("other" when it names none)."""
    category = gt.category_of(noun)
    return gt.kinds[category] if category is not None else "other"


def chance_precision(pairs_folder: str | Path, gt: GroundTruth, iou_threshold: float = 0.5, *,
                     min_margin: float | None = None, storage_options: dict | None = None) -> dict:
    """Precision of a random choice among the same candidate masks, for the pairs in ``pairs_folder``.

    For every pair (noun, image) the expected correctness of a uniformly random candidate mask of
    that image is the fraction of its candidates that are right for the noun; the chance precision
    is its mean over the same pairs ``mining_quality`` judges (same ``min_margin`` filter).

    Returns:
        ``{"pairs", "precision", "precision_by_kind": {kind: {"pairs", "precision"}}}`` (the annotation
        file's kinds).
    """
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
        per_kind[_kind_of(gt, pair.noun)].append(frac)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"pairs": len(total), "precision": mean(total),
            "precision_by_kind": {k: {"pairs": len(per_kind[k]), "precision": mean(per_kind[k])}
                                  for k in dict.fromkeys(gt.kinds.values())}}


def strategy_quality(pairs_folder: str | Path, gt: GroundTruth, params_list: list, *, iou_threshold: float = 0.5,
                     image_ids: set[int] | None = None, storage_options: dict | None = None) -> list[dict]:
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

    kinds = list(dict.fromkeys(gt.kinds.values()))
    images = []
    for _, record in read_candidates(pairs_folder, storage_options):
        if not record["nouns"] or not record["masks"]:
            continue
        images.append((record, torch.tensor(record["sim"], dtype=torch.float32),
                       torch.tensor(record["areas"]), candidate_truth(record, gt, iou_threshold)))
    ids = image_ids if image_ids is not None else {int(r["image_id"]) for r, *_ in images}
    opportunities = {(i, n) for i, named in gt.named_present_in(sorted(ids)).items() for n in named}
    out = []
    for params in params_list:
        judged = {k: {"ok": 0, "n": 0, "chance": 0.0, "found": set()} for k in ("all", *kinds)}
        for record, sim, areas, truth in images:
            h, w = record["image_size"]
            pairs, _ = match_pairs(sim, record["nouns"], areas, params=params, image_area=h * w)
            for p in pairs:
                ok = bool(truth[p.noun_index, p.mask_index])
                chance = float(truth[p.noun_index].mean())
                for k in ("all", _kind_of(gt, p.noun)):
                    if k not in judged:
                        continue
                    judged[k]["ok"] += ok
                    judged[k]["n"] += 1
                    judged[k]["chance"] += chance
                    if ok:
                        judged[k]["found"].add((int(record["image_id"]), gt.category_of(p.noun)))

        def summary(j: dict, opp: set) -> dict:
            n = j["n"]
            return {"pairs": n, "precision": j["ok"] / n if n else float("nan"),
                    "chance": j["chance"] / n if n else float("nan"),
                    "recall": len(j["found"] & opp) / len(opp) if opp else float("nan")}

        row = summary(judged["all"], opportunities)
        row["by_kind"] = {k: summary(judged[k], {o for o in opportunities if gt.kinds.get(o[1]) == k})
                          for k in kinds}
        row["params"] = _dc.asdict(params)
        out.append(row)
    return out

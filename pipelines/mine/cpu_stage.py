"""The CPU side of mining: records → decoded pixels, nouns and filtered proposals.

:class:`CpuStage` holds spaCy and the proposal backend and turns a batch of
:class:`~pipelines.records.ImageRecord` into a :class:`PreparedBatch` that the model stage
(:mod:`pipelines.mine.model_stage`) only has to cut, encode, match and write. It runs either in a thread
beside the model (``ray.cpu_workers_per_actor=0``) or in its own Ray workers
(:mod:`pipelines.mine.driver`); both give the same batches, so the output does not depend on where
it ran.

Proposals are filtered here, before any CLIP work, by :func:`ovseg.proposals.filtering.select_proposals`
(the rule the backends use too): ranked by score, top-k (``proposals.max_proposals``, also handed to
the backend as its ``max_proposals``), masks smaller than the matching area floor dropped (they could
never become a pair, so the pairs do not change), optional IoU de-duplication (``proposals.dedup_iou``).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ovseg.proposals import ImageContext, Proposals, build_proposals, propose_batch
from ovseg.proposals.filtering import select_proposals
from ovseg.text import NounExtractor
from pipelines.corpus.decode import decode_image, read_bytes
from pipelines.mine.provenance import sha256_hex
from pipelines.mine.config import MineConfig
from pipelines.records import ImageRecord, SkipSample
from pipelines.mine.stage_times import StageTimes
from pipelines.mine.stats import UnitStats


def _load_json(url: str | None, storage_options: dict[str, Any]) -> dict | None:
    if url is None:
        return None
    import fsspec

    with fsspec.open(url, "rb", **storage_options) as f:
        return json.loads(f.read())


def build_proposal_backend(cfg: MineConfig):
    """The configured proposal backend; annotation files for ``gt`` are read here via fsspec
    (corpus-side files: ``corpus.storage_options``)."""
    options = dict(cfg.proposals.options)
    if cfg.proposals.backend == "gt":
        storage = cfg.corpus.storage_options
        options.setdefault("instances", _load_json(cfg.proposals.instances_url, storage))
        options.setdefault("panoptic", _load_json(cfg.proposals.panoptic_url, storage))
        options.setdefault("panoptic_root", cfg.proposals.panoptic_root)
        if cfg.proposals.panoptic_root:
            root = cfg.proposals.panoptic_root.rstrip("/")
            options.setdefault("read_file", functools.partial(_read_under, root, storage))
    if _takes_option(cfg.proposals.backend, "max_proposals"):
        options["max_proposals"] = cfg.proposals.max_proposals  # the one knob (options may not restate it)
    if cfg.proposals.backend in ("maskformer", "sam"):
        options.setdefault("checkpoint", cfg.proposals.checkpoint)
        options.setdefault("device", cfg.run.device)
    return build_proposals(cfg.proposals.backend, **options)


def _takes_option(backend: str, name: str) -> bool:
    """Does the registered backend's builder take the keyword option ``name`` (or any keyword)."""
    import inspect

    from ovseg.proposals import PROPOSAL_REGISTRY

    params = inspect.signature(PROPOSAL_REGISTRY[backend]).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _read_under(root: str, storage_options: dict[str, Any], name: str) -> bytes:
    import fsspec

    with fsspec.open(f"{root}/{name}", "rb", **storage_options) as f:
        return f.read()


@dataclass
class PreparedImage:
    """An image ready for the model stage.

    Attributes:
        record: the corpus record.
        pixels: ``[H,W,3]`` uint8 decoded pixels.
        nouns: the image's nouns (at most ``nouns.max_nouns_per_image``).
        caption_of: noun → first caption naming it.
        masks: ``[M,H,W]`` bool proposals that survived filtering (M >= 1).
        scores: ``[M]`` float proposal scores.
        proposal_index: ``[M]`` long, each mask's index among the backend's top-k proposals.
        image_sha256: SHA-256 of the encoded image bytes (provenance).
        phash: 64-bit perceptual hash of the pixels (``corpus.dedup=phash``), else None.
    """

    record: ImageRecord
    pixels: np.ndarray
    nouns: list[str]
    caption_of: dict[str, str] = field(default_factory=dict)
    masks: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    proposal_index: torch.Tensor | None = None
    image_sha256: str | None = None
    phash: int | None = None


@dataclass
class PreparedBatch:
    """What the CPU stage hands the model stage: images plus the counts and times it made."""

    images: list[PreparedImage]
    stats: UnitStats  # counts of this batch (images, captions, nouns, proposals, skips, rejections)
    times: dict[str, float]  # seconds per CPU stage for this batch


def merge_stats(into: UnitStats, part: UnitStats) -> None:
    """Add the counters of ``part`` (one batch) to ``into`` (the unit)."""
    into.images += part.images
    into.captions += part.captions
    into.nouns += part.nouns
    into.proposals += part.proposals
    into.skipped.update(part.skipped)
    into.rejected.update(part.rejected)


def perceptual_hash(pixels: np.ndarray) -> int:
    """64-bit DCT perceptual hash (``imagehash.phash``) of ``[H,W,3]`` uint8 pixels, as an int."""
    import imagehash
    from PIL import Image

    return int(str(imagehash.phash(Image.fromarray(pixels))), 16)


class DuplicateFilter:
    """Images of one unit whose perceptual hash is within ``max_distance`` bits of an earlier one."""

    def __init__(self, max_distance: int = 0) -> None:
        self.max_distance = max_distance
        self.seen: list[int] = []
        self._exact: set[int] = set()

    def is_duplicate(self, phash: int) -> bool:
        """True when ``phash`` matches an image seen before (which is then not recorded again)."""
        if phash in self._exact or (self.max_distance > 0 and any(
                bin(phash ^ h).count("1") <= self.max_distance for h in self.seen)):
            return True
        self._exact.add(phash)
        self.seen.append(phash)
        return False


class CpuStage:
    """spaCy and the proposal backend; :meth:`prepare` turns records into a ready batch."""

    def __init__(self, cfg: MineConfig) -> None:

        self.cfg = cfg
        self.nouns = NounExtractor(
            pipeline=cfg.nouns.pipeline,
            fallbacks=tuple(cfg.nouns.fallbacks),
            extra_stop_words=tuple(cfg.nouns.extra_stop_words),
        )
        self.proposals = build_proposal_backend(cfg)

    def prepare(self, records: list[ImageRecord]) -> PreparedBatch:
        """Decode, extract nouns and propose masks for ``records``; skipped images are counted."""
        stats, times = UnitStats(unit=-1), StageTimes()
        decoded: list[tuple[ImageRecord, np.ndarray]] = []
        with times("decode"):
            for record in records:
                stats.images += 1
                stats.captions += len(record.captions)
                try:
                    data = record.image_bytes
                    if data is None and record.image_url:
                        data = read_bytes(record.image_url, self.cfg.corpus.storage_options)
                    if data is None:
                        raise SkipSample("missing_image", record.key)
                    pixels = decode_image(data, max_pixels=self.cfg.run.max_image_pixels)
                    decoded.append((record, pixels, sha256_hex(data)))
                except SkipSample as skip:
                    stats.skip(skip.reason)
        with times("nouns"):
            per_caption = self.nouns.extract([c for r, *_ in decoded for c in r.captions])
        candidates: list[PreparedImage] = []
        pos = 0
        for record, pixels, digest in decoded:
            caption_of: dict[str, str] = {}
            for caption, nouns in zip(record.captions, per_caption[pos : pos + len(record.captions)]):
                for noun in nouns:
                    caption_of.setdefault(noun, caption)
            pos += len(record.captions)
            nouns = list(caption_of)[: self.cfg.nouns.max_nouns_per_image]
            stats.nouns += len(nouns)
            if not nouns:
                stats.skip("no_nouns" if record.captions else "no_captions")
                continue
            phash = perceptual_hash(pixels) if self.cfg.corpus.dedup == "phash" else None
            candidates.append(PreparedImage(record, pixels, nouns, caption_of, image_sha256=digest, phash=phash))
        with times("proposals"):  # one call for the batch: batched backends (maskformer) run one pass
            contexts = [ImageContext(item.record.key, item.record.image_id, item.record.meta.get("file_name"),
                                     item.record.meta) for item in candidates]
            batch_props = propose_batch(self.proposals, [item.pixels for item in candidates], contexts)
            prepared = [item for item, props in zip(candidates, batch_props) if self._filter(item, props, stats)]
        return PreparedBatch(prepared, stats, times.to_dict())

    def _filter(self, item: PreparedImage, props: Proposals, stats: UnitStats) -> bool:
        """Fill ``item``'s filtered proposals; False (and counted) when none is left to score."""
        pixels = item.pixels
        section = self.cfg.proposals
        index = select_proposals(props.masks, props.scores, max_keep=section.max_proposals)
        stats.proposals += len(index)
        masks = props.masks[index]
        if masks.dtype != torch.bool:
            masks = masks > self.cfg.crops.threshold
        areas = masks.flatten(1).sum(1)
        keep = areas > 0
        if not bool(keep.any()):
            stats.skip("no_proposals")
            return False
        height, width = pixels.shape[:2]
        min_area = max(float(self.cfg.matching.min_area), self.cfg.matching.min_area_frac * height * width)
        keep &= areas.float() >= min_area
        if not bool(keep.any()):  # what matching would reject: every noun lacks a large mask
            stats.rejected["no_large_mask"] += len(item.nouns)
            return False
        kept = select_proposals(masks, props.scores[index], keep=keep, iou_threshold=section.dedup_iou)
        item.masks, item.scores, item.proposal_index = masks[kept], props.scores[index][kept], index[kept]
        return True

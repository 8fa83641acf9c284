"""Mining one unit of work: records → nouns, proposals, crops, CLIP scores, pairs → a shard.

:class:`UnitMiner` holds the models (spaCy, proposal backend, CLIP with its text cache) and turns a
:class:`~pipelines.records.WorkUnit` into a committed ``pairs-%06d.tar`` plus its stats. CPU work
(reading, decoding, noun extraction) for the next batches runs in a background thread while the
current batch goes through the proposal model and CLIP. It has no Ray in it: Ray actors wrap it
(:mod:`pipelines.ray_runner`), and tests or notebooks can call it directly.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ovseg.clip import VILD_TEMPLATES, ClipBundle, TextEmbeddingCache, encode_images, load_clip
from ovseg.mpt_export import load_prompted_clip
from ovseg.crops import MEAN_FILL_255, masked_crops, normalize, to_uint8_image
from ovseg.matching import MatchParams, match_pairs
from ovseg.proposals import ImageContext, build_proposals, propose_batch
from ovseg.text import NounExtractor
from pipelines.corpus.base import build_reader
from pipelines.decode import load_record_image
from pipelines.mine_config import MineConfig
from pipelines.pair_format import PairMeta, pair_key, pair_sample
from pipelines.records import ImageRecord, SkipSample, WorkUnit
from pipelines.shards import ShardWriter, encode_jpeg, encode_png
from pipelines.stats import UnitStats

log = logging.getLogger(__name__)


@dataclass
class PreparedImage:
    """An image ready for model work: decoded pixels ``[H,W,3]`` uint8 and its nouns."""

    record: ImageRecord
    pixels: np.ndarray
    nouns: list[str]
    caption_of: dict[str, str] = field(default_factory=dict)  # noun → first caption naming it


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
    if cfg.proposals.backend == "maskformer":
        options.setdefault("checkpoint", cfg.proposals.checkpoint)
        options.setdefault("device", cfg.run.device)
    return build_proposals(cfg.proposals.backend, **options)


def load_scoring_clip(cfg: MineConfig, device: torch.device) -> tuple[ClipBundle, torch.nn.Module | None]:
    """The CLIP that scores crops, and its tuned mask prompt when ``clip.prompt`` is set.

    With a prompt (re-mining with the tuned CLIP), the CLIP is the one the prompt was exported
    with (``ovseg.mpt_export``), so a prompt always meets the tower it was trained on.
    """
    if not cfg.clip.prompt:
        return load_clip(cfg.clip.model, cfg.clip.pretrained, cfg.clip.checkpoint, device=device,
                         precision=cfg.clip.precision), None
    prompted, bundle = load_prompted_clip(cfg.clip.prompt, load_clip, device=str(device))
    prompted.eval()
    bundle.model = prompted.clip
    if bundle.name != cfg.clip.model:
        log.warning("clip.prompt was tuned on %s; clip.model=%s is ignored", bundle.name, cfg.clip.model)
    return bundle, prompted.prompt


def _read_under(root: str, storage_options: dict[str, Any], name: str) -> bytes:
    import fsspec

    with fsspec.open(f"{root}/{name}", "rb", **storage_options) as f:
        return f.read()


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class UnitMiner:
    """Holds the models and mines units. Build once per worker; call :meth:`mine_unit` per unit."""

    def __init__(self, cfg: MineConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.run.device)
        self.reader = build_reader(cfg.corpus)
        self.nouns = NounExtractor(
            pipeline=cfg.nouns.pipeline,
            fallbacks=tuple(cfg.nouns.fallbacks),
            extra_stop_words=tuple(cfg.nouns.extra_stop_words),
        )
        self.proposals = build_proposal_backend(cfg)
        torch.manual_seed(cfg.run.seed)  # random-init models are identical in every actor and run
        self.clip, self.prompt = load_scoring_clip(cfg, self.device)
        templates = VILD_TEMPLATES if cfg.clip.templates == "vild" else ("a photo of a {}.",)
        self.text_cache = TextEmbeddingCache(self.clip, templates)
        self.crop_size = cfg.output.crop_size or self.clip.image_size
        self.fill = MEAN_FILL_255 if cfg.crops.fill == "mean" else (0.0, 0.0, 0.0)
        self.match = MatchParams(min_score=cfg.matching.min_score, min_area=cfg.matching.min_area,
                                 min_area_frac=cfg.matching.min_area_frac, min_margin=cfg.matching.min_margin)

    # ------------------------------------------------------------------ CPU side
    def _prepare(self, records: list[ImageRecord], stats: UnitStats) -> list[PreparedImage]:
        """Decode images and extract nouns for a batch; skipped images are counted."""
        decoded: list[tuple[ImageRecord, np.ndarray]] = []
        for record in records:
            stats.images += 1
            stats.captions += len(record.captions)
            try:
                decoded.append((record, load_record_image(record, self.cfg.run.max_image_pixels,
                                                          self.cfg.corpus.storage_options)))
            except SkipSample as skip:
                stats.skip(skip.reason)
        per_caption = self.nouns.extract([c for r, _ in decoded for c in r.captions])
        prepared, pos = [], 0
        for record, pixels in decoded:
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
            prepared.append(PreparedImage(record, pixels, nouns, caption_of))
        return prepared

    def _batches(self, unit: WorkUnit, stats: UnitStats) -> Iterator[list[PreparedImage]]:
        """Prepared batches of a unit, produced ``prefetch_batches`` ahead in a thread."""
        size = self.cfg.run.images_per_batch

        def produce() -> Iterator[list[PreparedImage]]:
            batch: list[ImageRecord] = []
            for record in self.reader.read_unit(unit, stats.skipped):
                batch.append(record)
                if len(batch) == size:
                    yield self._prepare(batch, stats)
                    batch = []
            if batch:
                yield self._prepare(batch, stats)

        if self.cfg.run.prefetch_batches == 0:
            yield from produce()
            return
        q: queue.Queue = queue.Queue(maxsize=self.cfg.run.prefetch_batches)
        done = object()

        def worker() -> None:
            try:
                for item in produce():
                    q.put(item)
            except BaseException as err:  # re-raised in the consumer thread
                q.put(err)
            finally:
                q.put(done)

        thread = threading.Thread(target=worker, name=f"prefetch-{unit.index}", daemon=True)
        thread.start()
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()

    # ------------------------------------------------------------------ model side
    def _score_batch(self, batch: list[PreparedImage], stats: UnitStats, writer: ShardWriter, *,
                     unit: WorkUnit) -> None:
        """Proposals, crops and CLIP scores for a batch; accepted pairs are written."""
        per_image = []
        contexts = [ImageContext(item.record.key, item.record.image_id, item.record.meta.get("file_name"),
                                 item.record.meta) for item in batch]
        batch_props = propose_batch(self.proposals, [item.pixels for item in batch], contexts)
        for item, props in zip(batch, batch_props):
            if len(props) > self.cfg.proposals.max_proposals:
                keep = props.scores.argsort(descending=True, stable=True)[: self.cfg.proposals.max_proposals]
                props.masks, props.scores = props.masks[keep], props.scores[keep]
            stats.proposals += len(props)
            pixels = item.pixels if item.pixels.flags.writeable else item.pixels.copy()
            image_t = torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)
            crops = masked_crops(image_t, props.masks.to(self.device), self.clip.image_size, fill=self.fill,
                                 threshold=self.cfg.crops.threshold, expand_ratio=self.cfg.crops.expand_ratio)
            if crops.crops.shape[0] == 0:
                stats.skip("no_proposals")
                continue
            per_image.append((item, props, crops, image_t))
        if not per_image:
            return
        all_crops = torch.cat([c.crops for _, _, c, _ in per_image])
        all_masks = torch.cat([c.masks for _, _, c, _ in per_image]) if self.prompt is not None else None
        feats = encode_images(self.clip, normalize(all_crops, self.clip.mean, self.clip.std),
                              self.cfg.clip.batch_size, masks=all_masks, prompt=self.prompt)
        nouns = sorted({n for item, *_ in per_image for n in item.nouns})
        text = dict(zip(nouns, self.text_cache.embed(nouns)))
        start = 0
        for item, props, crops, image_t in per_image:
            n = crops.crops.shape[0]
            img_feats = feats[start : start + n]
            start += n
            sim = torch.stack([text[noun] for noun in item.nouns]) @ img_feats.T  # [K,N]
            pairs, rejected = match_pairs(sim, item.nouns, crops.areas.cpu(), params=self.match,
                                          image_area=item.pixels.shape[0] * item.pixels.shape[1])
            stats.rejected.update(rejected)
            valid_index = crops.valid.nonzero().flatten().tolist()
            for pair in pairs:
                self._write_pair(writer, unit, item, props=props, crops=crops, image_t=image_t,
                                 valid_index=valid_index, pair=pair)
                stats.add_pair(pair.noun, pair.score)

    def _write_pair(self, writer, unit, item, *, props, crops, image_t, valid_index, pair) -> None:
        crop, mask = crops.crops[pair.mask_index], crops.masks[pair.mask_index, 0]
        if self.crop_size != self.clip.image_size:
            one = masked_crops(image_t, props.masks[valid_index[pair.mask_index]][None].to(image_t.device),
                               self.crop_size, fill=self.fill, threshold=self.cfg.crops.threshold,
                               expand_ratio=self.cfg.crops.expand_ratio)
            crop, mask = one.crops[0], one.masks[0, 0]
        box = [int(v) for v in crops.boxes[pair.mask_index].tolist()]
        meta = PairMeta(
            noun=pair.noun, score=pair.score, runner_up_noun=pair.runner_up_noun,
            runner_up_score=pair.runner_up_score, margin=pair.margin,
            caption=item.caption_of.get(pair.noun), image_key=item.record.key,
            image_id=item.record.image_id, source_url=item.record.source_url or item.record.image_url,
            box=box, area=pair.area, image_size=list(item.pixels.shape[:2]),
            proposal_backend=self.cfg.proposals.backend, proposal_index=valid_index[pair.mask_index],
            proposal_score=float(props.scores[valid_index[pair.mask_index]]), unit=unit.index,
            clip_model=self.clip.name, clip_prompt=self.cfg.clip.prompt,
        )
        writer.write(pair_sample(
            key=pair_key(unit.index, item.record.key, pair.noun_index),
            jpg=encode_jpeg(to_uint8_image(crop.cpu()).numpy(), self.cfg.output.jpeg_quality),
            png=encode_png(mask.cpu().numpy().astype(np.uint8) * 255),
            meta=meta,
        ))

    def mine_unit(self, unit: WorkUnit) -> dict[str, Any]:
        """Mine ``unit`` into its shard and commit it; returns the committed stats."""
        started = time.time()
        stats = UnitStats(unit=unit.index, source=unit.source)
        with ShardWriter(self.cfg.output.url, unit.index, self.cfg.output.storage_options) as writer:
            for batch in self._batches(unit, stats):
                try:
                    self._score_batch(batch, stats, writer, unit=unit)
                except (RuntimeError, ValueError) as err:  # a bad batch must not sink the shard
                    log.exception("unit %d: batch of %d images failed", unit.index, len(batch))
                    stats.skip(f"error_{type(err).__name__}", len(batch))
            result = stats.to_dict()
            finished = time.time()
            result.update(seconds=finished - started, started=started, finished=finished,
                          worker=f"{socket.gethostname()}:{os.getpid()}", device=str(self.device))
            writer.commit(result)
        # where this worker wrote it, as its file system sees it (the driver checks it is there)
        return dict(result, pairs_written=writer.count, output=writer.fs.unstrip_protocol(writer.path))

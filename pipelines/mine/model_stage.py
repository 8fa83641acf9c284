"""Mining one unit of work: records → nouns, proposals, crops, CLIP scores, pairs → a shard.

:class:`UnitMiner` turns a :class:`~pipelines.records.WorkUnit` into a committed ``pairs-%06d.tar``
plus its stats. The CPU stage (:class:`pipelines.mine.cpu_stage.CpuStage`: decoding, spaCy, proposals and
their filtering) prepares batches ahead, bounded by ``run.prefetch_batches``, either in a thread
here or in Ray CPU workers (``submit``/``resolve`` given by :mod:`pipelines.mine.driver`); the model
stage here cuts the crops of a whole batch, encodes them in one pass of the image tower, matches
them against cached noun embeddings and writes the pairs. Batches are consumed in reading order,
so the shard is the same wherever the CPU stage ran. Seconds per stage, and how long the model
stage waited for a batch, go into the unit's stats (``timing``). No Ray in this module.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ovseg.clip import ClipBundle, templates_named, TextEmbeddingCache, encode_images, load_clip
from ovseg.mpt_export import load_prompted_clip
from ovseg.crops import MEAN_FILL_255, context_masks, masked_crops, normalize, to_uint8_image
from ovseg.crops_batched import masked_crops_batched
from ovseg.matching import match_pairs
from pipelines.corpus.base import build_reader
from pipelines.mine.config import MineConfig
from pipelines.mine.cpu_stage import CpuStage, DuplicateFilter, PreparedBatch, PreparedImage, merge_stats
from pipelines.mine.kept_images import ImageKeeper, images_url_of
from pipelines.mine.provenance import file_hash, noun_location, state_dict_hash
from pipelines.pairs.format import (CANDIDATES_NAME, INDEX_NAME, PairMeta, index_bytes, index_row, mask_to_rle,
                                    pair_key, pair_sample)
from pipelines.records import ImageRecord, WorkUnit
from pipelines.pairs.writer import ShardWriter, encode_jpeg, encode_png
from pipelines.mine.stage_times import StageTimes
from pipelines.mine.stats import UnitStats

log = logging.getLogger(__name__)


def load_scoring_clip(cfg: MineConfig, device: torch.device) -> tuple[ClipBundle, torch.nn.Module | None]:
    """The CLIP that scores crops, and its tuned mask prompt when ``clip.prompt`` is set.

    With a prompt (re-mining with the tuned CLIP), the CLIP is the one the prompt was exported
    with (``ovseg.mpt_export``), so a prompt always meets the tower it was trained on.
    """
    if not cfg.clip.prompt:
        return cfg.clip.load(device=device, precision=cfg.clip.precision), None
    prompted, bundle = load_prompted_clip(cfg.clip.prompt, load_clip, device=str(device))
    prompted.eval()
    bundle.model = prompted.clip
    if bundle.name != cfg.clip.model:
        log.info("clip.prompt was tuned on %s; clip.model=%s is ignored", bundle.name, cfg.clip.model)
    return bundle, prompted.prompt


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


#: Hands a batch of records to the CPU stage and returns a handle (the batch itself, or a future).
Submit = Callable[[list[ImageRecord]], Any]
#: Turns a handle from :data:`Submit` into the prepared batch (blocking).
Resolve = Callable[[Any], PreparedBatch]


class UnitMiner:
    """Holds the models and mines units. Build once per worker; call :meth:`mine_unit` per unit.

    Args:
        cfg: the mining config.
        submit / resolve: where the CPU stage runs. Default: a :class:`CpuStage` in this process
            (a thread ahead of the model when ``run.prefetch_batches > 0``); Ray CPU workers pass
            their own pair (the CPU stage's models are then not built here).
    """

    def __init__(self, cfg: MineConfig, *, submit: Submit | None = None, resolve: Resolve | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.run.device)
        self.reader = build_reader(cfg.corpus)
        self.cpu: CpuStage | None = None
        if submit is None:
            self.cpu = CpuStage(cfg)
            submit, resolve = self.cpu.prepare, (lambda batch: batch)
        self.submit, self.resolve = submit, resolve or (lambda batch: batch)
        torch.manual_seed(cfg.run.seed)  # random-init models are identical in every actor and run
        self.clip, self.prompt = load_scoring_clip(cfg, self.device)
        self.cut = masked_crops
        if self.device.type == "cuda":  # convolution stems run faster on NHWC with cuDNN
            self.clip.model.to(memory_format=torch.channels_last)
        if cfg.crops.impl == "batched" or (cfg.crops.impl == "auto" and self.device.type == "cuda"):
            self.cut = masked_crops_batched  # a few kernels per image instead of five per mask
        self.text_cache = TextEmbeddingCache(self.clip, templates_named(cfg.clip.templates))
        self.crop_size = cfg.output.crop_size or self.clip.image_size
        self.fill = MEAN_FILL_255 if cfg.crops.fill == "mean" else (0.0, 0.0, 0.0)
        self.match = cfg.matching
        self._index_rows: list[dict[str, Any]] = []
        self._candidates: list[dict[str, Any]] = []
        storage = cfg.corpus.storage_options
        self.hashes = {  # provenance of every pair: which weights scored and proposed it
            "clip_hash": file_hash(cfg.clip.checkpoint, storage) if cfg.clip.checkpoint and not cfg.clip.prompt
            else state_dict_hash(self.clip.model),
            "prompt_hash": file_hash(cfg.clip.prompt, storage),
            "proposal_hash": file_hash(cfg.proposals.checkpoint, storage) if cfg.proposals.backend == "maskformer"
            else None,
        }

    # ------------------------------------------------------------------ CPU side
    def _record_batches(self, unit: WorkUnit, skips: Counter, times: StageTimes, *,
                        keep: ImageKeeper | None = None) -> Iterator[list[ImageRecord]]:
        size, batch = self.cfg.run.images_per_batch, []
        records = iter(self.reader.read_unit(unit, skips))
        while True:
            with times("read"):
                record = next(records, None)
            if record is None:
                break
            if keep is not None:
                keep.add(record)
            batch.append(record)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _batches(self, unit: WorkUnit, skips: Counter, times: StageTimes, *,
                 keep: ImageKeeper | None = None) -> Iterator[PreparedBatch]:
        """Prepared batches of a unit in reading order; the CPU stage runs up to
        ``run.prefetch_batches`` ahead of the model. Waiting for a batch counts as ``wait``."""
        if self.cfg.run.prefetch_batches == 0:
            for records in self._record_batches(unit, skips, times, keep=keep):
                with times("wait"):
                    batch = self.resolve(self.submit(records))
                yield batch
            return
        q: queue.Queue = queue.Queue(maxsize=self.cfg.run.prefetch_batches)
        done = object()
        read_times = StageTimes()

        def worker() -> None:
            try:
                for records in self._record_batches(unit, skips, read_times, keep=keep):
                    q.put(self.submit(records))
            except BaseException as err:  # re-raised in the consumer thread
                q.put(err)
            finally:
                q.put(done)

        thread = threading.Thread(target=worker, name=f"prefetch-{unit.index}", daemon=True)
        thread.start()
        while True:
            with times("wait"):
                item = q.get()
                if item is not done and not isinstance(item, BaseException):
                    item = self.resolve(item)
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()
        times.merge(read_times)

    # ------------------------------------------------------------------ model side
    def _score_batch(self, batch: list[PreparedImage], stats: UnitStats, writer: ShardWriter, *,
                     unit: WorkUnit, times: StageTimes) -> None:
        """Crops, CLIP scores and matching for a batch; accepted pairs are written."""
        per_image = []
        with times("crops"):
            for item in batch:
                pixels = item.pixels if item.pixels.flags.writeable else item.pixels.copy()
                image_t = torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)
                masks = item.masks.to(self.device)
                crops = self.cut(image_t, masks, self.clip.image_size, fill=self.fill,
                                 threshold=self.cfg.crops.threshold, expand_ratio=self.cfg.crops.expand_ratio)
                context = None
                if self.cfg.crops.views == "tight+context":  # the expanded box, surroundings kept
                    context = self.cut(image_t, context_masks(masks, self.cfg.crops.context_ratio,
                                                              threshold=self.cfg.crops.threshold),
                                       self.clip.image_size, fill=self.fill)
                per_image.append((item, crops, image_t, context))
            views = [[c for _, c, _, _ in per_image]]
            if self.cfg.crops.views == "tight+context":
                views.append([c for *_, c in per_image])
            all_crops = torch.cat([c.crops for c in views[0]])
        feats_per_view = []
        for view in views:
            with times("crops"):
                view_masks = torch.cat([c.masks for c in view]) if self.prompt is not None else None
                normalized = normalize(torch.cat([c.crops for c in view]), self.clip.mean, self.clip.std)
            with times("clip"), self._autocast():
                feats_per_view.append(encode_images(self.clip, normalized, self.cfg.clip.batch_size,
                                                    masks=view_masks, prompt=self.prompt))
        with times("text"):
            nouns = sorted({n for item, *_ in per_image for n in item.nouns})
            text = dict(zip(nouns, self.text_cache.embed(nouns)))
        start = 0
        for item, crops, image_t, _ in per_image:
            n = crops.crops.shape[0]
            with times("matching"):
                nouns_t = torch.stack([text[noun] for noun in item.nouns])  # [K,D]
                per_view = [nouns_t @ f[start : start + n].T for f in feats_per_view]  # each [K,N]
                sim = torch.stack(per_view).mean(0)  # the views' similarities averaged
                pairs, rejected = match_pairs(sim, item.nouns, crops.areas.cpu(), params=self.match,
                                              image_area=item.pixels.shape[0] * item.pixels.shape[1])
                if len(per_view) > 1:
                    for pair in pairs:
                        pair.evidence["view_scores"] = [float(v[pair.noun_index, pair.mask_index]) for v in per_view]
            start += n
            stats.rejected.update(rejected)
            with times("writing"):
                if self.cfg.output.candidates:
                    self._candidates.append(self._candidate_record(item, sim, crops.areas))
                for pair in pairs:
                    self._write_pair(writer, unit, item, crops=crops, image_t=image_t, pair=pair)
                    stats.add_pair(pair.noun, pair.score)
        stats.crops += int(all_crops.shape[0])

    def _candidate_record(self, item: PreparedImage, sim: torch.Tensor, areas: torch.Tensor) -> dict[str, Any]:
        """One image's line of the candidates file: nouns, masks (RLE), areas and the [K,N] similarities."""
        return {"image_key": item.record.key, "image_id": item.record.image_id,
                "image_size": list(item.pixels.shape[:2]), "nouns": list(item.nouns),
                "proposal_index": [int(v) for v in item.proposal_index.tolist()],
                "areas": [int(v) for v in areas.tolist()],
                "sim": [[round(float(v), 5) for v in row] for row in sim.float().cpu().tolist()],
                "masks": [mask_to_rle(m) for m in item.masks.cpu()]}

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The image tower's autocast context (``clip.autocast``); a no-op when off."""
        setting = self.cfg.clip.autocast
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(setting)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _write_pair(self, writer, unit, item, *, crops, image_t, pair) -> None:
        crop, mask = crops.crops[pair.mask_index], crops.masks[pair.mask_index, 0]
        if self.crop_size != self.clip.image_size:
            one = masked_crops(image_t, item.masks[pair.mask_index][None].to(image_t.device),
                               self.crop_size, fill=self.fill, threshold=self.cfg.crops.threshold,
                               expand_ratio=self.cfg.crops.expand_ratio)
            crop, mask = one.crops[0], one.masks[0, 0]
        box = [int(v) for v in crops.boxes[pair.mask_index].tolist()]
        caption = item.caption_of.get(pair.noun)
        caption_index = item.record.captions.index(caption) if caption in item.record.captions else None
        span = noun_location(pair.noun, [caption])[1] if caption else None
        meta = PairMeta(
            noun=pair.noun, score=pair.score, runner_up_noun=pair.runner_up_noun,
            runner_up_score=pair.runner_up_score, margin=pair.margin,
            caption=item.caption_of.get(pair.noun), image_key=item.record.key,
            image_id=item.record.image_id, source_url=item.record.source_url or item.record.image_url,
            box=box, area=pair.area, image_size=list(item.pixels.shape[:2]),
            proposal_backend=self.cfg.proposals.backend, proposal_index=int(item.proposal_index[pair.mask_index]),
            proposal_score=float(item.scores[pair.mask_index]), unit=unit.index,
            clip_model=self.clip.name, clip_prompt=self.cfg.clip.prompt,
            strategy=pair.strategy, evidence=pair.evidence, candidates=pair.candidates,
            mask_rle=mask_to_rle(item.masks[pair.mask_index]), caption_index=caption_index, noun_span=span,
            image_sha256=item.image_sha256, **self.hashes, extra=item.record.meta.get("extra"),
        )
        key = pair_key(unit.index, item.record.key, pair.noun_index)
        self._index_rows.append(index_row(key, meta))
        writer.write(pair_sample(
            key=key,
            jpg=encode_jpeg(to_uint8_image(crop.cpu()).numpy(), self.cfg.output.jpeg_quality),
            png=encode_png(mask.cpu().numpy().astype(np.uint8) * 255),
            meta=meta,
        ))

    def mine_unit(self, unit: WorkUnit) -> dict[str, Any]:
        """Mine ``unit`` into its shard and commit it; returns the committed stats."""
        started = time.time()
        stats, times, read_skips = UnitStats(unit=unit.index, source=unit.source), StageTimes(), Counter()
        self._index_rows, self._candidates = [], []
        keep = (ImageKeeper(images_url_of(self.cfg.output.url, self.cfg.output.images_url), unit.index,
                            self.cfg.output.storage_options, max_side=self.cfg.output.keep_images_max_side)
                if self.cfg.output.keep_images else None)
        with ShardWriter(self.cfg.output.url, unit.index, self.cfg.output.storage_options) as writer, \
                _aborting(keep):
            duplicates = DuplicateFilter(self.cfg.corpus.dedup_max_distance) if self.cfg.corpus.dedup == "phash" else None
            for batch in self._batches(unit, read_skips, times, keep=keep):
                merge_stats(stats, batch.stats)
                times.merge(batch.times)
                if duplicates is not None:
                    kept = [item for item in batch.images if not duplicates.is_duplicate(item.phash)]
                    if len(kept) < len(batch.images):
                        stats.skip("duplicate_image", len(batch.images) - len(kept))
                    batch.images = kept
                if not batch.images:
                    continue
                try:
                    self._score_batch(batch.images, stats, writer, unit=unit, times=times)
                except (RuntimeError, ValueError) as err:  # a bad batch must not sink the shard
                    log.exception("unit %d: batch of %d images failed", unit.index, len(batch.images))
                    stats.skip(f"error_{type(err).__name__}", len(batch.images))
            stats.skipped.update(read_skips)
            result = stats.to_dict()
            finished = time.time()
            result.update(seconds=finished - started, started=started, finished=finished, timing=times.to_dict(),
                          worker=f"{socket.gethostname()}:{os.getpid()}", device=str(self.device))
            writer.add_side_file(INDEX_NAME.format(unit.index), index_bytes(self._index_rows))
            if self.cfg.output.candidates:
                lines = "".join(json.dumps(c) + "\n" for c in self._candidates).encode()
                writer.add_side_file(CANDIDATES_NAME.format(unit.index), gzip.compress(lines, mtime=0))
            if keep is not None:  # the images first: a committed pair shard always has them
                keep.commit(read_skips, finished - started)
            writer.commit(result)
        # where this worker wrote it, as its file system sees it (the driver checks it is there)
        return dict(result, pairs_written=writer.count, output=writer.fs.unstrip_protocol(writer.path))


@contextlib.contextmanager
def _aborting(keep: ImageKeeper | None) -> Iterator[None]:
    """Drop the partial kept-images tar when the unit fails."""
    try:
        yield
    except BaseException:
        if keep is not None:
            keep.abort()
        raise

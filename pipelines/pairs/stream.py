"""Training stream over (masked crop, noun) pair shards (format: :mod:`pipelines.pairs.format`).

A *source* is a string naming shards, several joined by ``::`` (:func:`pipelines.pairs.format.shard_urls`):

* a brace pattern ``out/pairs/pairs-{000000..000031}.tar`` (also ``s3://bucket/pairs-{0..9}.tar``),
* a folder (local or fsspec URL) -> every committed ``pairs-*.tar`` in it, sorted,
* a glob ``out/*/pairs-*.tar`` or a single shard URL.

:class:`PairStream` mixes several sources with weights, splits the work across ranks and data
loader workers, shuffles (shard order per pass + a sample buffer), decodes and batches inside the
worker. Bad samples (missing fields, undecodable images, empty masks/nouns, broken shards) are
skipped and counted; every batch carries the skip counts of its worker since the previous batch.

Splitting: a source with at least as many shards as consumers (``world_size * workers``) gives each
consumer every n-th shard of a shuffled order; a source with fewer shards is read whole by every
consumer, which keeps every n-th sample (so small smoke sets still split without overlap).
"""
from __future__ import annotations

import collections
import io
import logging
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipelines.pairs.format import iter_tar, read_sizes, shard_urls
from pipelines.records import SkipSample

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("jpg", "png", "txt")  # members of pipelines.pairs.format.MEMBERS that tuning needs


@dataclass(frozen=True, kw_only=True)
class PairSource:
    """Shards of one dataset and its mixing weight (relative, > 0)."""

    shards: tuple[str, ...]
    weight: float = 1.0
    num_samples: int | None = None  # from sizes.json; None when unknown
    storage_options: dict | None = field(default=None, hash=False, compare=False)  # fsspec options of the shards' file system
    keys: frozenset[str] | None = field(default=None, hash=False, compare=False)  # only these pairs (a filter); None = all


def make_source(spec: str, weight: float = 1.0, storage_options: Optional[dict] = None, *,
                filter: Optional[str] = None) -> PairSource:
    """Expand ``spec`` and count its samples from ``sizes.json`` (None if any shard is unknown).

    With ``filter`` (:mod:`pipelines.pairs.select`'s grammar) only the pairs whose index row it keeps
    are streamed and counted; every shard then needs its parquet index, checked against its marker.
    """
    if not weight > 0:
        raise ValueError(f"mixing weight must be > 0, got {weight} for {spec!r}")
    shards = tuple(shard_urls(spec, storage_options))
    if filter:
        keys = filtered_keys(shards, filter, storage_options)
        if not keys:
            raise ValueError(f"filter {filter!r} keeps no pair of {spec!r}")
        return PairSource(shards=shards, weight=weight, num_samples=len(keys), storage_options=storage_options or None,
                          keys=frozenset(keys))
    sizes = read_sizes(shards, storage_options)
    total = sum(sizes.values()) if len(sizes) == len(shards) else None
    if total is None:
        log.warning("%d of %d shards of %s have no size", len(shards) - len(sizes), len(shards), spec)
    return PairSource(shards=shards, weight=weight, num_samples=total, storage_options=storage_options or None)


def filtered_keys(shards: Sequence[str], expression: str, storage_options: Optional[dict] = None) -> set[str]:
    """Keys of the pairs of ``shards`` that ``expression`` keeps, read from their parquet indexes."""
    from pipelines.pairs.format import read_index, shard_index
    from pipelines.pairs.select import compile_filter
    from pipelines.storage.urls import basename, parent_url

    keep = compile_filter(expression)
    keys: set[str] = set()
    for url in shards:
        unit = shard_index(basename(url))
        if unit is None:
            raise ValueError(f"{url}: data.filter needs shards named like pairs-000000.tar with their index")
        table = read_index(parent_url(url), unit, storage_options)
        keys.update(table.filter(keep(table)).column("key").to_pylist())
    return keys


# ----------------------------------------------------------------------------- samples
def decode_pair(
    sample: dict, image_size: int, *, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Decode one pair sample.

    Returns:
        image ``[3,S,S]`` float normalised with ``mean/std``, mask ``[1,S,S]`` bool, noun.

    Raises:
        SkipSample: ``missing_field``, ``empty_noun``, ``corrupt_image``, ``corrupt_mask``,
            ``size_mismatch`` or ``empty_mask``.
    """
    if any(not sample.get(f) for f in REQUIRED_FIELDS):
        raise SkipSample("missing_field")
    try:
        noun = sample["txt"].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SkipSample("empty_noun") from None
    if not noun:
        raise SkipSample("empty_noun")
    try:
        img = Image.open(io.BytesIO(sample["jpg"]))
        img = img.convert("RGB")
    except Exception:  # PIL raises many types on garbage
        raise SkipSample("corrupt_image") from None
    try:
        mask = Image.open(io.BytesIO(sample["png"]))
        mask = mask.convert("L")
    except Exception:
        raise SkipSample("corrupt_mask") from None
    if img.size != mask.size:
        raise SkipSample("size_mismatch")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BICUBIC)
        mask = mask.resize((image_size, image_size), Image.NEAREST)
    mask_t = torch.from_numpy(np.asarray(mask) > 127).unsqueeze(0)
    if not mask_t.any():
        raise SkipSample("empty_mask")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x.contiguous(), mask_t, noun


def in_holdout(key: str, percent: float) -> bool:
    """Deterministic held-out split by key: ``crc32(key) % 10000 < percent * 100``."""
    return zlib.crc32(key.encode("utf-8")) % 10000 < percent * 100


# ----------------------------------------------------------------------------- stream
class PairStream(IterableDataset):
    """Batches of decoded pairs for one rank (use with ``DataLoader(batch_size=None)``).

    Each item: ``{"images": [B,3,S,S] float, "masks": [B,1,S,S] bool, "nouns": list[str],
    "keys": list[str], "skips": dict[str,int]}``.

    Args:
        sources: datasets to mix; with ``infinite`` every source cycles forever (reshuffled each
            pass) and each sample is drawn from a source chosen by weight; without, sources are read
            once in order (evaluation), with no shuffling.
        batch_size: per-rank batch size; the last finite batch may be smaller.
        image_size / mean / std: decoding (see :func:`decode_pair`).
        rank / world_size: this process among the trainers.
        seed: shuffling seed.
        skip_batches: batches of the loader to pass over first (a resumed run continues the exact
            order of an uninterrupted one); with data loader workers, batch ``i`` is worker
            ``i % workers``'s, so each worker skips its share. Skipped samples are still read.
        shuffle_buffer: samples held for shuffling (0 = off).
        holdout_percent / split: keep ``"train"`` (not held out), ``"eval"`` (held out) or
            ``"all"`` samples.
    """

    def __init__(
        self,
        sources: Sequence[PairSource],
        batch_size: int,
        image_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        infinite: bool = True,
        holdout_percent: float = 0.0,
        split: str = "all",
        skip_batches: int = 0,
    ) -> None:
        super().__init__()
        if split not in ("train", "eval", "all"):
            raise ValueError(f"split must be train | eval | all, got {split!r}")
        if not sources or any(not s.shards for s in sources):
            raise ValueError("every source needs at least one shard")
        self.sources = list(sources)
        self.batch_size = batch_size
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer = shuffle_buffer if infinite else 0
        self.infinite = infinite
        self.holdout_percent, self.split = holdout_percent, split
        self.skip_batches = skip_batches

    def _consumer(self) -> tuple[int, int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers, worker

    def _keep(self, key: str) -> bool:
        if self.split == "all" or self.holdout_percent <= 0:
            return self.split != "eval"
        return in_holdout(key, self.holdout_percent) == (self.split == "eval")

    def _raw(self, index: int, skips: collections.Counter) -> Iterator[dict]:
        """Raw samples of source ``index`` for this consumer, pass after pass."""
        source = self.sources[index]
        consumer, n_consumers, _ = self._consumer()
        n_pass = 0
        while True:
            shards = list(source.shards)
            if self.infinite:
                random.Random(f"{self.seed}/{index}/{n_pass}").shuffle(shards)  # same on all consumers
            by_shard = len(shards) >= n_consumers
            mine = shards[consumer::n_consumers] if by_shard else shards
            position = yielded = 0
            for url in mine:
                for sample in iter_tar(url, skips, source.storage_options):
                    position += 1
                    if not by_shard and (position - 1) % n_consumers != consumer:
                        continue
                    if source.keys is not None and sample["__key__"] not in source.keys:
                        continue
                    if self._keep(sample["__key__"]):
                        yielded += 1
                        yield sample
            n_pass += 1
            if not self.infinite:
                return
            if yielded == 0:
                raise RuntimeError(
                    f"source {index} ({source.shards[0]}, ...) has no {self.split} samples for "
                    f"consumer {consumer} of {n_consumers}"
                )

    def _mixed(self, skips: collections.Counter, rng: random.Random) -> Iterator[dict]:
        streams = {i: self._raw(i, skips) for i in range(len(self.sources))}
        if not self.infinite:
            for stream in streams.values():
                yield from stream
            return
        indices = list(streams)
        weights = [self.sources[i].weight for i in indices]
        while True:
            i = rng.choices(indices, weights)[0]
            yield next(streams[i])

    def _shuffled(self, samples: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: list[dict] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], sample = sample, buffer[j]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict]:
        consumer, _, worker = self._consumer()
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        to_skip = max(0, -(-(self.skip_batches - worker) // workers))  # batches worker, worker + workers, ...
        for batch in self._batches(consumer):
            if to_skip:
                to_skip -= 1
                continue
            yield batch

    def _batches(self, consumer: int) -> Iterator[dict]:
        rng = random.Random(f"{self.seed}/consumer{consumer}")
        skips: collections.Counter = collections.Counter()
        images, masks, nouns, keys = [], [], [], []
        for sample in self._shuffled(self._mixed(skips, rng), rng):
            try:
                image, mask, noun = decode_pair(sample, self.image_size, mean=self.mean, std=self.std)
            except SkipSample as err:
                skips[err.reason] += 1
                continue
            images.append(image)
            masks.append(mask)
            nouns.append(noun)
            keys.append(sample["__key__"])
            if len(images) == self.batch_size:
                yield _batch(images, masks, nouns, keys=keys, skips=skips)
                images, masks, nouns, keys = [], [], [], []
                skips.clear()  # the same Counter: the shard readers count into it too
        if images or skips:
            yield _batch(images, masks, nouns, keys=keys, skips=skips)


def _batch(images, masks, nouns, *, keys, skips) -> dict:
    if images:
        img, msk = torch.stack(images), torch.stack(masks)
    else:
        img, msk = torch.zeros(0, 3, 1, 1), torch.zeros(0, 1, 1, 1, dtype=torch.bool)
    return {"images": img, "masks": msk, "nouns": list(nouns), "keys": list(keys), "skips": dict(skips)}


def make_loader(stream: PairStream, workers: int = 0) -> DataLoader:
    """A ``DataLoader`` over a :class:`PairStream` (batching happens in the stream)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )


def epoch_samples(sources: Sequence[PairSource], holdout_percent: float = 0.0) -> int | None:
    """Training samples per epoch: the sum of the sources' sizes minus the held-out share."""
    if any(s.num_samples is None for s in sources):
        return None
    total = sum(int(s.num_samples or 0) for s in sources)
    return int(math.floor(total * (1.0 - holdout_percent / 100.0)))

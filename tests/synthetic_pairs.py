"""Synthetic pair shards in the mining output format (tests, benchmarks, offline smoke runs).

Each pair is a mean-filled S×S crop with one random ellipse-like blob whose colour identifies the
noun (plus noise), its mask, the noun and a metadata json; shards are committed with the same
writer and the same :class:`~pipelines.pairs.format.PairMeta` the mining job uses, so readers see
exactly what ``jobs/mine.py`` writes (format: :mod:`pipelines.pairs.format`).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from pipelines.pairs.format import PairMeta, pair_key, pair_sample
from pipelines.pairs.writer import ShardWriter, encode_jpeg, encode_png, write_sizes

log = logging.getLogger(__name__)

DEFAULT_NOUNS = ("cat", "dog", "car", "tree", "person", "sky", "road", "chair")
MEAN_RGB = (122, 116, 104)  # CLIP mean * 255


def _pair(rng: np.random.Generator, size: int, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One crop ``[S,S,3]`` uint8 and its mask ``[S,S]`` uint8 (255 inside)."""
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    ry, rx = rng.uniform(0.15, 0.45, 2) * size
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    crop = np.empty((size, size, 3), np.float32)
    crop[:] = MEAN_RGB
    noise = rng.normal(0, 12, (size, size, 3))
    crop[inside] = colour + noise[inside]
    return np.clip(crop, 0, 255).astype(np.uint8), inside.astype(np.uint8) * 255


def write_synthetic_pairs(
    out_url: str,
    n_shards: int = 2,
    per_shard: int = 32,
    *,
    size: int = 64,
    nouns: Sequence[str] = DEFAULT_NOUNS,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``n_shards`` committed pair shards under ``out_url``; returns ``sizes.json``'s content."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(1234).uniform(0, 255, (len(nouns), 3))
    stats: dict[int, dict] = {}
    for unit in range(n_shards):
        with ShardWriter(out_url, unit) as writer:
            for k in range(per_shard):
                label = int(rng.integers(len(nouns)))
                crop, mask = _pair(rng, size, palette[label])
                image_key = f"img{unit:03d}{k // 4:04d}"
                meta = PairMeta(
                    noun=nouns[label], score=0.3, runner_up_noun=None, runner_up_score=None,
                    margin=None, caption=f"a {nouns[label]}", image_key=image_key, image_id=None,
                    source_url=None, box=[0, 0, size, size], area=int((mask > 0).sum()),
                    image_size=[size, size], proposal_backend="synthetic", proposal_index=k % 4,
                    proposal_score=1.0, unit=unit, clip_model="synthetic",
                )
                writer.write(pair_sample(key=pair_key(unit, image_key, k % 4), jpg=encode_jpeg(crop, quality=95),
                                         png=encode_png(mask), meta=meta))
            writer.commit({"unit": unit, "pairs": per_shard})
            stats[unit] = {"pairs_written": per_shard}
    sizes = write_sizes(out_url, stats)
    log.info("wrote %d synthetic shards (%d pairs) to %s", n_shards, n_shards * per_shard, out_url)
    return sizes

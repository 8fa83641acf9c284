"""Shared pieces of the throughput benchmarks: the world corpus, configs, the naive reference loop.

The naive reference is the straightforward loop the issue describes, on the very models of a
:class:`~pipelines.mine.model_stage.UnitMiner`: per image, decode, spaCy, proposals (top-k only), then per
mask one crop and one image-tower call of batch 1, the image's nouns re-encoded with a fresh text
cache, matching, writing; no prefetch, no filtering before CLIP. Both loops time their stages
with :class:`~pipelines.mine.stage_times.StageTimes`, so the breakdowns line up.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
os.chdir(REPO)  # the presets name repository files (assets/...) relative to the repository root

from ovseg.clip import TextEmbeddingCache, encode_images
from ovseg.crops import masked_crops, normalize
from ovseg.matching import match_pairs
from ovseg.proposals import ImageContext
from pipelines.config.load import load_config
from pipelines.corpus.decode import load_record_image
from pipelines.mine.config import MineConfig
from pipelines.mine.cpu_stage import PreparedImage
from pipelines.mine.model_stage import UnitMiner
from pipelines.records import SkipSample, WorkUnit
from pipelines.pairs.writer import ShardWriter
from pipelines.mine.stage_times import StageTimes

STAGES = ("read", "decode", "nouns", "proposals", "crops", "clip", "text", "matching", "writing", "wait")


def ensure_world(root: Path, images: int, *, size: int = 128, shard_size: int = 1000) -> Path:
    """A world corpus of ``images`` train images under ``root`` (generated when missing)."""
    from pipelines.world.generate import main as generate

    manifest = root / "world.json"
    if manifest.exists() and json.loads(manifest.read_text())["splits"]["train"]["images"] == images:
        return root
    generate(["--out", str(root), "--train", str(images), "--val", "0", "--size", str(size),
              "--shard-size", str(shard_size), "--formats", "coco,wds"])
    return root


def world_config(world: Path, out: Path, *overrides: str, config: str = "conf/world/mine.yaml") -> MineConfig:
    """The world mining config on ``world``'s COCO files, every image in one unit, writing to ``out``."""
    return load_config(MineConfig, str(REPO / config), [
        f"corpus.url={world}/coco/annotations/captions_train.json", f"corpus.images_url={world}/coco/train",
        "corpus.images_per_unit=100000000", f"output.url={out}", "output.overwrite=true",
        # the throughput references (bench/results/) were measured with superpixels and every pair kept
        "proposals.backend=superpixel", "matching.min_score=-1", *overrides])


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def summarize(stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Rates of one mined unit: images/s, scored crops/s, pairs and the stage seconds."""
    return {"seconds": seconds, "images": stats["images"], "crops": stats["crops"], "pairs": stats["pairs"],
            "images_per_s": stats["images"] / seconds, "crops_per_s": stats["crops"] / seconds,
            "timing": stats.get("timing", {})}


def mine_timed(miner: Any, unit: WorkUnit) -> dict[str, Any]:
    started = time.perf_counter()
    stats = miner.mine_unit(unit)
    return summarize(stats, time.perf_counter() - started)


class NaiveMiner:
    """The reference loop on ``miner``'s models (see the module docstring)."""

    def __init__(self, miner: UnitMiner) -> None:
        if miner.cpu is None:
            raise ValueError("the naive loop needs a UnitMiner with a local CPU stage")
        self.m = miner

    def mine_unit(self, unit: WorkUnit) -> dict[str, Any]:
        m, cfg, times = self.m, self.m.cfg, StageTimes()
        counts: Counter = Counter()
        skips: Counter = Counter()
        with ShardWriter(cfg.output.url, unit.index, cfg.output.storage_options) as writer:
            records = iter(m.reader.read_unit(unit, skips))
            while True:
                with times("read"):
                    record = next(records, None)
                if record is None:
                    break
                counts["images"] += 1
                try:
                    with times("decode"):
                        pixels = load_record_image(record, cfg.run.max_image_pixels, cfg.corpus.storage_options)
                except SkipSample:
                    continue
                with times("nouns"):
                    nouns = list(dict.fromkeys(n for ns in m.cpu.nouns.extract(record.captions) for n in ns))
                    nouns = nouns[: cfg.nouns.max_nouns_per_image]
                if not nouns:
                    continue
                self._image(record, pixels, nouns, times=times, counts=counts, writer=writer, unit=unit)
            writer.commit({"unit": unit.index, **counts})
        return {**counts, "timing": times.to_dict()}

    def _image(self, record, pixels, nouns, *, times, counts, writer, unit) -> None:
        m, cfg = self.m, self.m.cfg
        with times("proposals"):
            props = m.cpu.proposals(pixels, ImageContext(record.key, record.image_id, record.meta.get("file_name"),
                                                         record.meta))
            index = props.scores.argsort(descending=True, stable=True)[: cfg.proposals.max_proposals]
        image_t = torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(m.device)
        feats, areas, cut = [], [], []
        for i in index.tolist():
            with times("crops"):
                one = masked_crops(image_t, props.masks[i][None].to(m.device), m.clip.image_size, fill=m.fill,
                                   threshold=cfg.crops.threshold, expand_ratio=cfg.crops.expand_ratio)
            if one.crops.shape[0] == 0:
                continue
            with times("clip"):
                feats.append(encode_images(m.clip, normalize(one.crops, m.clip.mean, m.clip.std), 1))
            areas.append(one.areas)
            cut.append((i, one))
        if not feats:
            return
        counts["crops"] += len(feats)
        with times("text"):  # re-encoded for every image
            text = TextEmbeddingCache(m.clip, m.text_cache.templates).embed(nouns)
        with times("matching"):
            pairs, _ = match_pairs(text @ torch.cat(feats).T, nouns, torch.cat(areas).cpu(), params=m.match,
                                   image_area=pixels.shape[0] * pixels.shape[1])
        with times("writing"):
            item = PreparedImage(record, pixels, nouns, {}, props.masks[[i for i, _ in cut]],
                                 props.scores[[i for i, _ in cut]], torch.tensor([i for i, _ in cut]))
            crops = type(cut[0][1])(torch.cat([c.crops for _, c in cut]), torch.cat([c.masks for _, c in cut]),
                                    torch.cat([c.boxes for _, c in cut]), torch.ones(len(cut), dtype=torch.bool),
                                    torch.cat(areas))
            for pair in pairs:
                m._write_pair(writer, unit, item, crops=crops, image_t=image_t, pair=pair)
                counts["pairs"] += 1


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Rows as a markdown table; ``columns`` = (key, header, format)."""
    print("| " + " | ".join(h for _, h, _ in columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(format(row[k], f) if row.get(k) is not None else "-" for k, _, f in columns) + " |")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    print(f"wrote {path}")

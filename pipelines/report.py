"""The run report of a mining job: totals, throughput, top nouns, score histogram, contact sheet.

Written next to the shards: ``report.json`` (machine-readable), ``report.md`` (for people),
``score_hist.png`` and ``contact_sheet.png`` (sample pairs: crop, noun, score).
"""
from __future__ import annotations

import io
import json
import logging
from collections import Counter
from typing import Any

import numpy as np
from fsspec.core import url_to_fs
from PIL import Image, ImageDraw, ImageFont

from pipelines.pair_format import PairMeta, iter_tar, shard_url
from pipelines.records import SkipSample
from pipelines.stats import RunResult, aggregate

log = logging.getLogger(__name__)

TILE = 128


def sample_pairs(out_url: str, units: list[int], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` pairs spread over the committed ``units``: ``{key, image (PIL), noun, score}``."""
    if not units or n <= 0:
        return []
    per_shard = max(1, -(-n // len(units)))
    out: list[dict[str, Any]] = []
    for index in units:
        taken = 0
        for sample in iter_tar(shard_url(out_url, index), Counter()):
            if "jpg" not in sample or "json" not in sample:
                continue
            try:
                meta = PairMeta.from_json(sample["json"])
            except SkipSample:
                continue
            image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
            out.append({"key": sample["__key__"], "image": image, "noun": meta.noun, "score": meta.score})
            taken += 1
            if taken >= per_shard:
                break
        if len(out) >= n:
            break
    return out[:n]


def contact_sheet(pairs: list[dict[str, Any]], columns: int = 8) -> Image.Image:
    """Grid of ``TILE``-px crops with their noun and score underneath."""
    rows = max(1, -(-len(pairs) // columns))
    label_h = 30
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i, pair in enumerate(pairs):
        x, y = (i % columns) * TILE, (i // columns) * (TILE + label_h)
        sheet.paste(pair["image"].resize((TILE, TILE)), (x, y))
        draw.text((x + 3, y + TILE + 1), pair["noun"][:20], fill="black", font=font)
        draw.text((x + 3, y + TILE + 15), f"{pair['score']:.3f}", fill="dimgray", font=font)
    return sheet


def histogram_png(hist: list[int], bins: list[float]) -> Image.Image:
    """Bar chart of the accepted pairs' CLIP scores (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(np.array(bins[:-1]) + 0.025, hist, width=0.045, color="tab:blue")
    ax.set_xlabel("CLIP cosine similarity of accepted pairs")
    ax.set_ylabel("pairs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image.open(io.BytesIO(buf.getvalue()))


def _markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [
        "# Mining report", "",
        f"- units: {t['units']} committed ({report['mined_this_run']} this run, {len(report['failed'])} failed)",
        f"- images: {t['images']}, captions: {t['captions']}, nouns: {t['nouns']}, proposals: {t['proposals']}",
        f"- pairs: {t['pairs']} ({t['unique_nouns']} unique nouns)",
        f"- this run: {report['seconds']:.1f} s, {report['images_per_s']:.2f} images/s, {report['pairs_per_s']:.2f} pairs/s"
        + (f" ({report['mining_images_per_s']:.2f} images/s, {report['mining_pairs_per_s']:.2f} pairs/s after "
           f"start-up and model loading)" if report.get("mining_images_per_s") else ""),
        "", "## Skipped inputs", "",
    ]
    lines += [f"- {k}: {v}" for k, v in t["skipped"].items()] or ["- none"]
    lines += ["", "## Rejected candidate pairs", ""]
    lines += [f"- {k}: {v}" for k, v in t["rejected"].items()] or ["- none"]
    lines += ["", "## Top nouns", "", "| noun | pairs |", "|---|---|"]
    lines += [f"| {n} | {c} |" for n, c in t["top_nouns"]]
    gt = report.get("ground_truth")
    if gt:
        lines += ["", "## Against ground truth (mask IoU >= 0.5 with an instance of the noun's category)", "",
                  f"- pair precision: {gt['precision']:.3f} ({gt['correct']} of {gt['pairs']} pairs)",
                  f"- recall: {gt['recall']:.3f} ({gt['found']} of {gt['opportunities']} (image, named category))"]
        lines += [f"- precision on {k}s: {v['precision']:.3f} ({v['pairs']} pairs)"
                  for k, v in gt.get("precision_by_kind", {}).items() if v["pairs"]]
        lines += [f"- wrong because {k}: {v}" for k, v in gt.get("wrong_reasons", {}).items()]
    if report.get("failed"):
        lines += ["", "## Failed units (rerun to retry)", ""] + [f"- {k}: {v}" for k, v in report["failed"].items()]
    lines += ["", "![scores](score_hist.png)", "", "![pairs](contact_sheet.png)", ""]
    return "\n".join(lines)


def ground_truth_quality(out_url: str, instances_url: str, captions_url: str | None) -> dict[str, Any] | None:
    """Pair precision/recall of the shards in ``out_url`` against COCO instances (local files only)."""
    from pipelines.world.evaluate import GroundTruth, mining_quality

    if any("://" in u for u in (out_url, instances_url, captions_url or "")):
        log.info("ground-truth check skipped: it reads local files only")
        return None
    return mining_quality(out_url, GroundTruth(instances_url, captions_url))


def write_report(out_url: str, run: RunResult, *, config: dict[str, Any], n_sheet: int = 48,
                 ground_truth: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write report.json/.md, score_hist.png and contact_sheet.png into ``out_url``; returns the report.

    ``run`` is what the run did (committed units, units mined now, timings, failures); ``ground_truth``
    (from :func:`ground_truth_quality`) adds pair precision/recall when known.
    """
    all_stats, mined, failed = run.all_committed, run.mined, run.failed
    seconds, mining_seconds = run.seconds, run.mining_seconds
    this_run = aggregate(mined)
    report = {
        "totals": aggregate(all_stats.values()),
        "this_run": {k: this_run[k] for k in ("units", "images", "pairs")},
        "mined_this_run": len(mined),
        "seconds": seconds,
        "images_per_s": this_run["images"] / seconds if seconds > 0 else 0.0,
        "pairs_per_s": this_run["pairs"] / seconds if seconds > 0 else 0.0,
        "mining_seconds": mining_seconds,  # without Ray start-up and model loading
        "mining_images_per_s": this_run["images"] / mining_seconds if mining_seconds > 0 else None,
        "mining_pairs_per_s": this_run["pairs"] / mining_seconds if mining_seconds > 0 else None,
        "failed": {str(k): v for k, v in failed.items()},
        "config": config,
        "ground_truth": ground_truth,
    }
    fs, root = url_to_fs(out_url)
    root = root.rstrip("/")
    with fs.open(f"{root}/report.json", "w") as f:
        json.dump(report, f, indent=1)
    with fs.open(f"{root}/report.md", "w") as f:
        f.write(_markdown(report))
    with fs.open(f"{root}/score_hist.png", "wb") as f:
        histogram_png(report["totals"]["score_hist"], report["totals"]["score_bins"]).save(f, format="PNG")
    pairs = sample_pairs(out_url, sorted(all_stats), n_sheet)
    if pairs:
        with fs.open(f"{root}/contact_sheet.png", "wb") as f:
            contact_sheet(pairs).save(f, format="PNG")
    return report

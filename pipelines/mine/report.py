"""The run report of a mining job: totals, throughput, top nouns, score histogram, contact sheet.

Written next to the shards: ``report.json`` (machine-readable), ``report.md`` (for people),
``score_hist.png`` and ``contact_sheet.png`` (sample pairs: crop, noun, score).
"""
from __future__ import annotations

import io
import json
import logging
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np
from fsspec.core import url_to_fs
from PIL import Image, ImageDraw, ImageFont

from pipelines.pairs.format import PairMeta, iter_tar, shard_url
from pipelines.records import SkipSample
from pipelines.storage.redact import redact
from pipelines.mine.stats import RunResult, aggregate
from pipelines.mine.throughput import accumulated_throughput

log = logging.getLogger(__name__)

TILE = 128
Judge = Callable[[dict[str, Any]], Optional[str]]


def sample_pairs(out_url: str, units: list[int], n: int, *,
                 storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``n`` pairs (fewer only when the shards hold fewer) spread over the committed ``units``:
    ``{key, image (PIL), noun, score, meta, mask}``, taken round robin: the first pair of every
    shard, then the second, ..., so a short shard leaves its share to the others.

    ``mask`` is the crop-aligned mask, bool ``[S, S]`` (None without a png member); ``meta`` the
    pair's :class:`~pipelines.pairs.format.PairMeta`.
    """
    if not units or n <= 0:
        return []
    per_shard: list[list[dict[str, Any]]] = []
    for index in units:
        taken: list[dict[str, Any]] = []
        for sample in iter_tar(shard_url(out_url, index), Counter(), storage_options):
            if "jpg" not in sample or "json" not in sample:
                continue
            try:
                meta = PairMeta.from_json(sample["json"])
            except SkipSample:
                continue
            image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
            mask = (np.asarray(Image.open(io.BytesIO(sample["png"])).convert("L")) > 127) if "png" in sample else None
            taken.append({"key": sample["__key__"], "image": image, "noun": meta.noun, "score": meta.score,
                          "meta": meta, "mask": mask})
            if len(taken) >= n:
                break
        per_shard.append(taken)
    out = [shard[i] for i in range(n) for shard in per_shard if i < len(shard)]
    return out[:n]


RIGHT, WRONG = (0, 150, 60), (210, 30, 30)
SHORT_REASONS = {"mask_iou_below_threshold": "mask IoU < 0.5", "noun_not_a_category": "not a category",
                 "category_absent_from_image": "not in image"}


GAP = 6  # px between tiles
FRAME = (90, 90, 90)  # the frame of a tile without a verdict
FILL_NOTE = "grey inside a tile = CLIP's mean colour, filled in outside the mask (the OVSeg crop)"
RANDOM_NOTE = "CLIP is random-initialised: scores and pairs are meaningless (code path only)"


def clip_is_random(config: dict[str, Any]) -> bool:
    """True when the run's ``clip`` section names no weights (no pretrained tag, checkpoint or prompt)."""
    clip = config.get("clip") or {}
    return bool(clip) and not (clip.get("pretrained") or clip.get("checkpoint") or clip.get("prompt"))


def contact_sheet(pairs: list[dict[str, Any]], columns: int = 8, *, notes: list[str] = ()) -> Image.Image:
    """Grid of framed ``TILE``-px crops, ``GAP`` px apart, with their noun and score underneath.

    A header says what the grey fill is, then each of ``notes`` (e.g. :data:`RANDOM_NOTE`, in red).
    When a pair carries ``wrong`` (``None`` = right against the ground truth, else the reason), its
    tile gets a green or red frame and the reason, and the header a legend.
    """
    judged = any("wrong" in p for p in pairs)
    rows = max(1, -(-len(pairs) // columns))
    label_h = 44 if judged else 30
    line_h = 18
    header = [(FILL_NOTE, "black")] + [(note, WRONG) for note in notes]
    top = GAP + line_h * (len(header) + judged) + GAP
    width = GAP + columns * (TILE + GAP)
    sheet = Image.new("RGB", (width, top + rows * (TILE + label_h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i, (text, color) in enumerate(header):
        draw.text((GAP, GAP + i * line_h), text, fill=color, font=font)
    if judged:
        y = GAP + len(header) * line_h
        n_right = sum(1 for p in pairs if "wrong" in p and p["wrong"] is None)
        draw.rectangle((GAP, y, GAP + 14, y + 14), outline=RIGHT, width=3)
        draw.text((GAP + 20, y + 1), f"right against ground truth ({n_right})", fill="black", font=font)
        draw.rectangle((GAP + 256, y, GAP + 270, y + 14), outline=WRONG, width=3)
        draw.text((GAP + 276, y + 1), f"wrong, reason under the tile ({len(pairs) - n_right})", fill="black", font=font)
    for i, pair in enumerate(pairs):
        x, y = GAP + (i % columns) * (TILE + GAP), top + (i // columns) * (TILE + label_h + GAP)
        sheet.paste(pair["image"].resize((TILE, TILE)), (x, y))
        draw.text((x + 3, y + TILE + 1), pair["noun"][:20], fill="black", font=font)
        draw.text((x + 3, y + TILE + 15), f"{pair['score']:.3f}", fill="dimgray", font=font)
        if "wrong" in pair:
            color = RIGHT if pair["wrong"] is None else WRONG
            draw.rectangle((x - 2, y - 2, x + TILE + 1, y + TILE + 1), outline=color, width=4)
            text = "right" if pair["wrong"] is None else SHORT_REASONS.get(pair["wrong"], pair["wrong"])[:18]
            draw.text((x + 3, y + TILE + 29), text, fill=color, font=font)
        else:
            draw.rectangle((x - 1, y - 1, x + TILE, y + TILE), outline=FRAME, width=1)
    return sheet


def score_axis(hist: list[int], bins: list[float], pad: float = 0.05) -> tuple[float, float]:
    """The x range of the histogram: the occupied bins plus ``pad`` on each side (whole range if empty)."""
    used = [i for i, count in enumerate(hist) if count]
    if not used:
        return bins[0], bins[-1]
    return max(bins[0], bins[used[0]] - pad), min(bins[-1], bins[used[-1] + 1] + pad)


def histogram_png(hist: list[int], bins: list[float]) -> Image.Image:
    """Bar chart of the accepted pairs' CLIP scores (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(np.array(bins[:-1]) + 0.025, hist, width=0.045, color="tab:blue")
    ax.set_xlim(*score_axis(hist, bins))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
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
        *([f"**{RANDOM_NOTE}.**", ""] if clip_is_random(report.get("config") or {}) else []),
        f"- units: {t['units']} committed ({report['mined_this_run']} this run, {len(report['failed'])} failed)",
        f"- images: {t['images']}, captions: {t['captions']}, nouns: {t['nouns']}, proposals: {t['proposals']}",
        f"- pairs: {t['pairs']} ({t['unique_nouns']} unique nouns)",
        *_download_lines(report.get("downloads")),
        _all_runs_line(report.get("all_runs")),
        (f"- this run: {report['seconds']:.1f} s, {report['images_per_s']:.2f} images/s, {report['pairs_per_s']:.2f} pairs/s"
         + (f" ({report['mining_images_per_s']:.2f} images/s, {report['mining_pairs_per_s']:.2f} pairs/s after "
            f"start-up and model loading)" if report.get("mining_images_per_s") else "")
         if report["mined_this_run"] else f"- this run: {report['seconds']:.1f} s, nothing left to mine (resumed)"),
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
                  (f"- recall: {gt['recall']:.3f} ({gt['found']} of {gt['opportunities']} (image, named category))"
                   if gt.get("opportunities") else
                   "- recall: n/a (recall counts the (image, named category) pairs of a COCO captions file; "
                   "this corpus is not corpus.format=coco)")]
        lines += [f"- precision on {k}s: {v['precision']:.3f} ({v['pairs']} pairs)"
                  for k, v in gt.get("precision_by_kind", {}).items() if v["pairs"]]
        chance = gt.get("chance")
        if chance:  # a random choice among the same candidate masks, for the same pairs
            lines += [f"- chance (a random candidate mask for the same pairs): {chance['precision']:.3f}"]
            lines += [f"- chance on {k}s: {v['precision']:.3f}" for k, v in chance["precision_by_kind"].items()
                      if v["pairs"]]
        lines += [f"- wrong because {k}: {v}" for k, v in gt.get("wrong_reasons", {}).items()]
    if report.get("failed"):
        lines += ["", "## Failed units (rerun to retry)", ""] + [f"- {k}: {v}" for k, v in report["failed"].items()]
    lines += ["", "![scores](score_hist.png)", "", "![pairs](contact_sheet.png)", ""]
    return "\n".join(lines)


def _download_lines(downloads: dict[str, Any] | None) -> list[str]:
    if not downloads or downloads["success_rate"] is None:
        return []
    failed = ", ".join(f"{k} {v}" for k, v in downloads["failed"].items()) or "none"
    return [f"- downloads: {downloads['success_rate']:.1%} succeeded ({downloads['downloaded']} of "
            f"{downloads['attempted']} URLs; failed: {failed})"]


def _all_runs_line(all_runs: dict[str, Any] | None) -> str:
    if not all_runs or all_runs.get("images_per_s") is None:
        return "- mining rate: unknown (units without timing)"
    return (f"- mining rate over all runs: {all_runs['images_per_s']:.2f} images/s, {all_runs['pairs_per_s']:.2f} "
            f"pairs/s ({all_runs['units']} units, {all_runs['busy_seconds']:.1f} s of mining)")


def ground_truth_quality(out_url: str, instances_url: str, captions_url: str | None, *,
                         storage_options: dict[str, Any] | None = None,
                         corpus_storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Pair precision/recall of the shards in ``out_url`` against COCO instances."""
    return ground_truth_check(out_url, instances_url, captions_url, storage_options=storage_options,
                              corpus_storage_options=corpus_storage_options)[0]


def ground_truth_check(out_url: str, instances_url: str, captions_url: str | None, *,
                       storage_options: dict[str, Any] | None = None,
                       corpus_storage_options: dict[str, Any] | None = None) -> tuple[dict[str, Any], Judge]:
    """``(precision/recall of the shards, judge of one sampled pair)`` against COCO instances.

    The annotations are corpus-side (``corpus_storage_options``), the shards output-side
    (``storage_options``). A noun counts for a category through its lemma or COCO's synonym map
    (:func:`pipelines.pairs.quality.coco_synonyms`). ``judge(pair)`` takes a :func:`sample_pairs`
    item and returns ``None`` when it is right, else the reason it is wrong.
    """
    from pipelines.pairs.quality import GroundTruth, MinedPair, coco_synonyms, mining_quality, pair_mask

    # COCO's synonym map ("man" -> person); entries naming categories the file lacks are ignored
    gt = GroundTruth(instances_url, captions_url, storage_options=corpus_storage_options, synonyms=coco_synonyms())

    def judge(pair: dict[str, Any]) -> str | None:
        mined = MinedPair(key=pair["key"], meta=pair["meta"], mask=pair["mask"])
        return gt.judge(pair["noun"], int(pair["meta"].image_id), pair_mask(mined))

    quality = mining_quality(out_url, gt, storage_options=storage_options)
    quality["chance"] = chance_or_none(out_url, gt, storage_options=storage_options)
    return quality, judge


def chance_or_none(out_url: str, gt: Any, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Precision of a random candidate mask for the same pairs; None without candidates files."""
    from pipelines.pairs.quality import chance_precision

    try:
        return chance_precision(out_url, gt, storage_options=storage_options)
    except FileNotFoundError:
        return None


def write_report(out_url: str, run: RunResult, *, config: dict[str, Any], n_sheet: int = 48,
                 ground_truth: dict[str, Any] | None = None, storage_options: dict[str, Any] | None = None,
                 judge: Judge | None = None) -> dict[str, Any]:
    """Write report.json/.md, score_hist.png and contact_sheet.png into ``out_url``; returns the report.

    ``run`` is what the run did (committed units, units mined now, timings, failures);
    ``ground_truth`` (from :func:`ground_truth_check`) adds pair precision/recall when known, and
    ``judge`` marks the contact sheet's tiles right or wrong. ``all_runs`` holds the throughput of
    every run that mined the committed units (from their stats), ``this_run`` / ``*_per_s`` this run's.
    ``storage_options`` are the output's fsspec options.
    """
    all_stats, mined, failed = run.all_committed, run.mined, run.failed
    seconds, mining_seconds = run.seconds, run.mining_seconds
    this_run = aggregate(mined)
    report = {
        "totals": aggregate(all_stats.values()),
        "all_runs": accumulated_throughput(all_stats.values()),
        "this_run": {k: this_run[k] for k in ("units", "images", "pairs")},
        "mined_this_run": len(mined),
        "seconds": seconds,
        "images_per_s": this_run["images"] / seconds if seconds > 0 else 0.0,
        "pairs_per_s": this_run["pairs"] / seconds if seconds > 0 else 0.0,
        "mining_seconds": mining_seconds,  # without Ray start-up and model loading
        "mining_images_per_s": this_run["images"] / mining_seconds if mining_seconds > 0 else None,
        "mining_pairs_per_s": this_run["pairs"] / mining_seconds if mining_seconds > 0 else None,
        "failed": {str(k): v for k, v in failed.items()},
        "config": redact(config),  # storage_options carry credentials
        "ground_truth": ground_truth,
    }
    if config.get("corpus", {}).get("format") == "urls":  # URL lists: img2dataset's success rate
        from pipelines.corpus.fetch import download_summary

        report["downloads"] = download_summary(report["totals"]["images"], report["totals"]["skipped"])
    fs, root = url_to_fs(out_url, **(storage_options or {}))
    root = root.rstrip("/")
    with fs.open(f"{root}/report.json", "w") as f:
        json.dump(report, f, indent=1)
    with fs.open(f"{root}/report.md", "w") as f:
        f.write(_markdown(report))
    with fs.open(f"{root}/score_hist.png", "wb") as f:
        histogram_png(report["totals"]["score_hist"], report["totals"]["score_bins"]).save(f, format="PNG")
    pairs = sample_pairs(out_url, sorted(all_stats), n_sheet, storage_options=storage_options)
    for pair in pairs if judge is not None else []:
        pair["wrong"] = judge(pair) if pair["mask"] is not None else "no_mask"
    if pairs:
        with fs.open(f"{root}/contact_sheet.png", "wb") as f:
            contact_sheet(pairs, notes=[RANDOM_NOTE] if clip_is_random(config) else []).save(f, format="PNG")
    return report

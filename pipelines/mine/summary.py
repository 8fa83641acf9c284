"""The closing lines of ``jobs/mine.py``: counts, rates and where the output went (the job prints them)."""
from __future__ import annotations

from typing import Any


def closing_lines(result: Any, report: dict[str, Any] | None, out_url: str) -> list[str]:
    """Lines summing up a run (``result``: :class:`pipelines.mine.stats.RunResult`).

    Rates come from every run that mined the committed units (``report["all_runs"]``), so a resumed
    run with nothing left to do still shows how fast the shards were mined.
    """
    lines = [f"done in {result.seconds:.1f} s: {len(result.mined)} units mined this run, "
             f"{len(result.all_committed)} committed in total, {len(result.failed)} failed"]
    if report:
        t, all_runs = report["totals"], report["all_runs"]
        lines.append(f"  images {t['images']}  captions {t['captions']}  nouns {t['nouns']}  "
                     f"proposals {t['proposals']}  pairs {t['pairs']} ({t['unique_nouns']} unique nouns)")
        if all_runs["images_per_s"] is not None:
            lines.append(f"  mining: {all_runs['images_per_s']:.2f} images/s, {all_runs['pairs_per_s']:.2f} pairs/s "
                         f"({all_runs['units']} units, {all_runs['busy_seconds']:.1f} s of mining over all runs)")
        if result.mined:
            lines.append(f"  this run: {report['images_per_s']:.2f} images/s, {report['pairs_per_s']:.2f} pairs/s "
                         "overall" + (f"; {report['mining_images_per_s']:.2f} images/s after start-up"
                                      if report.get("mining_images_per_s") else ""))
        lines.append(f"  skipped: {t['skipped'] or 'none'}")
        if (downloads := report.get("downloads")) and downloads["success_rate"] is not None:
            lines.append(f"  downloads: {downloads['success_rate']:.1%} of {downloads['attempted']} URLs succeeded")
        if report.get("ground_truth"):
            g = report["ground_truth"]
            chance = f" (a random candidate mask: {g['chance']['precision']:.3f})" if g.get("chance") else ""
            recall = f"recall {g['recall']:.3f}" if g.get("opportunities") else "recall n/a (no captions file)"
            lines.append(f"  against ground truth: pair precision {g['precision']:.3f}{chance}, {recall}")
        lines.append(f"  report: {out_url}/report.md  contact sheet: {out_url}/contact_sheet.png")
    lines.append(f"  output: {out_url}")
    return lines


def _weights(pretrained: str | None, checkpoint: str | None) -> str:
    return checkpoint or (f"pretrained {pretrained}" if pretrained else "random-initialised: scores are meaningless")


def clip_description(clip: Any) -> str:
    """The start banner's words for the CLIP that scores the crops (a mining ``clip`` section).

    With ``clip.prompt`` the prompt file's own CLIP is named (it replaces model/pretrained/checkpoint).
    """
    if clip.prompt:
        try:
            from ovseg.mpt_export import load_prompt

            export = load_prompt(clip.prompt)
        except Exception:  # noqa: BLE001 - a remote or unreadable file: the actors will say why
            return f"CLIP + mask prompt {clip.prompt}"
        checkpoint = export.clip_checkpoint
        if checkpoint and "://" not in clip.prompt and not checkpoint.startswith("/"):
            from pathlib import Path

            checkpoint = str(Path(clip.prompt).parent / checkpoint)
        return f"CLIP {export.clip_model} ({_weights(export.pretrained, checkpoint)}) + mask prompt {clip.prompt}"
    return f"CLIP {clip.model} ({_weights(clip.pretrained, clip.checkpoint)})"

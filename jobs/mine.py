"""Mine (masked crop, noun) pairs from an image–caption corpus into WebDataset shards.

  python jobs/mine.py [--config conf/mine.yaml] [key.sub=value ...]
  ray job submit --working-dir . -- python jobs/mine.py --config conf/smoke/mine.yaml output.url=/abs/out

Without a Ray address (``ray.address`` or ``RAY_ADDRESS``) a local Ray is started. A rerun skips the
units already committed in ``output.url`` and redoes the rest.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from pipelines.config import ConfigError, load_config  # noqa: E402
from pipelines.config_help import help_text  # noqa: E402
from pipelines.mine_config import MineConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=help_text(MineConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/mine.yaml", help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. output.url=out/x ray.num_actors=4")
    parser.add_argument("--log-level", default="WARNING", help="driver log level (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(MineConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from pipelines.config import as_dict
    from pipelines.ray_runner import plan, run_mining
    from pipelines.report import ground_truth_quality, write_report

    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ and "://" not in cfg.output.url and not os.path.isabs(cfg.output.url):
        print(f"warning: output.url={cfg.output.url} is relative inside a Ray job: it lands in the job's copy of "
              "--working-dir, which Ray deletes; give an absolute path or an s3:// / gs:// URL", file=sys.stderr)
    todo, committed = plan(cfg)
    print(f"mining {cfg.corpus.url} -> {cfg.output.url}: {len(todo)} units to mine, "
          f"{len(committed)} already committed; CLIP {cfg.clip.model}/{cfg.clip.pretrained or cfg.clip.checkpoint}, "
          f"proposals {cfg.proposals.backend}")
    bar = tqdm(total=len(todo), unit="unit", desc="mining", dynamic_ncols=True)
    totals = {"images": 0, "pairs": 0}

    def on_unit(stats: dict) -> None:
        totals["images"] += stats["images"]
        totals["pairs"] += stats["pairs"]
        bar.set_postfix(images=totals["images"], pairs=totals["pairs"])
        bar.update(1)

    from pipelines.ray_runner import ActorStartError

    try:
        result = run_mining(cfg, on_unit)
    except ActorStartError as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 3
    bar.close()
    report = None
    if cfg.output.report:
        gt = None
        if cfg.proposals.instances_url and result.all_committed:
            captions = cfg.corpus.url if cfg.corpus.format == "coco" else None
            gt = ground_truth_quality(cfg.output.url, cfg.proposals.instances_url, captions)
        report = write_report(cfg.output.url, result, config=as_dict(cfg),
                              n_sheet=cfg.output.contact_sheet_pairs, ground_truth=gt)
    t = report["totals"] if report else {}
    print(f"done in {result.seconds:.1f} s: {len(result.mined)} units mined this run, "
          f"{len(result.all_committed)} committed in total, {len(result.failed)} failed")
    if report:
        print(f"  images {t['images']}  captions {t['captions']}  nouns {t['nouns']}  proposals {t['proposals']}  "
              f"pairs {t['pairs']} ({t['unique_nouns']} unique nouns)")
        print(f"  this run: {report['images_per_s']:.2f} images/s, {report['pairs_per_s']:.2f} pairs/s overall"
              + (f"; {report['mining_images_per_s']:.2f} images/s, {report['mining_pairs_per_s']:.2f} pairs/s "
                 "after start-up" if report.get("mining_images_per_s") else ""))
        print(f"  skipped: {t['skipped'] or 'none'}")
        if report.get("ground_truth"):
            g = report["ground_truth"]
            print(f"  against ground truth: pair precision {g['precision']:.3f}, recall {g['recall']:.3f}")
        print(f"  report: {cfg.output.url}/report.md  contact sheet: {cfg.output.url}/contact_sheet.png")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())

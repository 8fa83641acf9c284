"""Mine (masked crop, noun) pairs from an image–caption corpus into WebDataset shards.

  python jobs/mine.py [--config conf/mine.yaml] [key.sub=value ...]
  ray job submit -- python jobs/mine.py --config conf/smoke/mine.yaml output.url=/shared/out

Relative local paths (corpus, checkpoint, annotations, output) are relative to the directory the
job is started in; they are made absolute here, on the driver, before any actor sees the config.

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

from pipelines.config.load import ConfigError, load_config  # noqa: E402
from pipelines.config.help import help_text  # noqa: E402
from pipelines.mine.config import MineConfig  # noqa: E402



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
    from pipelines.config.load import as_dict
    from pipelines.mine.summary import closing_lines
    from pipelines.mine.driver import plan, run_mining
    from pipelines.mine.report import ground_truth_check, write_report
    from ovseg.clip import WEIGHT_FILE_SUFFIXES
    from pipelines.mine.paths import StorageError, resolve_local_paths

    cfg = resolve_local_paths(cfg)  # once, here: actors run in other directories
    if (cfg.clip.pretrained and not cfg.clip.checkpoint and not cfg.clip.prompt  # a prompt brings its own CLIP
            and not cfg.clip.pretrained.endswith(WEIGHT_FILE_SUFFIXES)):
        from ovseg.clip_weights import unavailable_reason

        if reason := unavailable_reason(cfg.clip.model, cfg.clip.pretrained):  # seconds, not hub retries
            print(f"error: {reason}; download them elsewhere and set clip.checkpoint=/path/to/weights", file=sys.stderr)
            return 3
    if ("working_dir" in os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "") and "://" not in cfg.output.url
            and os.path.realpath(cfg.output.url).startswith(os.path.realpath(os.getcwd()))):
        print(f"warning: output.url={cfg.output.url} lies in the job's copy of --working-dir, which Ray deletes; "
              "give an absolute path or an s3:// / gs:// URL", file=sys.stderr)
    planned = todo, committed = plan(cfg)
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

    from pipelines.mine.driver import ActorStartError

    try:
        result = run_mining(cfg, on_unit, planned=planned)
    except (ActorStartError, StorageError) as err:
        bar.close()
        logging.getLogger("mine").debug("start-up failed", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 3
    bar.close()
    report = None
    if cfg.output.report and result.all_committed:
        gt = judge = None
        if cfg.proposals.instances_url:
            gt, judge = ground_truth_check(
                cfg.output.url, cfg.proposals.instances_url, cfg.corpus.url if cfg.corpus.format == "coco" else None,
                storage_options=cfg.output.storage_options, corpus_storage_options=cfg.corpus.storage_options)
        report = write_report(cfg.output.url, result, config=as_dict(cfg), n_sheet=cfg.output.contact_sheet_pairs,
                              ground_truth=gt, storage_options=cfg.output.storage_options, judge=judge)
    print("\n".join(closing_lines(result, report, cfg.output.url)))
    for message in result.mismatched.values():
        print(f"error: {message}", file=sys.stderr)
    if result.mined and not result.all_committed:
        print(f"error: {len(result.mined)} units were mined but none is committed at {cfg.output.url}", file=sys.stderr)
        return 4
    if result.mismatched:
        return 4
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
